"""The torch-free runtime on arm64, checked under emulation: a Debian bookworm arm64 root (Debian's ``debootstrap``
and ``qemu-user-static``, kept in a cache folder), ``edgecls[runtime,openvino]`` installed there by pip from PyPI's
aarch64 wheels, then ``edgecls doctor``, ``edgecls predict`` and ``edgecls parity`` run inside it on a bundle made on
this (x86) machine, and the ARM logits compared with this machine's.

    sudo python benchmarks/arm64_check.py BUNDLE DATA [--images DIR] [--parity-images N] [--qemu-cpu CPU] [--out F]

Needs root (debootstrap, chroot, mounts), ``apt-get install debootstrap qemu-user-static binfmt-support`` and a
binfmt_misc registration of qemu-aarch64 with the F flag (``update-binfmts --enable qemu-aarch64``; the script does
both steps when they are missing). The first run builds the root (about 10 minutes on 2 cores); later runs reuse it
and pip's cache inside it. Every emulated command runs under ``nice -n 19``.

Timing under emulation says nothing about a real ARM board; the figures that carry over are which wheels exist, the
install size, and the numbers ONNX Runtime's and OpenVINO's ARM kernels compute (qemu runs the aarch64 instructions
the wheels picked for the emulated CPU: ``--qemu-cpu cortex-a76`` by default, the Raspberry Pi 5's core, NEON and dot
product; ``max`` adds i8mm, SVE2 and SME). FP32 runs in software under qemu, so parity on a bundle's 127 images takes
long: ``--parity-images`` checks fewer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
ROOT_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "libgomp1")
STAMP = ".edgecls-arm64-root"
VENV = "/opt/edgecls"
WORK = "/work"
HOST_CA = "/etc/edgecls-host-ca.crt"
CPUINFO = "/run/edgecls-arm64-cpuinfo"
# qemu-user's CPU models: MIDR fields (implementer, variant, part, revision) as the model reports them. ``max`` (qemu's
# default: every feature qemu emulates, SVE, SVE2, i8mm, SME) reports implementer 0, "reserved for software use".
QEMU_CPUS = {"max": (0x00, 0x0, 0x051, 0), "cortex-a76": (0x41, 0x4, 0xD0B, 1),
             "neoverse-n1": (0x41, 0x4, 0xD0C, 1),
             "cortex-a72": (0x41, 0x0, 0xD08, 3), "cortex-a57": (0x41, 0x1, 0xD07, 0),
             "cortex-a53": (0x41, 0x0, 0xD03, 4)}
# arm64 HWCAP / HWCAP2 bits as the kernel names them in /proc/cpuinfo's Features (arch/arm64/kernel/cpuinfo.c)
HWCAP_NAMES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop "
               "sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2_NAMES = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 "
                "i8mm bf16 dgh rng bti mte ecv afp rpres mte3 sme smei16i64 smef64f64 smei8i32 smef16f32 smeb16f32 "
                "smef32f32 smefa64 wfxt").split()
BINFMT = Path("/proc/sys/fs/binfmt_misc")
# qemu-aarch64's ELF magic and mask, as Debian's binfmt-support registers it
AARCH64_MAGIC = r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
AARCH64_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
# What pip may install for each extra on aarch64 Linux (checked with pip's --platform, without installing)
WHEEL_CHECKS = {
    "runtime": ["onnxruntime>=1.18"],
    "openvino": ["openvino>=2024.4"],
    "core": ["numpy>=1.24,<2.4", "opencv-python-headless>=4.8", "click>=8.1", "pyyaml>=6.0"],
    "litert runtime": ["ai-edge-litert"],
    "onnxruntime-gpu (server aarch64 CUDA, not JetPack)": ["onnxruntime-gpu"],
    "tensorrt": ["tensorrt>=10.0"],
    "train: torch": ["torch==2.14.1", "torchvision==0.29.1"],
    "coreml": ["coremltools>=8.0"],
}
GLIBC = (17, 24, 26, 27, 28, 31, 34, 35, 36)  # manylinux tags bookworm's glibc 2.36 accepts


def _host_cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def log(msg: str) -> None:
    print(f"arm64-check: {msg}", flush=True)


def default_root() -> Path:
    base = os.environ.get("EDGECLS_ARM64_ROOT")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgecls" / "arm64" / SUITE


def run(cmd: Sequence[str], *, check: bool = True, capture: bool = False, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, text=True, capture_output=capture, **kw)


# ---------------------------------------------------------------------------------------------------------------------
# host preparation


def preflight() -> list[str]:
    """What is missing on this host for the check, as one line each (empty: ready)."""
    problems = []
    if platform.machine().lower() not in ("x86_64", "amd64"):
        problems.append(f"this check emulates arm64 on x86_64; this machine is {platform.machine()}")
    if os.geteuid() != 0:
        problems.append("needs root (debootstrap, chroot and mounts)")
    for tool, pkg in (("debootstrap", "debootstrap"), ("qemu-aarch64-static", "qemu-user-static")):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is missing: apt-get install {pkg} binfmt-support")
    return problems


def ensure_binfmt() -> str:
    """Make the kernel run aarch64 ELF files through qemu (binfmt_misc, F flag: the interpreter is opened once at
    registration, so it works inside the chroot); returns how it is registered."""
    if not (BINFMT / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)])
    entry = BINFMT / "qemu-aarch64"
    if not entry.exists() and shutil.which("update-binfmts"):
        run(["update-binfmts", "--enable", "qemu-aarch64"], check=False)
    if not entry.exists():
        qemu = shutil.which("qemu-aarch64-static")
        line = f":qemu-aarch64:M::{AARCH64_MAGIC}:{AARCH64_MASK}:{qemu}:F"
        (BINFMT / "register").write_text(line)
    text = entry.read_text()
    if "enabled" not in text.splitlines()[0]:
        entry.write_text("1")
        text = entry.read_text()
    flags = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("flags:")), "")
    if "F" not in flags:
        raise SystemExit("qemu-aarch64 is registered without the F flag, so it cannot run inside a chroot; "
                         "re-register it (update-binfmts --disable, then --enable qemu-aarch64)")
    interpreter = next((ln.split(" ", 1)[1] for ln in text.splitlines() if ln.startswith("interpreter")), "?")
    return f"{interpreter} (flags {flags})"


def ensure_root(root: Path) -> tuple[float, bool]:
    """The arm64 root at ``root`` (debootstrap into ``root.partial``, renamed when complete); (seconds, built now)."""
    if (root / STAMP).is_file():
        return 0.0, False
    if root.exists():
        raise SystemExit(f"{root} exists but is not a root this script finished building; remove it or pass --root")
    partial = root.with_name(root.name + ".partial")
    if partial.exists():
        if not (partial / "debootstrap").exists() and not (partial / "usr").exists():
            raise SystemExit(f"{partial} is not a debootstrap folder; remove it or pass --root")
        log(f"removing the unfinished root {partial}")
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    log(f"debootstrap {SUITE} arm64 into {partial} (about 10 minutes)")
    start = time.perf_counter()
    run(["nice", "-n", "19", "debootstrap", "--arch=arm64", "--variant=minbase",
         f"--include={','.join(ROOT_PACKAGES)}", SUITE, str(partial), MIRROR])
    (partial / STAMP).write_text(f"{SUITE} arm64 {MIRROR} {','.join(ROOT_PACKAGES)}\n")
    partial.rename(root)
    return time.perf_counter() - start, True


@contextmanager
def mounted(root: Path, qemu_cpu: str = "max") -> Iterator[dict[str, Any]]:
    """/proc, /sys and /dev inside the root while the commands run, the host's DNS settings and CA bundle for pip,
    and an arm64 /proc/cpuinfo (see :func:`arm_cpuinfo`); yields what the emulated CPU is."""
    with ExitStack() as stack:
        for kind, source, target in (("proc", "proc", "proc"), ("bind", "/sys", "sys"), ("bind", "/dev", "dev")):
            where = root / target
            where.mkdir(exist_ok=True)
            if os.path.ismount(where):
                continue
            args = ["mount", "-t", "proc", source, str(where)] if kind == "proc" else \
                ["mount", "--bind", source, str(where)]
            run(args)
            stack.callback(lambda w=where: run(["umount", "-l", str(w)], check=False))
        # pip inside trusts what pip here trusts: a network whose TLS proxy's CA is only in the host's bundle
        # failed with CERTIFICATE_VERIFY_FAILED against Debian's stock bundle
        host_ca = Path("/etc/ssl/certs/ca-certificates.crt")
        if host_ca.is_file():
            shutil.copy(host_ca, root / HOST_CA.lstrip("/"))
        resolv = Path("/etc/resolv.conf")
        if resolv.is_file():
            (root / "etc" / "resolv.conf").unlink(missing_ok=True)
            shutil.copy(resolv, root / "etc" / "resolv.conf")
        cpu = arm_cpuinfo(root, qemu_cpu)
        stack.callback(lambda: run(["umount", "-l", str(root / "proc" / "cpuinfo")], check=False))
        yield cpu


def arm_cpuinfo(root: Path, qemu_cpu: str) -> dict[str, Any]:
    """Bind an arm64-format /proc/cpuinfo over the root's.

    qemu-user 7.2 (bookworm's) passes the x86 host's /proc/cpuinfo through, and ONNX Runtime's aarch64 wheel
    (1.32.0: pytorch/cpuinfo, which reads the processors' MIDR from it) then dies with SIGSEGV while its module loads,
    before any edgecls code runs; a real arm64 kernel never shows that file. The replacement has what an arm64 kernel
    writes for the emulated CPU: one block per host CPU with the ``Features`` the emulated CPU's HWCAP bits grant
    (read inside, from getauxval) and its model's MIDR fields; the host's ``vendor_id`` / ``model name`` lines stay,
    so that edgecls still sees that it runs under emulation (and assumes no Arm core from the MIDR)."""
    implementer, variant, part, revision = QEMU_CPUS[qemu_cpu]
    proc, _ = in_root(root, "python3 -c 'import ctypes; g = ctypes.CDLL(None).getauxval; g.restype = ctypes.c_ulong; "
                            "g.argtypes = [ctypes.c_ulong]; print(g(16), g(26))'", env={"QEMU_CPU": qemu_cpu})
    hwcap, hwcap2 = (int(v) for v in proc.stdout.split())
    features = [n for i, n in enumerate(HWCAP_NAMES) if hwcap >> i & 1]
    features += [n for i, n in enumerate(HWCAP2_NAMES) if hwcap2 >> i & 1]
    host = Path("/proc/cpuinfo").read_text()
    vendor = next((ln for ln in host.splitlines() if ln.startswith("vendor_id")), "vendor_id\t: unknown")
    model = next((ln for ln in host.splitlines() if ln.startswith("model name")), "model name\t: x86")
    blocks = [f"processor\t: {n}\nBogoMIPS\t: 100.00\nFeatures\t: {' '.join(features)}\n"
              f"CPU implementer\t: 0x{implementer:02x}\nCPU architecture: 8\nCPU variant\t: 0x{variant:x}\n"
              f"CPU part\t: 0x{part:03x}\nCPU revision\t: {revision}\n{vendor}\n{model}\n"
              for n in range(os.cpu_count() or 1)]
    fake = root / CPUINFO.lstrip("/")
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_text("\n".join(blocks))
    run(["mount", "--bind", str(fake), str(root / "proc" / "cpuinfo")])
    return {"qemu_cpu": qemu_cpu, "midr": f"implementer 0x{implementer:02x} variant 0x{variant:x} part 0x{part:03x} "
                                          f"revision {revision}", "features": features}


QEMU_CPU = ["max"]  # the qemu CPU model the commands run on (--qemu-cpu)


def in_root(root: Path, cmd: str, *, env: dict[str, str] | None = None, check: bool = True,
            timeout: float | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``cmd`` (a shell line) inside the root under nice 19; (result, seconds). Past ``timeout`` the whole
    process group is killed and the result's returncode is 124."""
    base = {"PATH": f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
            "QEMU_CPU": QEMU_CPU[0],
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "EDGECLS_CACHE_DIR": "/root/.cache/edgecls"}
    if (root / HOST_CA.lstrip("/")).is_file():
        base["PIP_CERT"] = HOST_CA
    # QEMU_CPU: each emulated program reads it, the chroot's and every one the shell starts
    argv = ["env", f"QEMU_CPU={({**base, **(env or {})})['QEMU_CPU']}", "nice", "-n", "19", "chroot", str(root),
            "/usr/bin/env", "-i",
            *(f"{k}={v}" for k, v in {**base, **(env or {})}.items()), "/bin/sh", "-c", cmd]
    start = time.perf_counter()
    child = subprocess.Popen(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = child.communicate(timeout=timeout)
        code = child.returncode
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # its own session: the emulated processes under it, nothing else
        out, err = child.communicate()
        code = 124
        err = (err or "") + f"\narm64-check: killed after {timeout:.0f} s"
    proc = subprocess.CompletedProcess(argv, code, out, err)
    took = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise SystemExit(f"inside the arm64 root, `{cmd}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc, took


# ---------------------------------------------------------------------------------------------------------------------
# wheels


def wheel_availability(python: str = "3.11") -> dict[str, Any]:
    """For each extra, the aarch64 Linux wheels pip would pick for CPython ``python`` (or why there are none),
    resolved on this machine with pip's --platform (nothing is installed)."""
    platforms = [a for v in GLIBC for a in ("--platform", f"manylinux_2_{v}_aarch64")]
    platforms += ["--platform", "manylinux2014_aarch64", "--platform", "linux_aarch64"]
    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for extra, reqs in WHEEL_CHECKS.items():
            report = Path(tmp) / "report.json"
            proc = run([sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
                        "--no-deps", "--target", str(Path(tmp) / "t"), *platforms, "--python-version", python,
                        "--only-binary=:all:", "--report", str(report), *reqs], check=False, capture=True,
                       env={**os.environ, "PIP_CONSTRAINT": ""})
            if proc.returncode == 0 and report.is_file():
                picked = json.loads(report.read_text())["install"]
                found[extra] = {"ok": True, "wheels": [p["download_info"]["url"].rsplit("/", 1)[1] for p in picked]}
            else:
                err = [ln for ln in (proc.stderr or "").splitlines() if ln.startswith("ERROR")]
                found[extra] = {"ok": False, "error": " ".join(err)[:300] or f"pip exited {proc.returncode}"}
    return found


def build_wheel(out: Path) -> Path:
    """edgecls's own wheel (pure Python), built from this checkout."""
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out),
         str(REPO)], capture=True)
    wheels = sorted(out.glob("edgecls-*.whl"))
    if not wheels:
        raise SystemExit(f"pip wheel wrote no edgecls wheel into {out}")
    return wheels[-1]


def du(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def install(root: Path, wheel: Path, extras: str, fresh: bool) -> dict[str, Any]:
    """pip install edgecls[extras] from the wheel (dependencies from PyPI) into a venv in the root."""
    shutil.copy(wheel, root / "tmp" / wheel.name)
    venv = root / VENV.lstrip("/")
    if fresh and venv.exists():
        shutil.rmtree(venv)
    if not venv.exists():
        in_root(root, f"python3 -m venv {VENV}")
    # --no-compile: byte-compiling every installed file under emulation costs minutes; Python compiles what it imports
    _, took = in_root(root, f"pip install --quiet --no-compile --report /tmp/pip-report.json "
                            f"'edgecls[{extras}] @ file:///tmp/{wheel.name}'", timeout=3600)
    report = json.loads((root / "tmp" / "pip-report.json").read_text())
    wheels = [p["download_info"]["url"].rsplit("/", 1)[1] for p in report["install"]]
    site = next((venv / "lib").glob("python3*/site-packages"))
    sizes: dict[str, int] = {}
    for entry in site.iterdir():
        if entry.name.endswith((".dist-info", "__pycache__")) or entry.name.startswith("_distutils"):
            continue
        sizes[entry.name] = du(entry) if entry.is_dir() else entry.stat().st_size
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:8]
    freeze, _ = in_root(root, "pip list --format json")
    return {"seconds": round(took, 1), "wheels": wheels, "venv_mb": round(du(venv) / 2**20, 1),
            "largest_mb": {k: round(v / 2**20, 1) for k, v in top},
            "packages": {p["name"]: p["version"] for p in json.loads(freeze.stdout)}}


# ---------------------------------------------------------------------------------------------------------------------
# the comparison


def compare(arm: Sequence[Path], x86: Path, bundle: Path) -> dict[str, Any]:
    """Per artifact: ARM logits (one .npz per parity run inside) against this machine's on the same parity images
    (max/mean |dp|, decision agreement at the artifact's thresholds, mAP on each machine)."""
    from edgecls.bundle import read_manifest, read_reference
    from edgecls.metrics import mean_average_precision, sigmoid

    ref = read_reference(bundle)
    manifest = read_manifest(bundle)
    rows: dict[str, Any] = {}
    with np.load(x86) as b:
        x86_names, x86_logits = list(b["names"]), {k: b[k] for k in b.files if k.startswith("logits/")}
    for path in arm:
        if not path.is_file():
            continue
        with np.load(path) as a:
            if list(a["names"]) != x86_names:
                raise SystemExit("the ARM and x86 parity runs saw different images")
            for key in a.files:
                if not key.startswith("logits/") or key not in x86_logits:
                    continue
                name = key.split("/", 1)[1]
                pa, pb = sigmoid(a[key]), sigmoid(x86_logits[key])
                art = manifest.artifact(name)
                thr = np.asarray(art.thresholds if art.thresholds else manifest.thresholds, dtype=np.float32)
                known = ref["known"]
                agree = float(((pa >= thr) == (pb >= thr))[known].mean())
                map_arm = mean_average_precision(pa, ref["targets"], known)
                map_x86 = mean_average_precision(pb, ref["targets"], known)
                map_ref = mean_average_precision(sigmoid(ref["logits"]), ref["targets"], known)
                rows[name] = {"precision": art.precision, "images": len(x86_names),
                              "max_dp": float(np.abs(pa - pb).max()), "mean_dp": float(np.abs(pa - pb).mean()),
                              "decision_agreement": agree, "map_arm": map_arm, "map_x86": map_x86,
                              "map_pytorch": map_ref, "dmap_arm_vs_x86": map_x86 - map_arm,
                              "dmap_arm_vs_pytorch": map_ref - map_arm}
    return rows


def table(rows: dict[str, Any]) -> str:
    lines = ["artifact       prec   max|dp| ARM-x86  mean|dp|   agree   mAP arm  mAP x86  dmAP(x86-arm)  "
             "dmAP(pytorch-arm)"]
    for name, r in rows.items():
        lines.append(f"{name:<14} {r['precision']:<6} {r['max_dp']:>15.2e}  {r['mean_dp']:>8.2e}  "
                     f"{r['decision_agreement']:>6.4f}  {r['map_arm']:>7.4f}  {r['map_x86']:>7.4f}  "
                     f"{r['dmap_arm_vs_x86']:>+13.4f}  {r['dmap_arm_vs_pytorch']:>+17.4f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------


def subset_bundle(bundle: Path, out: Path, count: int) -> tuple[Path, list[str]]:
    """A copy of ``bundle`` at ``out`` whose parity reference keeps ``count`` of its images, evenly spaced (emulated
    float arithmetic is slow: qemu runs NEON FP32 in software); the model files are unchanged."""
    from edgecls.bundle import read_reference

    ref = read_reference(bundle)
    total = len(ref["names"])
    keep = np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int))
    shutil.copytree(bundle, out)
    with open(out / "reference.npz", "wb") as f:
        np.savez(f, **{k: v[keep] for k, v in ref.items()})
    return out, [str(n) for n in ref["names"][keep]]


