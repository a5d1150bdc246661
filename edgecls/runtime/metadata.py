"""Model metadata without a bundle: the ``edgecls.*`` entries the exporter stores in an ONNX file's
``metadata_props`` or an OpenVINO IR's ``rt_info``, the bundle a model file belongs to, and the manifest that stands
in for the bundle when a bare model file is all there is.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any, Iterator

from edgecls.bundle import META_PREFIX
from edgecls.errors import ConfigError
from edgecls.manifest import MANIFEST_NAME, Artifact, Manifest
from edgecls.preprocess import FLOAT_INPUT, PreprocessSpec


def _varint(buf: Any, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def _fields(buf: Any) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of each top-level length-delimited field of a protobuf message; a ValueError or
    IndexError where the bytes are not a protobuf message (field 0, an unknown wire type, a field past the end)."""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise IndexError("a field runs past the end")
            yield number, pos, pos + size
            pos += size
        else:
            raise ValueError(f"unexpected wire type {wire}")
        if pos > end:
            raise IndexError("a field runs past the end")


def onnx_has_graph(buf: Any) -> bool:
    """Whether ``buf`` parses to the end as a protobuf message with field 7 (an ONNX ModelProto's graph)."""
    try:
        return any(number == 7 for number, _, _ in list(_fields(buf)))
    except (ValueError, IndexError):
        return False


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file (ModelProto field 14), read by walking the top-level protobuf fields.

    Memory-mapped and skipping the graph, so it costs microseconds and needs neither onnx nor a backend.
    """
    props: dict[str, str] = {}
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            for number, start, stop in _fields(mm):
                if number == 14:
                    key, value = _string_pair(mm[start:stop])
                    props[key] = value
    except (OSError, ValueError, IndexError) as exc:
        raise ConfigError(f"{path}: not a readable ONNX file ({exc})") from None
    return props


def _string_pair(buf: bytes) -> tuple[str, str]:
    pos, out = 0, {1: "", 2: ""}
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        size, pos = _varint(buf, pos)
        out[tag >> 3] = buf[pos : pos + size].decode("utf-8", errors="replace")
        pos += size
    return out[1], out[2]


def openvino_metadata(path: str | Path) -> dict[str, str]:
    """The ``edgecls.*`` entries the exporter stores in an OpenVINO IR's ``rt_info/edgecls`` (dots as underscores)."""
    from edgecls.runtime.backends.openvino import core

    model = core().read_model(str(path))
    meta = {}
    for key in ("manifest", "class_names", "thresholds", "preprocess"):
        for name in (f"edgecls_{key}", key, META_PREFIX + key):
            if model.has_rt_info(["edgecls", name]):
                meta[META_PREFIX + key] = model.get_rt_info(["edgecls", name]).astype(str)
                break
    return meta


def find_bundle(model: Path) -> tuple[Path, Manifest, Artifact] | None:
    """The bundle a model file belongs to (a manifest.json up to two folders above that lists it)."""
    target = model.resolve()
    for folder in list(target.parents)[:3]:
        if (folder / MANIFEST_NAME).is_file():
            manifest = Manifest.load(folder)
            for art in manifest.artifacts:
                if (folder / art.path).resolve() == target:  # contained or not: check_artifact_files decides
                    return folder, manifest, art
    return None


def manifest_from_model(model: Path) -> tuple[Manifest, Artifact]:
    """A bare ONNX file or OpenVINO IR: its ``edgecls.*`` metadata stands in for the bundle."""
    import json

    from edgecls.runtime.backends import has_qdq

    suffix = model.suffix.lower()
    meta = onnx_metadata(model) if suffix == ".onnx" else openvino_metadata(model)
    if META_PREFIX + "manifest" not in meta and META_PREFIX + "class_names" not in meta:
        raise ConfigError(
            f"{model}: no edgecls metadata in this model file and no manifest.json around it; pass the bundle folder "
            "made by `edgecls export`"
        )
    try:
        if META_PREFIX + "manifest" in meta:
            manifest = Manifest.from_dict(json.loads(meta[META_PREFIX + "manifest"]), where=f"{model} metadata")
        else:
            names = json.loads(meta[META_PREFIX + "class_names"])
            manifest = Manifest(class_names=names, preprocess=PreprocessSpec.from_dict(
                json.loads(meta[META_PREFIX + "preprocess"])), backbone="unknown",
                thresholds=json.loads(meta.get(META_PREFIX + "thresholds", "null")) or [0.5] * len(names))
        thresholds = json.loads(meta[META_PREFIX + "thresholds"]) if META_PREFIX + "thresholds" in meta \
            else manifest.thresholds
    except (KeyError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{model}: broken edgecls metadata ({exc})") from None
    if suffix == ".onnx":
        fmt, precision = "onnx", ("int8" if has_qdq(model) else "fp32")
    else:
        from edgecls.runtime.backends.openvino import core

        ops = {op.get_type_name() for op in core().read_model(str(model)).get_ops()}
        fmt, precision = "openvino", ("int8" if "FakeQuantize" in ops else "fp32")
    # the input kind the export recorded for this artifact (its manifest, reduced to it, is embedded): uint8 pixels
    # for a -u8 artifact; float32 NCHW for older files
    kind = manifest.artifacts[0].input if len(manifest.artifacts) == 1 else FLOAT_INPUT
    art = Artifact(name=model.stem, path=model.resolve().name, format=fmt, precision=precision, sha256="",
                   thresholds=tuple(thresholds), input=kind)
    return manifest, art

