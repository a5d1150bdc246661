"""The plan: the ranked ways to run a bundle on this machine, each an artifact on a backend, device and precision, with
its reason. :class:`~edgecls.runtime.Classifier`, ``edgecls doctor`` and ``edgecls bench`` all plan here.

With ``backend="auto"``: the fastest backend that is installed and works here (see :mod:`edgecls.runtime.backends`),
then among the bundle's artifacts that backend runs, its INT8 artifact when the device runs INT8 fast (VNNI/AMX on
x86, dot-product on Arm, tensor cores on NVIDIA), else its float artifact; the backend's native format (OpenVINO IR
for OpenVINO, the TensorRT artifact for TensorRT) before plain ONNX. An explicit backend gives one choice, or an error
that says what is missing and what runs here: never another backend.

Nothing here loads a model: :func:`plan` and :func:`plan_all` only read the manifest and probe the backends;
:func:`check_artifact_files` is the one check of a bundle's files before one is opened.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from edgecls.bundle import (
    ENGINE_SETTINGS_NAME,
    already_verified,
    artifact_paths,
    bundle_file,
    check_inside,
    companions,
    verify_files,
)
from edgecls.errors import ConfigError, IntegrityError
from edgecls.manifest import Artifact, Manifest, device_only
from edgecls.preprocess import is_pixels
from edgecls.runtime.backends import (
    BACKEND_NAMES,
    Candidate,
    auto_candidates,
    backend_module,
    device_kind,
    missing_backend,
    normalize_precision,
    probe,
)

log = logging.getLogger("edgecls.runtime")


@dataclass(frozen=True)
class Choice:
    """One way to run a bundle here: an artifact on a backend and device, and why."""

    artifact: Artifact
    path: Path
    backend: str
    device: str | None
    precision: str | None
    reason: str
    candidate: Candidate | None = field(default=None, compare=False)


def _artifact_path(root: Path, art: Artifact) -> Path:
    """The artifact's file, resolved; an IntegrityError when its manifest path leaves the bundle."""
    return bundle_file(root, art.path, field="path", artifact=art.name)


def check_artifact_files(root: Path, art: Artifact, path: Path | None = None, *, verify: bool = True) -> Path:
    """The one check before a bundle's model file is opened (predict, run, doctor, parity and bench all call it).

    Returns the model path to load (the artifact's unless ``path`` is given). Raises
    :class:`edgecls.errors.IntegrityError` when a path the manifest names for the artifact, ``path`` or a file an
    engine reads beside it (an IR's .bin, engine.json) leaves the bundle (absolute, ``..``, a symlink out), and, with
    ``verify``, when the files that will be opened differ from the sha256 the manifest records (see
    :mod:`edgecls.bundle`); a :class:`ConfigError` naming the file when it (or an IR's .bin) is missing.
    """
    named = artifact_paths(root, art)
    path = check_inside(root, path, field="the model file", artifact=art.name) if path is not None \
        else named[f"artifacts[{art.name}].path"]
    beside = companions(Path(path), art.format)
    inside = sorted(path.rglob("*")) if path.is_dir() else []  # a folder artifact (.mlpackage): every file in it
    for extra in (*beside, *inside):
        if extra.exists() or extra.is_symlink():
            check_inside(root, extra, field=f"beside {Path(path).name}" if extra in beside else
                         f"inside {Path(path).name}", artifact=art.name)
    missing = [] if path.exists() else [path]
    if art.format == "openvino" and path.suffix == ".xml" and not path.with_suffix(".bin").exists():
        missing.append(path.with_suffix(".bin"))
    if missing:
        names = ", ".join(str(p) for p in missing)
        raise ConfigError(
            f"bundle {root}: artifact {art.name!r} needs {names}, which is missing; re-export the bundle "
            "(edgecls export) or choose another artifact with --artifact"
        )
    if verify:
        verify_artifact_files(root, art, path)
    return path


