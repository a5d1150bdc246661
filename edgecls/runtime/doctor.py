"""The library side of `edgecls doctor`: what this machine offers the runtime and, for a bundle, the choices
:func:`edgecls.runtime.plan.plan` makes (and, when asked, what loading it gives). No click here."""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from edgecls.errors import EdgeclsError
from edgecls.runtime.classifier import Classifier


@dataclass
class DoctorReport:
    """What this machine offers the runtime, and what ``auto`` would pick for a bundle."""

    python: str
    platform: str
    cpu: str
    cpu_int8: bool
    cpu_int8_reason: str
    backends: list[dict[str, Any]]
    bundle: str | None = None
    choices: list[dict[str, Any]] = field(default_factory=list)
    loaded: dict[str, Any] | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        out = [f"python    {self.python}", f"platform  {self.platform}",
               f"cpu       {self.cpu} (INT8 fast: {'yes' if self.cpu_int8 else 'no'}; {self.cpu_int8_reason})", "",
               "backends"]
        for b in self.backends:
            state = (b["version"] or "installed").split("-")[0] if b["installed"] else "not installed"
            devices = ", ".join(b["devices"]) or "-"
            why = f"  ({b['reason']})" if b["reason"] else ""
            extra = "" if b["installed"] else f'  pip install "edgecls[{b["extra"]}]"'
            out.append(f"  {b['name']:<12s} {state:<22s} devices: {devices}{why}{extra}")
        if self.bundle:
            out += ["", f"bundle    {self.bundle}"]
            if self.error:
                out.append(f"  cannot run here: {self.error}")
            out += [f"  note:    {n}" for n in self.notes]
            for i, c in enumerate(self.choices):
                head = "auto ->  " if i == 0 else "then     "
                out.append(f"  {head}{c['artifact']} on {c['backend']} {c['device'] or ''}, "
                           f"precision {c['precision']}")
                if i == 0:
                    out.append(f"           because: {c['reason']}")
            if self.loaded:
                b = self.loaded.get("backend", {})
                out.append(f"  loaded:  {b.get('name')} on {b.get('device')}, precision "
                           f"{self.loaded.get('precision') or b.get('precision')}, {b.get('load_seconds')} s")
        return "\n".join(out) + "\n"


def doctor_report(
    bundle: str | Path | None = None,
    *,
    backend: str = "auto",
    device: str | None = None,
    artifact: str | None = None,
    load: bool = False,
    verify: bool = True,
) -> DoctorReport:
    """Backends and devices of this machine; with a bundle, the choices ``auto`` makes (``load``: and load it).

    The first choice's files are checked as a load would check them (inside the bundle; with ``verify``, their
    sha256), so a tampered bundle shows here as ``cannot run here``.
    """
    from edgecls.manifest import Manifest, precision_name
    from edgecls.preprocess import portability_note
    from edgecls.runtime.backends import available_backends, cpu_int8_support, cpu_name
    from edgecls.runtime.plan import check_artifact_files, plan

    fast, why = cpu_int8_support()
    statuses = [
        {"name": s.name, "installed": s.installed, "devices": list(s.devices), "reason": s.reason,
         "version": s.version, "extra": s.extra}
        for s in available_backends()
    ]
    report = DoctorReport(
        python=sys.version.split()[0], platform=f"{platform.system()} {platform.machine()} ({platform.platform()})",
        cpu=cpu_name(), cpu_int8=fast, cpu_int8_reason=why, backends=statuses,
        bundle=str(bundle) if bundle else None,
    )
    if bundle is None:
        return report
    try:
        root = Path(bundle)
        if root.is_dir():
            manifest = Manifest.load(root)
            note = portability_note(manifest.preprocess)
            report.notes += [note] if note else []
            choices = plan(manifest, root, backend=backend, device=device, artifact=artifact)
            report.choices = [{"artifact": c.artifact.name, "backend": c.backend, "device": c.device,
                               "precision": precision_name(c.artifact, c.precision), "compute_precision": c.precision,
                               "reason": c.reason, "path": str(c.path)} for c in choices]
            if not load:
                check_artifact_files(root, choices[0].artifact, choices[0].path, verify=verify)
        if load or not root.is_dir():
            with Classifier(root, backend, device, artifact=artifact, verify=verify) as clf:
                report.loaded = clf.info()
                if not report.choices:
                    report.choices = [{"artifact": clf.artifact.name, "backend": clf.backend.name,
                                       "device": clf.backend.device, "precision": clf.precision_name,
                                       "compute_precision": clf.backend.precision, "reason": clf.reason,
                                       "path": str(clf.choice.path)}]
    except EdgeclsError as exc:
        report.error = str(exc)
    return report


def doctor(
    bundle: str | Path | None = None,
    *,
    backend: str = "auto",
    device: str | None = None,
    artifact: str | None = None,
    load: bool = False,
    as_json: bool = False,
    stdout: IO[str] | None = None,
    verify: bool = True,
) -> DoctorReport:
    """Write the :func:`doctor_report` as text (or JSON) and return it."""
    from edgecls._io import to_json

    report = doctor_report(bundle, backend=backend, device=device, artifact=artifact, load=load, verify=verify)
    stream = stdout or sys.stdout
    stream.write(to_json(report.to_dict()) if as_json else report.format())
    stream.flush()
    return report
