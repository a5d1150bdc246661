"""The bundle manifest: one typed, frozen record that travels with every exported artifact.

``manifest.json`` at a bundle's root holds everything the runtime needs (class names, preprocessing, thresholds per
artifact, input/output names) and what the export proved (parity per artifact). Torch-free: the runtime reads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgecls.config import check_keys
from edgecls.errors import ConfigError
from edgecls.preprocess import DEFAULT_IMG_SIZE, FLOAT_INPUT, PreprocessSpec, check_input_kind

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


_STR, _LIST, _OBJ, _NUM = (str,), (list, tuple), (dict,), (int, float)
# JSON type of each field a manifest must (or may) hold; required fields are those without a dataclass default
_MANIFEST_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {
    "class_names": (_LIST, False), "preprocess": (_OBJ, False), "backbone": (_STR, False),
    "thresholds": (_LIST, False), "source_checkpoint_sha256": (_STR, False), "input_name": (_STR, False),
    "output_name": (_STR, False), "input_shape": (_LIST, False), "output_shape": (_LIST, False),
    "output_activation": (_STR, False), "metrics": (_OBJ, False), "versions": (_OBJ, False),
    "artifacts": (_LIST, False), "created": (_STR, False),
}
_ARTIFACT_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": (_STR, False), "path": (_STR, False), "format": (_STR, False), "precision": (_STR, False),
    "sha256": (_STR, False), "thresholds": (_LIST, False), "parent": (_STR, True), "parity": (_OBJ, True),
    "calibration": (_OBJ, True), "details": (_OBJ, False), "input": (_STR, False),
}


def _check_types(cls: type, data: dict[str, Any], where: str, types: dict[str, tuple[tuple[type, ...], bool]]) -> None:
    """Every required field present and every field of its JSON type: one ConfigError naming the first that is not."""
    from dataclasses import MISSING

    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f"{where}: missing field(s) {', '.join(missing)}; re-export the bundle (edgecls export)")
    for name, (kinds, nullable) in types.items():
        if name not in data or (nullable and data[name] is None):
            continue
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, kinds):
            want = {_STR: "a string", _LIST: "a list", _OBJ: "an object", _NUM: "a number"}[kinds]
            raise ConfigError(f"{where}: field {name} must be {want}, got {_json_type(value)}"
                              + (" (a manifest lists its artifacts; re-export the bundle)" if name == "artifacts"
                                 else ""))
    for name in ("thresholds",):
        if name in data and any(isinstance(t, bool) or not isinstance(t, _NUM) for t in data[name]):
            raise ConfigError(f"{where}: field {name} must be a list of numbers, got {data[name]!r}")
    if "class_names" in data and any(not isinstance(c, str) for c in data["class_names"]):
        raise ConfigError(f"{where}: field class_names must be a list of strings")


@dataclass(frozen=True)
class Artifact:
    """One exported model file (or folder) inside a bundle."""

    name: str  # the export target that made it: onnx, onnx-int8, openvino, openvino-int8, coreml, tensorrt, ...
    path: str  # relative to the bundle root
    format: str  # onnx | openvino | coreml | tensorrt | litert | executorch (device_only: not run by the runtime)
    precision: str  # fp32 | fp16 | int8 | int8-weights
    sha256: str
    thresholds: tuple[float, ...]  # per-class thresholds re-tuned on validation for this artifact
    parent: str | None = None  # the float artifact a quantized one was made from
    parity: dict[str, Any] | None = None  # ParityReport.to_dict()
    calibration: dict[str, Any] | None = None  # images, split, method, preset ...
    details: dict[str, Any] = field(default_factory=dict)  # backend specifics (resolved precision, build settings)
    # what the model takes (edgecls.preprocess.INPUT_KINDS): the float32 NCHW tensor, or uint8 NHWC pixels that the
    # graph scales, normalises and transposes itself; a manifest written before the field existed means float
    input: str = FLOAT_INPUT

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        check_input_kind(self.input, where=f"artifact {self.name!r}: field input")

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "manifest", index: int = 0) -> "Artifact":
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: artifacts[{index}] must be a JSON object, got {_json_type(data)}")
        label = f"{where}: artifacts[{index}]" + (f" ({data['name']!r})" if isinstance(data.get("name"), str) else "")
        check_keys(cls, data, label)
        _check_types(cls, data, label, _ARTIFACT_TYPES)
        if "input" in data:
            check_input_kind(data["input"], where=f"{label}: field input")
        return cls(**data)


COMPUTE_PRECISIONS = ("f32", "f16", "bf16", "int8")  # what an engine computes in (the names backends are asked for)
_COMPUTE_ALIASES = {
    "fp32": "f32", "float32": "f32", "f32": "f32",
    "fp16": "f16", "float16": "f16", "f16": "f16", "half": "f16",
    "bf16": "bf16", "bfloat16": "bf16",
    "int8": "int8", "i8": "int8",
}
_ARTIFACT_NAME = {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "int8": "int8"}


def compute_precision(value: str | None) -> str | None:
    """The one spelling of a compute precision (``f32``, ``f16``, ``bf16``, ``int8``) for any of its aliases (fp32,
    float16, half, ...); None for None or a word that is none of them."""
    return _COMPUTE_ALIASES.get(str(value).strip().lower()) if value is not None else None


def artifact_precision(compute: str | None) -> str | None:
    """The artifact-style name (``fp32``, ``fp16``, ``bf16``, ``int8``) of a compute precision or its alias."""
    key = compute_precision(compute)
    return _ARTIFACT_NAME[key] if key is not None else None


def precision_name(artifact: Artifact, compute: str | None = None) -> str:
    """The one name of an artifact's precision, which doctor, predict, run and the export/parity table all show.

    It is the precision the manifest records for the artifact (fp32, fp16, bf16, int8, int8-weights), whatever the
    engine is asked for: an INT8 IR that OpenVINO is asked to run with an f32 hint is ``int8``. ``compute`` (what the
    engine computes a float artifact in, e.g. ``f32`` for an FP16-compressed IR on a CPU) is added when it differs:
    ``fp16 (f32 compute)``.
    """
    name = str(artifact.precision)
    done = artifact_precision(compute)
    if name in ("fp32", "fp16", "bf16") and done in ("fp32", "fp16", "bf16") and done != name:
        return f"{name} ({done.replace('fp', 'f')} compute)"
    return name


# Formats the exporter makes for another runtime on the device, which edgecls's runtime does not run (it is torch-free
# and these runtimes' Python bindings are not): predict, run, serve and bench never choose them.
DEVICE_ONLY_FORMATS = {
    "executorch": "ExecuTorch artifacts (.pte) run on-device through ExecuTorch's runtime (Android, iOS, embedded "
                  "C++), not through edgecls's runtime",
}


def device_only(art: Artifact) -> str:
    """Why edgecls's runtime does not run ``art`` ("" when it does): its format is one of :data:`DEVICE_ONLY_FORMATS`,
    or the exporter marked it so (``details["edgecls_runtime"]`` false)."""
    if art.format in DEVICE_ONLY_FORMATS:
        return DEVICE_ONLY_FORMATS[art.format]
    if (art.details or {}).get("edgecls_runtime") is False:
        return f"{art.format} artifacts run on-device through their own runtime, not through edgecls's runtime"
    return ""


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
    input_shape: tuple[Any, ...] = ("batch", 3, DEFAULT_IMG_SIZE, DEFAULT_IMG_SIZE)
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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocess"] = self.preprocess.to_dict()
        return data

    def to_json(self) -> str:
        from edgecls._io import to_json

        return to_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "manifest") -> "Manifest":
        """Build a Manifest from parsed JSON; a :class:`ConfigError` naming ``where`` and the field when it is not one.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: a manifest is a JSON object with the bundle's fields, got {_json_type(data)}; "
                              "is this an `edgecls export` manifest.json?")
        version = data.get("schema_version", 0)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ConfigError(f"{where}: field schema_version must be an integer (this edgecls writes "
                              f"{SCHEMA_VERSION}), got {_json_type(version)} {version!r}")
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{where}: schema version {version} is newer than this edgecls reads ({SCHEMA_VERSION}); "
                "upgrade edgecls (pip install -U edgecls)"
            )
        check_keys(cls, data, where)
        _check_types(cls, data, where, _MANIFEST_TYPES)
        values = dict(data)
        try:
            values["preprocess"] = PreprocessSpec.from_dict(values["preprocess"])
        except (ConfigError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: field preprocess: {exc}") from None
        values["artifacts"] = tuple(Artifact.from_dict(a, where=where, index=i)
                                    for i, a in enumerate(values.get("artifacts", ())))
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
            data = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no manifest here; is this an `edgecls export` bundle?") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: a folder, not a manifest file; is this an `edgecls export` bundle?") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                              "a manifest.json is UTF-8 JSON written by `edgecls export`") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
        return cls.from_dict(data, where=str(path))

    def save(self, path: str | Path) -> Path:
        from edgecls._io import atomic_write_text

        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        return atomic_write_text(path, self.to_json())