def check(bundle: Path, data: Path, images: Path | None, root: Path, extras: str, fresh: bool,
          wheels: bool, step_timeout: float = 3600, qemu_cpu: str = "cortex-a76",
          parity_images: int | None = None) -> dict[str, Any]:
    problems = preflight()
    if problems:
        raise SystemExit("arm64-check cannot run here: " + "; ".join(problems))
    started = time.perf_counter()
    report: dict[str, Any] = {"root": str(root), "suite": SUITE, "extras": extras,
                              "host": {"machine": platform.machine(), "cpu": _host_cpu(), "cores": os.cpu_count(),
                                       "python": platform.python_version(), "kernel": platform.release()},
                              "bundle": str(bundle), "data": str(data), "images": str(images) if images else None}
    report["binfmt"] = ensure_binfmt()
    took, built = ensure_root(root)
    report["root_build_s"] = round(took, 1) if built else "cached"
    if wheels:
        log("which aarch64 wheels exist (pip --platform, nothing installed)")
        start = time.perf_counter()
        report["aarch64_wheels"] = wheel_availability()
        report["wheel_report_s"] = round(time.perf_counter() - start, 1)
    QEMU_CPU[0] = qemu_cpu
    with tempfile.TemporaryDirectory() as tmp, mounted(root, qemu_cpu) as cpu:
        tmp = Path(tmp)
        report["emulated_cpu"] = cpu
        if parity_images:
            from edgecls.bundle import read_reference

            total = len(read_reference(bundle)["names"])
            bundle, kept = subset_bundle(bundle, tmp / "bundle-subset", parity_images)
            report["parity_images"] = {"used": len(kept), "of": total, "names": kept}
        uname, _ = in_root(root, "uname -m; python3 -V; grep -m1 -i '^features' /proc/cpuinfo || true")
        report["inside"] = uname.stdout.strip().splitlines()
        log(f"inside: {' | '.join(report['inside'])}")
        wheel = build_wheel(tmp)
        log(f"pip install edgecls[{extras}] from PyPI's aarch64 wheels (fresh venv: {fresh})")
        report["install"] = install(root, wheel, extras, fresh)
        log(f"installed in {report['install']['seconds']} s, venv {report['install']['venv_mb']} MB")

        work = root / WORK.lstrip("/")
        if work.exists():
            shutil.rmtree(work)  # the copies this script made last time
        work.mkdir()
        shutil.copytree(bundle, work / "bundle")
        shutil.copytree(data, work / "data")
        if images is not None:
            shutil.copytree(images, work / "images")
        runs: dict[str, Any] = {}
        steps = [("doctor", f"edgecls doctor {WORK}/bundle"),
                 ("predict", f"edgecls predict {WORK}/bundle {WORK}/{'images' if images else 'data'} --format jsonl "
                             f"--out {WORK}/predictions.jsonl --no-progress")]
        # one parity run per model format (ONNX Runtime, OpenVINO ...): one engine that fails or hangs under
        # emulation leaves the others' figures
        from edgecls.bundle import read_manifest

        formats: dict[str, list[str]] = {}
        for art in read_manifest(bundle).artifacts:
            formats.setdefault(art.format, []).append(art.name)
        for fmt, names in formats.items():
            steps.append((f"parity {fmt}", f"edgecls parity {WORK}/bundle {WORK}/data "
                                           f"{' '.join(f'-a {n}' for n in names)} --logits {WORK}/arm-{fmt}.npz"))
        for name, cmd in steps:
            log(f"inside: {cmd}")
            proc, took = in_root(root, cmd, check=False, timeout=step_timeout)
            runs[name] = {"command": cmd, "rc": proc.returncode, "seconds": round(took, 1),
                          "output": (proc.stdout + proc.stderr).strip().splitlines()[-40:]}
            print(proc.stdout + proc.stderr, flush=True)
            log(f"{name}: rc {proc.returncode} in {took:.0f} s")
        report["runs"] = runs
        if (work / "predictions.jsonl").is_file():
            report["predictions"] = len((work / "predictions.jsonl").read_text().splitlines())
        arm_logits = [work / f"arm-{fmt}.npz" for fmt in formats]
        if any(p.is_file() for p in arm_logits):
            log("the same parity run on this machine, for the comparison")
            from edgecls.export import check_bundle

            x86_bundle = tmp / "bundle-x86"
            shutil.copytree(bundle, x86_bundle)
            start = time.perf_counter()
            result = check_bundle(x86_bundle, data, write=False)
            report["x86_parity_s"] = round(time.perf_counter() - start, 1)
            result.save_logits(tmp / "x86-logits.npz")
            report["compare"] = compare(arm_logits, tmp / "x86-logits.npz", bundle)
            if (work / "bundle" / "parity.json").is_file():
                arm_parity = json.loads((work / "bundle" / "parity.json").read_text())
                fields = ("passed", "max_abs_diff", "map_artifact", "map_drop", "agreement", "backend",
                          "backend_precision")
                report["arm_parity"] = {k: {f: v.get(f) for f in fields}
                                        for k, v in arm_parity.get("artifacts", {}).items()}
    report["passed"] = all(r["rc"] == 0 for r in report["runs"].values()) and "compare" in report
    report["total_s"] = round(time.perf_counter() - started, 1)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("bundle", type=Path, help="a bundle made on this machine (edgecls export)")
    ap.add_argument("data", type=Path, help="the dataset it was exported with (its parity images)")
    ap.add_argument("--images", type=Path, help="images for `edgecls predict` (default: DATA)")
    ap.add_argument("--root", type=Path, default=default_root(),
                    help="the arm64 root's cache folder [default: $EDGECLS_ARM64_ROOT or ~/.cache/edgecls/arm64/"
                         f"{SUITE}]")
    ap.add_argument("--extras", default="runtime,openvino", help="edgecls extras to install [runtime,openvino]")
    ap.add_argument("--reuse-venv", action="store_true", help="keep the root's venv from the last run (faster)")
    ap.add_argument("--no-wheel-report", action="store_true", help="skip the aarch64 wheel availability report")
    ap.add_argument("--step-timeout", type=float, default=3600,
                    help="seconds each command inside may run before it is killed [3600]")
    ap.add_argument("--qemu-cpu", default="cortex-a76", choices=sorted(QEMU_CPUS),
                    help="the emulated CPU: cortex-a76 (Raspberry Pi 5; like Jetson Orin's A78AE: NEON, dot product, "
                         "no i8mm or SVE), cortex-a72 (Pi 4: no dot product), max (all qemu emulates: SVE2, i8mm, "
                         "SME) [cortex-a76]")
    ap.add_argument("--parity-images", type=int, metavar="N",
                    help="check parity on N of the bundle's parity images, evenly spaced [all]")
    ap.add_argument("--out", type=Path, help="write the report here (JSON)")
    args = ap.parse_args(argv)
    for path in (args.bundle, args.data):
        if not path.is_dir():
            ap.error(f"{path} is not a folder")
    report = check(args.bundle.resolve(), args.data.resolve(), args.images.resolve() if args.images else None,
                   args.root.resolve(), args.extras, not args.reuse_venv, not args.no_wheel_report, args.step_timeout,
                   args.qemu_cpu, args.parity_images)
    if "compare" in report:
        print(table(report["compare"]))
    text = json.dumps(report, indent=2, default=str)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        log(f"report: {args.out}")
    else:
        print(text)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
