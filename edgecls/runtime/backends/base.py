"""What every backend shares: the :class:`Backend` interface, its status and candidate records, precision names,
input checks and the model-file sniffing that gives a one-line error for a file that is not a model."""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecls._io import user_cache_dir  # noqa: F401 - re-exported: the backends' engine caches use it
from edgecls.errors import ConfigError, EdgeclsError
from edgecls.manifest import COMPUTE_PRECISIONS as PRECISIONS
from edgecls.manifest import compute_precision

log = logging.getLogger("edgecls.runtime")

# How an engine is set up: for one input at a time (a camera, one request: the least time per call) or for a stream
# of batches where only the total matters (folder predict, a video file, a server's or a Ray actor's batches):
# OpenVINO's THROUGHPUT hint (several single-threaded streams, unpinned, each with its own async infer request), ONNX
# Runtime single-threaded sessions without spinning, side by side. Every backend's ``load`` takes ``mode``; one with a
# single stream (TensorRT, CoreML) runs batches as they come in either mode. The settings of each mode live in the
# backend's own module (OpenVINO: ``compile_config``; ONNX Runtime: ``session_settings``).
#
# In the throughput mode a backend has ``lanes`` > 1: independent streams that each run a whole batch. A pipeline that
# keeps the cores busy (``edgecls run`` on a file, folder ``predict``) gives each lane its own batch with
# :meth:`Backend.submit` and collects results in order, so no stream waits for another at the end of a batch and the
# engine keeps running while the caller writes results: the cores the engine leaves go to decoding.
LATENCY = "latency"
THROUGHPUT = "throughput"
MODES = (LATENCY, THROUGHPUT)


def check_mode(mode: str | None) -> str:
    """``latency`` or ``throughput`` (None: latency); anything else is a ConfigError naming both."""
    if mode is None:
        return LATENCY
    if mode not in MODES:
        raise ConfigError(f"unknown engine mode {mode!r}; valid: {', '.join(MODES)}")
    return mode


class Done:
    """A result that is already there (what :meth:`Backend.submit` returns for an engine without async lanes)."""

    __slots__ = ("_value",)

    def __init__(self, value: np.ndarray) -> None:
        self._value = value

    def result(self) -> np.ndarray:
        return self._value

    def done(self) -> bool:
        return True