def verify_artifact_files(root: Path, art: Artifact, path: Path) -> None:
    """Hash the files a backend opens for ``art`` at ``path`` (the model, an IR's .bin, engine.json), each once, and
    compare them with the manifest's record; an :class:`edgecls.errors.IntegrityError` when one differs.

    Call :func:`check_artifact_files` first (containment and existence); it calls this with ``verify=True``.
    """
    verify_files(root, art, _opened(art, path))


def artifact_already_verified(root: Path, art: Artifact, path: Path) -> bool:
    """Whether :func:`verify_artifact_files` would pass without reading a byte: every file it checks is one this user
    verified before and is unchanged since (:func:`edgecls.bundle.already_verified`)."""
    return already_verified(root, art, _opened(art, path))


def _opened(art: Artifact, path: Path) -> list[Path]:
    return [path, *(p for p in companions(Path(path), art.format) if p.is_file())]


def precision_for(art: Artifact, backend: str) -> str | None:
    """The precision to ask ``backend`` for, so predictions match the artifact's parity run.

    The exporter records the hint its parity run used (``details["inference_precision_hint"]`` for OpenVINO IR,
    f32 unless configured otherwise); the rest follows the artifact's precision.
    """
    recorded = art.details.get("precision_hint")
    if recorded and art.details.get("backend") in (None, backend):
        return normalize_precision(recorded)
    if art.format == "openvino" and backend == "openvino":
        return normalize_precision(art.details.get("inference_precision_hint") or "f32")
    if art.format == "tensorrt":
        return None  # engine.json next to the ONNX decides
    if art.precision == "int8":
        return "int8"
    if art.precision == "fp16" and backend == "tensorrt":
        return "f16"
    if backend == "coreml":
        return None
    return "f32"  # fp32 artifacts, fp16-compressed IR and int8-weight-compressed models compute in f32


