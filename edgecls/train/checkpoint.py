"""Checkpoints: enough on their own to rebuild the model, its preprocessing, class names and thresholds.

Saved with plain containers and tensors only, so :func:`torch.load` works with ``weights_only=True``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgecls._deps import library_versions
from edgecls._io import atomic_save, to_json
from edgecls.data.spec import DataSpec
from edgecls.errors import CheckpointError
from edgecls.preprocess import PreprocessSpec

FORMAT = "edgecls-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint. ``training`` holds optimizer/scheduler/RNG state and is only present in ``last.pt``.

    ``data`` is how the training data was loaded and split (:attr:`data_spec` reads it from ``config`` for a
    checkpoint saved before the spec was stored).
    """

    model_spec: Any  # edgecls.train.backbones.ModelSpec
    preprocess: PreprocessSpec
    state_dict: dict[str, torch.Tensor]
    thresholds: np.ndarray | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    epoch: int = 0
    training: dict[str, Any] | None = None
    path: Path | None = None
    data: DataSpec | None = None

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.model_spec.class_names)

    @property
    def data_spec(self) -> DataSpec:
        """How the training run loaded and split its data: ``data``, else read from the training ``config``."""
        return self.data if self.data is not None else DataSpec.from_legacy(self.config or {})

    def to_payload(self) -> dict[str, Any]:
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "model_spec": self.model_spec.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "state_dict": self.state_dict,
            "thresholds": None if self.thresholds is None else [float(t) for t in self.thresholds],
            "config": _plain(self.config),
            "data_spec": self.data_spec.to_dict(),
            "metrics": _plain(self.metrics),
            "versions": self.versions or library_versions(),
            "epoch": int(self.epoch),
        }
        if self.training is not None:
            payload["training"] = self.training
        return payload

    def build_model(self) -> torch.nn.Module:
        """The model with these weights, in eval mode (no pretrained download: weights come from here)."""
        from edgecls.train.backbones import build_model

        model = build_model(self.model_spec, pretrained=False)
        spec = self.model_spec
        where = self.path or "checkpoint"
        made_for = (
            f"{where}: weights do not fit backbone {spec.backbone!r} with {len(spec.class_names)} classes "
            f"({spec.head} head) that the checkpoint names; they were made for another backbone or number of classes"
        )
        fix = "the file was edited or put together from two checkpoints; use a checkpoint as `edgecls train` wrote it"
        expected = model.state_dict()
        wrong = [
            f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
            for k, v in self.state_dict.items()
            if k in expected and hasattr(v, "shape") and tuple(v.shape) != tuple(expected[k].shape)
        ]
        if wrong:
            raise CheckpointError(f"{made_for} (shapes {', '.join(wrong[:2])}); {fix}")
        try:
            result = model.load_state_dict(self.state_dict, strict=False)
        except (RuntimeError, TypeError, AttributeError) as exc:  # e.g. a value that is not a tensor
            raise CheckpointError(f"{made_for} ({str(exc).splitlines()[0][:200]}); {fix}") from None
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(
                f"{made_for} (missing {list(result.missing_keys)[:3]}, unexpected {list(result.unexpected_keys)[:3]}); "
                f"{fix}"
            )
        return model.eval()


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy (numpy scalars to Python, NaN to None) so the file loads with ``weights_only=True``."""
    return json.loads(to_json(data))


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write atomically: a crash or Ctrl-C mid-write leaves the previous file intact."""
    payload = ckpt.to_payload()
    return atomic_save(path, lambda tmp: torch.save(payload, tmp))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its ``best.pt``, else ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: no best.pt or last.pt in this folder; is it a finished `edgecls train` run?")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run folder")
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    from edgecls.train.backbones import ModelSpec

    file = resolve_checkpoint(path)
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is not usable
        raise CheckpointError(f"{file}: cannot read checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{file}: not an edgecls checkpoint (train one with `edgecls train`)")
    version = payload.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(
            f"{file}: checkpoint version {version!r} is not valid (this edgecls reads versions 1 to {VERSION}); "
            "the file is corrupt or was edited: train it again or use the original file"
        )
    if version > VERSION:
        raise CheckpointError(
            f"{file}: checkpoint version {version} is newer than this edgecls supports ({VERSION}); upgrade edgecls"
        )
    try:
        thresholds = payload.get("thresholds")
        spec = payload.get("data_spec")  # absent before the spec was stored: Checkpoint.data_spec reads config
        data = None if spec is None else DataSpec.from_dict(spec, where=f"{file}: data_spec")
        return Checkpoint(
            model_spec=ModelSpec.from_dict(payload["model_spec"]),
            preprocess=PreprocessSpec.from_dict(payload["preprocess"]),
            state_dict=payload["state_dict"],
            thresholds=None if thresholds is None else np.asarray(thresholds, dtype=np.float32),
            config=payload.get("config", {}),
            metrics=payload.get("metrics", {}),
            versions=payload.get("versions", {}),
            epoch=int(payload.get("epoch", 0)),
            training=payload.get("training"),
            path=file,
            data=data,
        )
    except KeyError as exc:
        raise CheckpointError(f"{file}: checkpoint is missing {exc}; it is incomplete or corrupt") from None