def split_batch(n: int, parts: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of ``min(parts, n)`` contiguous, near-equal chunks of ``n`` items (the sub-batches a
    throughput-mode engine runs side by side)."""
    k = max(1, min(parts, n))
    return [(n * i // k, n * (i + 1) // k) for i in range(k)]


@dataclass(frozen=True)
class BackendStatus:
    """What :func:`available_backends` reports for one backend on this machine."""

    name: str
    installed: bool
    devices: tuple[str, ...] = ()
    reason: str = ""
    version: str | None = None
    extra: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return self.installed and bool(self.devices)


@dataclass(frozen=True)
class Candidate:
    """One (backend, device) pair ``auto`` may choose, with what it is good at."""

    backend: str
    device: str  # passed to the backend's load()
    kind: str  # cpu | gpu | npu | ane: what ``device="cpu"`` etc. match in auto mode
    rank: int
    formats: tuple[str, ...]  # artifact formats it runs, preferred first
    int8_fast: bool  # runs INT8 faster than float on this hardware
    why: str  # one line: why this is a good choice here
    # prefers an artifact's pixel-input (-u8) twin, which takes uint8 NHWC and normalises in the engine: True where
    # that was measured faster or equal (OpenVINO fuses the conversion into its first layer; a GPU moves a quarter of
    # the bytes); False for ONNX Runtime's CPU provider, which runs the graph's Cast/Transpose/Mul as separate
    # kernels costing what the numpy normalisation saved (benchmarks/RESULTS.md, "auto's artifact choice")
    pixels_first: bool = True


class Backend(abc.ABC):
    """A loaded model on one engine and device: float32 NCHW in (or uint8 NHWC pixels for a model that normalises
    inside its graph: :attr:`pixels`), logits float32 (N, K) out."""

    name: str = ""
    device: str = ""
    precision: str = ""
    input_name: str = ""
    output_name: str = ""
    input_shape: tuple[Any, ...] = ()  # (N, C, H, W) as the model declares it; None, -1 or a name for a dynamic dim
    # True for a model whose input is uint8 pixels (N, H, W, C) (an edgecls ``-u8`` artifact: the scaling, mean/std
    # and layout change run in the graph); its input_shape is then (N, H, W, C)
    pixels: bool = False
    model_path: Path
    load_seconds: float = 0.0
    reason: str = ""  # why auto chose it (empty when asked for explicitly)
    mode: str = LATENCY  # LATENCY or THROUGHPUT: how the engine was set up (see MODES)
    # independent lanes (streams) that each run a whole batch given to :meth:`submit`, side by side
    lanes: int = 1

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on a float32 (N, 3, H, W) batch (any N; uint8 (N, H, W, 3) pixels when :attr:`pixels`) and
        return float32 logits (N, K)."""

    def submit(self, batch: np.ndarray) -> Any:
        """Start ``batch`` on the next lane and return at once with a handle whose ``result()`` gives its logits (as
        :meth:`infer`). Up to :attr:`lanes` batches run side by side, one per lane; a further submit waits for the
        lane it reuses. ``batch`` must stay unchanged until its result is taken (the engine may read it in place).
        Handles may be collected in any order. The default (one lane) runs the batch now."""
        return Done(self.infer(batch))

    def info(self) -> dict[str, Any]:
        """Name, device, precision, providers, model path, load seconds and backend specifics."""
        data: dict[str, Any] = {
            "name": self.name,
            "device": self.device,
            "precision": self.precision,
            "mode": self.mode,
            "input_name": self.input_name,
            "input": "uint8 NHWC pixels" if self.pixels else "float32 NCHW",
            "output_name": self.output_name,
            "model": str(self.model_path),
            "load_seconds": round(self.load_seconds, 4),
        }
        data.update(self._extra_info())
        if self.reason:
            data["reason"] = self.reason
        return data

    def _extra_info(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release the engine (optional; garbage collection does it too)."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.device} ({self.precision}) {self.model_path}>"


def normalize_precision(value: str | None) -> str | None:
    """``fp32``/``f32``/``float32`` -> ``f32`` and so on; None stays None (the device's default)."""
    if value is None:
        return None
    key = str(value).strip().lower()
    if key in ("", "auto", "default"):
        return None
    name = compute_precision(key)
    if name is None:
        raise ConfigError(f"unknown precision {value!r}; valid: {', '.join(PRECISIONS)} (or fp32, fp16)")
    return name


def check_input_size(backend: "Backend", img_size: int, *, where: str) -> None:
    """The model's input (N, 3, H, W) must take ``img_size`` (the manifest's preprocessing); dynamic dims pass."""
    shape = tuple(getattr(backend, "input_shape", ()) or ())
    if len(shape) != 4:
        return
    pixels = bool(getattr(backend, "pixels", False))
    fixed = [d if isinstance(d, int) and not isinstance(d, bool) and d > 0 else None for d in shape]
    height, width, channels = fixed[1:] if pixels else (fixed[2], fixed[3], fixed[1])
    if (channels not in (None, 3)) or (height not in (None, img_size)) or (width not in (None, img_size)):
        dims = "x".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in shape)
        raise ConfigError(f"{where}: the manifest's preprocess.img_size is {img_size}, but the model "
                          f"{Path(str(backend.model_path)).name} takes input {dims} "
                          f"{'(N, H, W, C)' if pixels else '(N, C, H, W)'}; the manifest and the "
                          "model disagree, re-export the bundle")


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An engine's exception as one short line (its type unless ours, whitespace and newlines collapsed)."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, EdgeclsError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_input(batch: np.ndarray, *, pixels: bool = False) -> np.ndarray:
    """Check a batch is (N, C, H, W) and make it C-contiguous float32 (no copy when it already is); with ``pixels``
    (a model taking uint8 pixels) check it is a uint8 (N, H, W, 3) batch and make it C-contiguous."""
    arr = np.asarray(batch)
    if pixels:
        if arr.ndim != 4 or arr.shape[3] != 3 or arr.dtype != np.uint8:
            raise ConfigError(f"this model takes uint8 pixels (N, H, W, 3), got {arr.dtype} {arr.shape}; a float "
                              "(N, 3, H, W) tensor goes to a float artifact (or through Classifier.probs)")
        return np.ascontiguousarray(arr)
    if arr.ndim != 4:
        raise ConfigError(f"expected a (N, 3, H, W) batch, got shape {arr.shape}")
    if arr.dtype == np.uint8 and arr.shape[3] == 3 and arr.shape[1] != 3:
        raise ConfigError(f"this model takes the float32 (N, 3, H, W) tensor, got uint8 pixels {arr.shape}; pixels "
                          "go to a -u8 artifact (or through Classifier.probs)")
    return np.ascontiguousarray(arr, dtype=np.float32)


def has_qdq(path: str | Path) -> bool:
    """True when an ONNX file holds QuantizeLinear/DequantizeLinear nodes (an explicitly quantized model).

    Op types are plain strings inside the protobuf, so a memory-mapped byte search finds them without the onnx
    package and without reading the whole file into memory.
    """
    import mmap

    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return mm.find(b"DequantizeLinear") >= 0 or mm.find(b"QLinearConv") >= 0
    except (OSError, ValueError):
        return False


def check_model_file(path: str | Path, backend: str) -> None:
    """A ConfigError (one line) when ``path`` cannot be the model its suffix says: an ONNX file must parse as a
    protobuf ModelProto with a graph, an OpenVINO IR .xml must be XML. Cheap (the top-level fields only), and it keeps
    engines from trying every frontend they have on random bytes."""
    import mmap

    from edgecls.runtime.metadata import onnx_has_graph

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".onnx", ".xml") or not path.is_file():
        return
    kind = "an ONNX model" if suffix == ".onnx" else "an OpenVINO IR (.xml)"
    try:
        with open(path, "rb") as f:
            if suffix == ".xml":
                ok = f.read(512).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")
            elif path.stat().st_size == 0:
                ok = False
            else:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    ok = onnx_has_graph(mm)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the model file ({exc.strerror or exc})") from None
    if not ok:
        raise ConfigError(f"{path}: not {kind} (its bytes do not parse as one), so {backend} cannot load it; "
                          "the file is damaged or is not a model: re-export the bundle")