def _tensorrt_model(root: Path, art: Artifact) -> Path:
    """The file the TensorRT backend loads for a tensorrt artifact: its prebuilt engine when ``engine.json`` says it
    was built on this GPU model with this TensorRT version, else the portable ONNX (built and cached on first use)."""
    import json

    path = _artifact_path(root, art)
    onnx = bundle_file(root, art.details["onnx"], field="details.onnx", artifact=art.name) if art.details.get("onnx") \
        else path.with_name("model.onnx")
    if path.suffix.lower() not in (".engine", ".plan"):
        return path
    settings_file = bundle_file(root, art.details["settings"], field="details.settings", artifact=art.name) \
        if art.details.get("settings") else path.with_name(ENGINE_SETTINGS_NAME)
    try:
        built = json.loads(settings_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        built = {}
    status = probe("tensorrt")
    gpus = {g.get("name") for g in status.details.values() if isinstance(g, dict)}
    if built.get("gpu") in gpus and built.get("tensorrt") == status.version:
        return path
    if onnx.exists():
        log.info("%s: the engine was built for %s with TensorRT %s; this machine has %s with TensorRT %s, so the "
                 "engine is built from %s (once, then cached)", art.name, built.get("gpu"), built.get("tensorrt"),
                 ", ".join(sorted(str(g) for g in gpus)) or "no GPU", status.version, onnx.name)
        return onnx
    return path


def model_path(root: Path, art: Artifact, backend: str) -> Path:
    """The file ``backend`` loads for ``art``: the artifact's own, or for a tensorrt artifact on TensorRT its engine
    when it was built for this GPU and TensorRT version, else its portable ONNX (see the TensorRT backend)."""
    if art.format == "tensorrt" and backend == "tensorrt":
        return _tensorrt_model(root, art)
    return _artifact_path(root, art)


def order_artifacts(artifacts: Iterable[Artifact], formats: Sequence[str], int8_fast: bool,
                    pixels_first: bool = True) -> list[Artifact]:
    """Artifacts in ``formats``: INT8 first when the device runs it fast (float first otherwise), then by format, then
    the pixel-input variant (uint8 NHWC in, normalised in the engine) before the float-input one where the device
    runs it no slower (``pixels_first``: :attr:`Candidate.pixels_first`), after it elsewhere."""
    usable = [a for a in artifacts if a.format in formats]
    return sorted(usable, key=lambda a: ((a.precision == "int8") != int8_fast, formats.index(a.format),
                                         is_pixels(a.input) != pixels_first))


def _order_for(pool: Iterable[Artifact], formats: Sequence[str], cand: Candidate | None) -> list[Artifact]:
    """:func:`order_artifacts` for a backend's device (no device found: INT8 not assumed fast, pixels first)."""
    return order_artifacts(pool, formats, cand.int8_fast if cand else False, cand.pixels_first if cand else True)


def _why_artifact(art: Artifact, cand: Candidate | None, forced: bool, arts: Sequence[Artifact] = ()) -> str:
    if forced:
        return f"artifact {art.name} as requested"
    twin = any(is_pixels(a.input) and a.precision == art.precision for a in arts)
    u8 = "; uint8 pixels in, normalised in the engine" if is_pixels(art.input) else \
        ("; float input: this device runs the pixel-input twin no faster" if twin else "")
    if art.precision == "int8":
        return f"artifact {art.name} (int8: this device runs INT8 fast{u8})"
    if cand is not None and cand.int8_fast:
        return f"artifact {art.name} ({art.precision}; no int8 artifact this backend runs{u8})"
    return f"artifact {art.name} ({art.precision}; INT8 would not be faster on this device{u8})"


def plan(
    manifest: Manifest,
    root: Path,
    *,
    backend: str = "auto",
    device: str | None = None,
    artifact: str | None = None,
) -> list[Choice]:
    """Ways to run this bundle here, best first (auto may fall back to the next when one fails to load).

    Nothing is loaded; :func:`edgecls.runtime.doctor_report` shows the first choice.
    """
    if not manifest.artifacts:
        raise ConfigError(f"bundle {root}: the manifest lists no artifacts; re-export it")
    if backend != "auto" and backend not in BACKEND_NAMES:
        backend_module(backend)  # raises with the valid names
    forced = manifest.artifact(artifact) if artifact else None
    runnable = tuple(a for a in manifest.artifacts if not device_only(a))
    if forced is not None and device_only(forced):
        others = f"; choose another with --artifact ({', '.join(a.name for a in runnable)})" if runnable else ""
        raise ConfigError(f"artifact {forced.name!r}: {device_only(forced)}{others}")
    if not runnable:
        raise ConfigError(f"bundle {root}: {device_only(manifest.artifacts[0])}, and the bundle has no other artifact; "
                          "re-export it with one for edgecls (e.g. --target onnx)")
    pool = (forced,) if forced else runnable
    kind = device_kind(device)

    if backend != "auto":
        module = backend_module(backend)
        status = probe(backend)
        if not status.installed:
            raise missing_backend(backend, status)
        cands = backend_module(backend).candidates(status) if status.usable else []
        match = [c for c in cands if device is None or c.device.lower() == device.lower() or c.kind == kind]
        cand = match[0] if match else None
        arts = _order_for(pool, module.FORMATS, cand)
        if not arts:
            have = ", ".join(f"{a.name} ({a.format})" for a in pool)
            runs = "/".join(module.FORMATS)
            if forced is not None:
                others = [n for n in BACKEND_NAMES if forced.format in backend_module(n).FORMATS]
                raise ConfigError(f"backend {backend!r} runs {runs} artifacts, and {forced.name!r} is {forced.format}; "
                                  f"backends for it: {', '.join(others)}")
            raise ConfigError(f"backend {backend!r} runs {runs} artifacts; this bundle has {have}")
        art = arts[0]
        reason = f"{backend} as requested; {_why_artifact(art, cand, forced is not None, arts)}"
        return [Choice(art, model_path(root, art, backend), backend, device, precision_for(art, backend), reason,
                       cand)]

    if device is not None and kind is None:
        raise ConfigError(f"with backend 'auto', device must be cpu, gpu/cuda, npu or ane, got {device!r}")
    choices = []
    for cand in auto_candidates(kind=kind):
        arts = _order_for(pool, backend_module(cand.backend).FORMATS, cand)
        if not arts:
            continue
        art = arts[0]
        dev = device if device and any(c in device for c in ":.") else cand.device
        reason = f"{cand.why}; {_why_artifact(art, cand, forced is not None, arts)}"
        choices.append(Choice(art, model_path(root, art, cand.backend), cand.backend, dev,
                              precision_for(art, cand.backend), reason, cand))
    if not choices:
        formats = sorted({a.format for a in pool})
        statuses = "; ".join(f"{s.name}: {s.reason or ', '.join(s.devices) or 'no device'}"
                             for s in map(probe, BACKEND_NAMES))
        where = f" with a {kind} device" if kind else ""
        raise ConfigError(
            f"no installed backend runs this bundle's {'/'.join(formats)} artifacts{where} here ({statuses}); "
            'install one, e.g. pip install "edgecls[runtime]"'
        )
    return choices


def plan_all(
    manifest: Manifest,
    root: Path,
    *,
    backends: Sequence[str] = (),
    artifacts: Sequence[str] = (),
    verify: bool = True,
) -> tuple[list[Choice], list[tuple[str, str]]]:
    """Every way this machine can run the bundle (what ``edgecls bench`` times), and what cannot run and why.

    For each artifact (``artifacts``: these only) and each backend (``backends``: these only) that runs its format:
    every device of the backend and, for a float OpenVINO IR, every float precision the device computes in (the one
    its parity ran with first). A tensorrt artifact's portable Q/DQ ONNX also runs on ONNX Runtime's CPU/CUDA
    providers. Each model's files are checked once as a load checks them (:func:`check_artifact_files`; hashed with
    ``verify``): an :class:`IntegrityError` is raised, any other problem skips that artifact on that backend.

    Returns:
        The choices (``reason`` says what each one is; ``candidate`` is the backend's device) and the
        ``("<artifact> on <backend>", why)`` pairs that cannot run here.
    """
    choices: list[Choice] = []
    not_run: list[tuple[str, str]] = []
    verified: set[Path] = set()  # each file hashed once, whichever backends time it
    arts = [manifest.artifact(n) for n in artifacts] if artifacts else list(manifest.artifacts)
    for art in arts:
        if device_only(art):  # an artifact for another runtime on the device (an ExecuTorch .pte)
            not_run.append((art.name, device_only(art)))
            continue
        for backend in BACKEND_NAMES:
            if backends and backend not in backends:
                continue
            module = backend_module(backend)
            portable = art.format == "tensorrt" and backend == "onnxruntime"
            if art.format not in module.FORMATS and not portable:
                continue
            status = probe(backend)
            if not status.usable:
                not_run.append((f"{art.name} on {backend}", status.reason or "no usable device here"))
                continue
            if portable:  # the Q/DQ ONNX an engine is built from, on ONNX Runtime's CPU/CUDA providers
                path = (root / art.details["onnx"]).resolve() if art.details.get("onnx") else root / art.path
                if path.suffix.lower() != ".onnx":
                    continue
                asked = "int8" if art.precision == "int8" else "f32"
                why = f"the portable ONNX of {art.name} on ONNX Runtime"
            else:
                path = model_path(root, art, backend)
                asked = precision_for(art, backend)
                why = f"{art.name} on {backend}"
            try:
                check_artifact_files(root, art, path, verify=verify and path not in verified)
                verified.add(path)
            except IntegrityError:
                raise
            except ConfigError as exc:
                not_run.append((f"{art.name} on {backend}", str(exc)))
                continue
            for cand in module.candidates(status):
                if portable and cand.device == "tensorrt":
                    continue
                for precision in _timed_precisions(backend, cand.device, asked, art.precision):
                    choices.append(Choice(art, path, backend, cand.device, precision, f"{why} {cand.device}", cand))
    return choices, not_run


def _timed_precisions(backend: str, device: str, asked: str | None, artifact_precision: str) -> list[str | None]:
    """The precisions a choice is timed at: the one its parity ran with, then for a float artifact on OpenVINO the
    other float precisions the device computes in (bf16 on AVX512-BF16/AMX CPUs, f16 on GPUs)."""
    if backend != "openvino" or artifact_precision == "int8":
        return [asked]
    from edgecls.runtime.backends.openvino import precision_caps

    return [asked] + [p for p in precision_caps(device) if p != asked]
