"""Which rows a benchmark runs: every artifact x backend x device (x inference precision) that runs here, ranked by
:func:`edgecls.runtime.plan.plan_all`, and the PyTorch rows of the bundle's source checkpoint (when torch is
installed and the checkpoint is found). :func:`plan_rows` returns them, PyTorch first, and collects what cannot run
here, with the reason, in ``not_run``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecls.bench._worker import PYTORCH, RowSpec
from edgecls.errors import ConfigError

if TYPE_CHECKING:
    from edgecls.bench.config import BenchConfig


@dataclass(frozen=True)
class PlannedRow:
    """One row to measure: what the worker runs (``spec``) and what scoring it needs."""

    spec: RowSpec
    size_mb: float | None
    thresholds: np.ndarray
    parity_passed: bool | None
    int8: bool


def _model_size_mb(path: Path) -> float:
    from edgecls.bundle import size_mb

    total = size_mb(path)
    if path.suffix.lower() == ".xml" and path.with_suffix(".bin").is_file():
        total += size_mb(path.with_suffix(".bin"))
    if path.suffix.lower() == ".onnx":
        total += sum(size_mb(p) for p in path.parent.glob(path.name + ".data"))
    return round(total, 3)


def _parity_passed(art: Any) -> bool | None:
    parity = art.parity or {}
    return parity.get("passed") if "not_run" not in parity else None


def _plan_artifacts(manifest: Any, root: Path, cfg: BenchConfig, base: dict[str, Any],
                    not_run: list[tuple[str, str]]) -> list[PlannedRow]:
    from edgecls.runtime.plan import plan_all

    choices, skipped = plan_all(manifest, root, backends=cfg.backends, artifacts=cfg.artifacts, verify=cfg.verify)
    not_run.extend(skipped)
    planned = []
    for c in choices:
        art = c.artifact
        shown = "int8" if art.precision == "int8" else c.precision or "default"
        label = f"{art.name} · {c.backend} {str(c.device).lower()} {shown}"
        thresholds = np.asarray(art.thresholds or manifest.thresholds, dtype=np.float64)
        for mode in cfg.modes:  # one row per engine mode; the latency row keeps the plain label
            spec = RowSpec(label=label if mode == "latency" else f"{label} {mode}", kind="backend",
                           model=str(c.path), backend=c.backend, device=c.device, precision=c.precision,
                           artifact=art.name, mode=mode, input=art.input,
                           preprocess=manifest.preprocess.to_dict(), **base)
            planned.append(PlannedRow(spec, _model_size_mb(c.path), thresholds, _parity_passed(art),
                                    art.precision == "int8"))
    return planned


def _find_checkpoint(root: Path, manifest: Any, given: str | None) -> tuple[Path | None, str]:
    """The checkpoint of the PyTorch rows and, when there is none, why."""
    from edgecls._io import sha256_file
    from edgecls.bundle import CONFIG_NAME

    if given:
        path = Path(given)
        candidates = [path]
    else:
        try:
            recorded = json.loads((root / CONFIG_NAME).read_text(encoding="utf-8")).get("checkpoint")
        except (OSError, ValueError):
            recorded = None
        if not recorded:
            return None, f"no source checkpoint recorded in {root / CONFIG_NAME}; pass --checkpoint"
        path = Path(recorded)
        candidates = [path] if path.is_absolute() else [Path.cwd() / path, root.parent / path]
    for cand in candidates:
        file = cand / "best.pt" if cand.is_dir() else cand
        if not file.is_file():
            continue
        if manifest.source_checkpoint_sha256 and sha256_file(file) != manifest.source_checkpoint_sha256:
            if given:
                raise ConfigError(f"--checkpoint {given}: not the checkpoint this bundle was exported from (sha256 "
                                  "differs); pass the bundle's own checkpoint or drop --checkpoint")
            return None, f"{file} has changed since the export (sha256 differs); pass --checkpoint"
        return file, ""
    if given:
        raise ConfigError(f"--checkpoint {given}: no such checkpoint file or run folder")
    return None, f"the source checkpoint {path} is not here; pass --checkpoint"


def _plan_torch(manifest: Any, root: Path, cfg: BenchConfig, base: dict[str, Any],
                not_run: list[tuple[str, str]]) -> list[PlannedRow]:
    from edgecls._deps import has

    if (cfg.backends and PYTORCH not in cfg.backends) or not cfg.torch_variants:
        return []
    if not has("torch"):
        not_run.append((PYTORCH, 'torch is not installed (pip install "edgecls[train]")'))
        return []
    ckpt, why = _find_checkpoint(root, manifest, cfg.checkpoint)
    if ckpt is None:
        not_run.append((PYTORCH, why))
        return []
    thresholds = np.asarray(manifest.thresholds, dtype=np.float64)
    planned = []
    for variant in cfg.torch_variants:
        spec = RowSpec(label=f"pytorch {variant.replace('_', '-')} fp32", kind=PYTORCH, model=str(ckpt),
                       backend=PYTORCH, device="cpu", precision="f32", artifact=PYTORCH, variant=variant, **base)
        planned.append(PlannedRow(spec, round(ckpt.stat().st_size / 1e6, 3), thresholds, None, False))
    return planned


def plan_rows(manifest: Any, root: Path, cfg: BenchConfig, base: dict[str, Any],
              not_run: list[tuple[str, str]]) -> list[PlannedRow]:
    """The PyTorch rows, then the bundle's rows, that ``cfg`` asks for and this machine runs; ``base`` holds the
    :class:`RowSpec` fields every row shares (threads, batches, timing, inputs). Rows that cannot run are appended
    to ``not_run`` as (row, reason)."""
    return _plan_torch(manifest, root, cfg, base, not_run) + _plan_artifacts(manifest, root, cfg, base, not_run)