class EngineCache:
    """One compiled engine of a backend in the user's cache: ``<cache>/<kind>/<stem>-<digest>.blob`` and its record
    ``.json`` (the key, the blob's sha256 and what the backend needs to use the engine without re-reading the model).

    ``key`` must name everything the engine depends on: the model files' sha256 (so a bundle never gets another
    model's engine), the engine library's version, the device and the compile settings; its digest names the files.
    A record whose key or blob sha256 does not match (another model that collided on the name, a file cut short) is a
    miss. Writes are atomic (blob first, then the record that vouches for it), so a reader never takes a partial
    blob, and two processes that compile the same engine at once both write a whole one. A cache that cannot be
    written is only logged: the engine still runs, compiled.
    """

    SCHEMA = 1

    def __init__(self, kind: str, stem: str, key: dict[str, Any]) -> None:
        import hashlib
        import json

        self.key = {"schema": self.SCHEMA, **key}
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:24]
        self.blob = user_cache_dir(kind) / f"{stem}-{digest}.blob"
        self.record = self.blob.with_suffix(".json")

    def read(self) -> tuple[bytes, dict[str, Any]] | None:
        """(blob, meta) of a valid entry, None for a miss."""
        import hashlib
        import json

        try:
            record = json.loads(self.record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("key") != self.key:
            return None
        try:
            data = self.blob.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != record.get("blob_sha256"):
            log.warning("%s: does not match its record; compiling the model again", self.blob)
            return None
        meta = record.get("meta")
        return data, meta if isinstance(meta, dict) else {}

    def write(self, data: bytes, meta: dict[str, Any]) -> bool:
        import hashlib
        import json

        from edgecls._io import atomic_write_bytes, atomic_write_text

        record = {"key": self.key, "blob_sha256": hashlib.sha256(data).hexdigest(), "meta": meta}
        try:
            atomic_write_bytes(self.blob, data)
            atomic_write_text(self.record, json.dumps(record, indent=1, sort_keys=True) + "\n")
        except OSError as exc:
            log.warning("cannot write the engine cache %s (%s); the model is compiled again next time", self.blob,
                        exc.strerror or exc)
            return False
        return True
