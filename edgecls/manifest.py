"""The bundle manifest: one typed, frozen record that travels with every exported artifact.

``manifest.json`` at a bundle's root holds everything the runtime needs (class names, preprocessing, thresholds per
artifact, input/output names) and what the export proved (parity per artifact). Torch-free: the runtime reads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgecls.errors import ConfigError
from edgecls.preprocess import PreprocessSpec

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


def _check_keys(cls: type, data: dict[str, Any], where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; valid: {sorted(known)}")


@dataclass(frozen=True)
class Artifact:
    """One exported model file (or folder) inside a bundle."""

    name: str  # the export target that made it: onnx, onnx-int8, openvino, openvino-int8, coreml, tensorrt, ...
    path: str  # relative to the bundle root
    format: str  # onnx | openvino | coreml | tensorrt
    precision: str  # fp32 | fp16 | int8 | int8-weights
    sha256: str
    thresholds: tuple[float, ...]  # per-class thresholds re-tuned on validation for this artifact
    parent: str | None = None  # the float artifact a quantized one was made from
    parity: dict[str, Any] | None = None  # ParityReport.to_dict()
    calibration: dict[str, Any] | None = None  # images, split, method, preset ...
    details: dict[str, Any] = field(default_factory=dict)  # backend specifics (resolved precision, build settings)

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Artifact":
        _check_keys(cls, data, f"artifact {data.get('name', '?')}")
        return cls(**data)


@dataclass(frozen=True)
class Manifest:
    """Everything about a bundle that is not the model weights themselves."""

    class_names: tuple[str, ...]
    preprocess: PreprocessSpec
    backbone: str
    thresholds: tuple[float, ...]  # the checkpoint's (PyTorch) thresholds
    source_checkpoint_sha256: str = ""
    input_name: str = "images"
    output_name: str = "logits"
    input_shape: tuple[Any, ...] = ("batch", 3, 224, 224)
    output_shape: tuple[Any, ...] = ("batch", 0)
    output_activation: str = "sigmoid"
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    artifacts: tuple[Artifact, ...] = ()
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "output_shape", tuple(self.output_shape))
        object.__setattr__(self, "artifacts", tuple(self.artifacts))
        if len(self.thresholds) != len(self.class_names):
            raise ConfigError(f"manifest: {len(self.thresholds)} thresholds for {len(self.class_names)} classes")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def artifact(self, name: str) -> Artifact:
        for art in self.artifacts:
            if art.name == name:
                return art
        have = ", ".join(a.name for a in self.artifacts) or "none"
        raise ConfigError(f"this bundle has no {name!r} artifact (it has: {have})")

    def with_artifact(self, artifact: Artifact) -> "Manifest":
        """A copy with ``artifact`` added, replacing one of the same name."""
        from dataclasses import replace

        kept = tuple(a for a in self.artifacts if a.name != artifact.name)
        return replace(self, artifacts=kept + (artifact,))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocess"] = self.preprocess.to_dict()
        return data

    def to_json(self) -> str:
        from edgecls._io import to_json

        return to_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "manifest") -> "Manifest":
        version = int(data.get("schema_version", 0))
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{where}: schema version {version} is newer than this edgecls reads ({SCHEMA_VERSION}); "
                "upgrade edgecls (pip install -U edgecls)"
            )
        _check_keys(cls, data, where)
        values = dict(data)
        values["preprocess"] = PreprocessSpec.from_dict(values["preprocess"])
        values["artifacts"] = tuple(Artifact.from_dict(a) for a in values.get("artifacts", ()))
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"{where}: incomplete manifest ({exc})") from None

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        """Read ``manifest.json`` (or the one inside a bundle folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no manifest here; is this an `edgecls export` bundle?") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
        return cls.from_dict(data, where=str(path))

    def save(self, path: str | Path) -> Path:
        from edgecls._io import atomic_write_text

        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        return atomic_write_text(path, self.to_json())
