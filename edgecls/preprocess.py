"""Evaluation preprocessing: the one implementation used by validation, calibration, parity and the runtime.

Only numpy and OpenCV are used here, so the runtime can rebuild exactly what training saw at evaluation time
from the :class:`PreprocessSpec` stored in every checkpoint and bundle.
"""

from __future__ import annotations

import enum
import functools
import math
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Sequence, Union

import numpy as np

from edgecls.config import check_keys
from edgecls.errors import ConfigError, DataError

ImageSource = Union[str, Path, bytes, bytearray, np.ndarray]


class Resize(str, enum.Enum):
    """How an image is brought to ``img_size`` (see :class:`PreprocessSpec`); ``TrainConfig.resize`` is one."""

    SQUASH = "squash"
    SHORTER = "shorter"


RESIZE_MODES = tuple(m.value for m in Resize)
INTERPOLATIONS = ("linear", "area", "cubic", "nearest")
# How the resize computes (PreprocessSpec.resize_numerics). "native": OpenCV's 8-bit kernels, whose SIMD code rounds
# differently on x86 and on ARM (NEON): one 8-bit level on 18% (linear), 2.5% (cubic), 0.06% (area) of the values, so
# an FP32 artifact's probabilities differ between the two by up to ~1e-2. "portable": the same pixels everywhere, by
# construction (benchmarks/RESULTS.md, "issue 16: FP32 parity on ARM"): linear through OpenCV's bit-exact
# INTER_LINEAR_EXACT, cubic and area through exact_resize (integer arithmetic), nearest as it is (a copy). Both give
# uint8 pixels, so the -u8 artifacts (normalising in the engine) and the float tensor stay equal bit for bit.
NATIVE = "native"
PORTABLE = "portable"
RESIZE_NUMERICS = (NATIVE, PORTABLE)
# the image files a dataset folder and the runtime's file listing pick up (edgecls.data uses this one too)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_IMG_SIZE = 224  # the usual ImageNet input size; a backbone says its own (train.backbones)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_MAX_PIXELS = 100_000_000  # ~100 MP: an image whose header declares more is refused before decoding

# What a model artifact takes as input (``Artifact.input`` in the manifest): the normalised float32 NCHW tensor of
# :func:`preprocess`, or the resized/cropped uint8 pixels, NHWC, in BGR (OpenCV's decode order) or RGB, with the
# scaling, mean/std, channel order and layout change inside the graph. A manifest without the field means float.
FLOAT_INPUT = "float32-nchw"
PIXELS_BGR = "uint8-nhwc-bgr"
PIXELS_RGB = "uint8-nhwc-rgb"
INPUT_KINDS = (FLOAT_INPUT, PIXELS_BGR, PIXELS_RGB)


def check_input_kind(value: Any, *, where: str = "input") -> str:
    """``value`` when it is one of :data:`INPUT_KINDS`, else a one-line :class:`ConfigError` naming them."""
    if value not in INPUT_KINDS:
        raise ConfigError(f"{where}: unknown input kind {value!r}; valid: {', '.join(INPUT_KINDS)} (re-export the "
                          "bundle with this edgecls)")
    return value


def is_pixels(kind: str) -> bool:
    """Whether an input kind is uint8 pixels (NHWC) rather than the float32 NCHW tensor."""
    return kind in (PIXELS_BGR, PIXELS_RGB)


def input_shape(spec: "PreprocessSpec", kind: str, n: int) -> tuple[int, int, int, int]:
    """The (N, ...) shape of a batch of ``n`` inputs of ``kind``: (n, 3, S, S) float, (n, S, S, 3) pixels."""
    size = spec.img_size
    return (n, size, size, 3) if is_pixels(kind) else (n, 3, size, size)


def input_dtype(kind: str) -> np.dtype:
    return np.dtype(np.uint8) if is_pixels(kind) else np.dtype(np.float32)


def new_input(spec: "PreprocessSpec", kind: str, n: int) -> np.ndarray:
    """An uninitialised batch of ``n`` inputs of ``kind`` (for :class:`Preprocessor` to write rows into)."""
    return np.empty(input_shape(spec, kind, n), dtype=input_dtype(kind))


@dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes the model's input tensor.

    ``resize="squash"`` resizes the whole image to ``img_size`` x ``img_size`` (nothing is cut off, which suits
    multi-label data where an object may sit at the border). ``resize="shorter"`` resizes the shorter side to
    ``round(img_size / crop_pct)`` keeping the aspect ratio, then takes a centre crop of ``img_size``.
    Pixels are scaled by ``scale`` (1/255 gives [0, 1]) then normalised with ``mean`` and ``std`` per RGB channel.

    ``jpeg_reduce``: a JPEG is decoded with libjpeg's DCT scaling at 1/2, 1/4 or 1/8 of its size, the smallest
    scale whose shorter side still holds at least twice what the resize needs (:func:`jpeg_scale`), then resized
    as usual; other formats and arrays are decoded in full. On for every spec built now; a record without the field
    (a bundle or checkpoint made before it existed) reads as off, so its numerics stay exactly what they were.

    ``resize_numerics``: ``"native"`` (the default) resizes with OpenCV's 8-bit kernels, which round one 8-bit
    level differently on x86 and on ARM; ``"portable"`` gives the same pixels on both (see :data:`RESIZE_NUMERICS`)
    at 5-20% of ``predict``'s time on x86, so it is chosen (``edgecls export --resize-numerics portable``), not
    the default. A record without the field reads as native, its numerics before the field existed.
    """

    img_size: int = DEFAULT_IMG_SIZE
    resize: str = Resize.SQUASH.value
    crop_pct: float = 1.0
    interpolation: str = "linear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    scale: float = 1.0 / 255.0
    color: str = "RGB"
    layout: str = "NCHW"
    jpeg_reduce: bool = True
    resize_numerics: str = NATIVE

    def __post_init__(self) -> None:
        if self.img_size < 8:
            raise ConfigError(f"img_size must be at least 8, got {self.img_size}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"unknown resize mode {self.resize!r}; valid: {', '.join(RESIZE_MODES)}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"unknown interpolation {self.interpolation!r}; valid: {', '.join(INTERPOLATIONS)}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ConfigError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ConfigError("mean and std need three values each, std > 0")
        if self.color != "RGB" or self.layout != "NCHW":
            raise ConfigError("only color='RGB' and layout='NCHW' are supported")
        if not isinstance(self.jpeg_reduce, bool):
            raise ConfigError(f"jpeg_reduce must be true or false, got {self.jpeg_reduce!r}")
        if self.resize_numerics not in RESIZE_NUMERICS:
            raise ConfigError(f"unknown resize_numerics {self.resize_numerics!r}; valid: {', '.join(RESIZE_NUMERICS)}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessSpec":
        check_keys(cls, data, "preprocessing")
        values = dict(data)
        values.setdefault("jpeg_reduce", False)  # recorded before reduced decoding existed: full decoding, as then
        values.setdefault("resize_numerics", NATIVE)  # recorded before the field: OpenCV's 8-bit kernels, as then
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def replace(self, **changes: Any) -> "PreprocessSpec":
        return PreprocessSpec.from_dict({**self.to_dict(), **changes})


def _cv2():
    from edgecls._deps import require

    return require("cv2", extra="runtime", package="opencv-python-headless")


def _u16(b: bytes, at: int, order: str) -> int:
    return int.from_bytes(b[at : at + 2], order)


def _u32(b: bytes, at: int, order: str) -> int:
    return int.from_bytes(b[at : at + 4], order)


def _jpeg_size(f: IO[bytes]) -> tuple[int, int] | None:
    f.seek(2)
    for _ in range(10_000):  # segments before the frame header (APPn, DQT, DHT, COM ...)
        byte = f.read(1)
        skipped = 0
        while byte and byte != b"\xff" and skipped < 65536:  # garbage before the next marker
            byte = f.read(1)
            skipped += 1
        while byte == b"\xff":  # fill bytes
            byte = f.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            continue
        if marker in (0xD9, 0xDA):  # end of image or scan data before a frame header
            return None
        head = f.read(2)
        if len(head) < 2:
            return None
        length = _u16(head, 0, "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn: precision, height, width
            sof = f.read(5)
            return (_u16(sof, 3, "big"), _u16(sof, 1, "big")) if len(sof) == 5 else None
        if length < 2:
            return None
        f.seek(length - 2, 1)
    return None


def _pnm_size(head: bytes) -> tuple[int, int] | None:
    """PBM/PGM/PPM (P1-P6) and PFM (PF, Pf): magic, then width and height as decimal tokens (comments skipped)."""
    if head[:2] == b"P7":  # PAM: WIDTH and HEIGHT lines
        fields = dict(line.split(None, 1) for line in head.decode("ascii", "replace").splitlines()[1:]
                      if len(line.split(None, 1)) == 2)
        try:
            return int(fields["WIDTH"]), int(fields["HEIGHT"])
        except (KeyError, ValueError):
            return None
    tokens = []
    for line in head[2:].split(b"\n"):
        tokens += line.split(b"#", 1)[0].split()
        if len(tokens) >= 2:
            break
    try:
        return int(tokens[0]), int(tokens[1])
    except (IndexError, ValueError):
        return None


def _tiff_size(f: IO[bytes], head: bytes) -> tuple[int, int] | None:
    order = "little" if head[:2] == b"II" else "big"
    big = _u16(head, 2, order) == 43
    f.seek(8 if big else 4)
    raw = f.read(8 if big else 4)
    offset = int.from_bytes(raw, order)
    f.seek(offset)
    raw = f.read(8 if big else 2)
    count = int.from_bytes(raw, order) if raw else 0
    size = 20 if big else 12
    found: dict[int, int] = {}
    for _ in range(min(count, 4096)):
        entry = f.read(size)
        if len(entry) < size:
            break
        tag, kind = _u16(entry, 0, order), _u16(entry, 2, order)
        if tag in (256, 257):
            value_at = 12 if big else 8
            found[tag] = _u16(entry, value_at, order) if kind == 3 else int.from_bytes(
                entry[value_at : value_at + (8 if kind == 16 else 4)], order)
        if len(found) == 2:
            return found[256], found[257]
    return None


SIZED_FORMATS = "PNG, JPEG, BMP, WebP, GIF, TIFF, PNM"
_UNKNOWN = (-1, -1)


def header_size(f: IO[bytes]) -> tuple[int, int] | None:
    """(width, height) an image file declares in its header, read without decoding.

    PNG, JPEG, BMP, WebP, GIF, TIFF (and BigTIFF) and PNM/PFM; ``None`` when the signature is one of these but the
    header is cut short (the decoder then reports the file as corrupt), ``(-1, -1)`` for any other format. The file
    object must be seekable.
    """
    head = f.read(32)
    if head[:1] == b"P" and head[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"F", b"f"):
        return _pnm_size(head + f.read(992))
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return (_u32(head, 16, "big"), _u32(head, 20, "big")) if head[12:16] == b"IHDR" and len(head) >= 24 else None
    if head[:3] == b"\xff\xd8\xff":
        return _jpeg_size(f)
    if head[:2] == b"BM":
        if len(head) < 26:
            return None
        if _u32(head, 14, "little") == 12:  # BITMAPCOREHEADER
            return _u16(head, 18, "little"), _u16(head, 20, "little")
        return abs(int.from_bytes(head[18:22], "little", signed=True)), abs(
            int.from_bytes(head[22:26], "little", signed=True))
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return _u16(head, 6, "little"), _u16(head, 8, "little")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        chunk = head[12:16]
        body = head[20:32]
        if chunk == b"VP8X" and len(body) >= 10:
            return 1 + int.from_bytes(body[4:7], "little"), 1 + int.from_bytes(body[7:10], "little")
        if chunk == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
            bits = int.from_bytes(body[1:5], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        if chunk == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
            return _u16(body, 6, "little") & 0x3FFF, _u16(body, 8, "little") & 0x3FFF
        return None
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _tiff_size(f, head)
    return _UNKNOWN if head else None


def check_pixels(f: IO[bytes], label: str, max_pixels: int | None, *, path: Path | None = None) -> None:
    """Refuse an image whose header declares more than ``max_pixels`` pixels (None or 0: no limit), before decoding.

    A format whose header is not read here is refused too while a limit is set: its decoder could unpack it to any
    size before anything could be checked.
    """
    if not max_pixels:
        return
    try:
        size = header_size(f)
    except (OSError, ValueError):
        size = None
    if size == _UNKNOWN:
        if path is not None and not _cv2().haveImageReader(str(path)):  # OpenCV reads the signature only
            raise DataError(f"{label}: not a readable image (corrupt or unsupported format)")
        raise DataError(f"{label}: not an image format whose size edgecls can check before decoding ({SIZED_FORMATS}); "
                        "pass --max-pixels 0 to decode it without a size limit")
    if size is not None and size[0] * size[1] > max_pixels:
        raise DataError(f"{label}: the image declares {size_text(*size)}, over --max-pixels {limit_text(max_pixels)}; "
                        "not decoded (raise --max-pixels to read it)")


def size_text(width: int, height: int) -> str:
    """``30000x30000 = 900 MP`` (or ``96x64 = 6,144 pixels`` below 1 MP)."""
    n = width * height
    return f"{width}x{height} = {n / 1e6:,.0f} MP" if n >= 1_000_000 else f"{width}x{height} = {n:,} pixels"


def limit_text(max_pixels: int) -> str:
    """``100000000 (100 MP)``: the --max-pixels value as typed, and in megapixels when it is that large."""
    return f"{max_pixels} ({max_pixels / 1e6:g} MP)" if max_pixels >= 1_000_000 else str(max_pixels)


_REDUCED = {2: "IMREAD_REDUCED_COLOR_2", 4: "IMREAD_REDUCED_COLOR_4", 8: "IMREAD_REDUCED_COLOR_8"}


def reduce_min_side(spec: PreprocessSpec) -> int | None:
    """The shorter side a reduced JPEG decode must keep for ``spec``: twice the side the resize brings it to
    (``img_size``, or ``round(img_size / crop_pct)`` for ``shorter``); None when the spec decodes in full."""
    if not spec.jpeg_reduce:
        return None
    side = spec.img_size if spec.resize == Resize.SQUASH else int(round(spec.img_size / spec.crop_pct))
    return 2 * side


def jpeg_scale(width: int, height: int, min_side: int | None) -> int:
    """1, 2, 4 or 8: the largest DCT scale-down (libjpeg decodes to ``ceil(side / scale)``) that leaves the
    shorter side at least ``min_side`` pixels (1 when ``min_side`` is None or the image is not that large)."""
    if not min_side or width <= 0 or height <= 0:
        return 1
    short = min(width, height)
    return next((s for s in (8, 4, 2) if short // s >= min_side), 1)


def decode_image(source: ImageSource, *, name: str | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, min_side: int | None = None) -> np.ndarray:
    """Read an image (path, encoded bytes or an HxWx3 BGR uint8 array) into a BGR uint8 array.

    An encoded image (path or bytes) whose header declares more than ``max_pixels`` pixels (None or 0: no limit) is
    refused before it is decoded (see :func:`check_pixels`), so a small file that unpacks to gigabytes costs nothing;
    an array is already decoded and is not checked. ``min_side``: a JPEG is decoded at 1/2, 1/4 or 1/8 of its size
    (libjpeg's DCT scaling, :func:`jpeg_scale`) when its shorter side stays at least that long; None decodes in full
    (see :func:`reduce_min_side`). Raises :class:`DataError` naming the file when it is missing, too large or cannot
    be decoded.
    """
    import io

    cv2 = _cv2()
    if isinstance(source, np.ndarray):
        img = source
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        elif img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        if img.ndim != 3 or img.shape[2] != 3:
            raise DataError(f"{name or 'image array'}: expected HxWx3 BGR array, got shape {source.shape}")
        if img.dtype != np.uint8:
            raise DataError(f"{name or 'image array'}: expected uint8 pixels, got {img.dtype}")
        return img
    if isinstance(source, (bytes, bytearray)):
        label = name or "image bytes"
        data = bytes(source)
        check_pixels(io.BytesIO(data), label, max_pixels)
    else:
        path = Path(source)
        label = name or str(path)
        try:
            with open(path, "rb") as f:
                check_pixels(f, label, max_pixels, path=path)
                f.seek(0)
                data = f.read()
        except FileNotFoundError:
            raise DataError(f"{label}: image file not found") from None
        except IsADirectoryError:
            raise DataError(f"{label}: a folder, not an image file") from None
        except OSError as exc:
            raise DataError(f"{label}: cannot read image file ({exc.strerror or exc})") from None
    buf = np.frombuffer(data, dtype=np.uint8)
    scale = 1
    if min_side and data[:3] == b"\xff\xd8\xff":
        try:
            size = _jpeg_size(io.BytesIO(data))  # shares ``data``, no copy
        except (OSError, ValueError):
            size = None
        if size is not None:
            scale = jpeg_scale(size[0], size[1], min_side)
    flag = getattr(cv2, _REDUCED[scale]) if scale > 1 else cv2.IMREAD_COLOR
    img = cv2.imdecode(buf, flag) if buf.size else None
    if img is None:
        raise DataError(f"{label}: not a readable image (corrupt or unsupported format)")
    if scale > 1:  # the least full size that decodes to this one
        full = ((img.shape[0] - 1) * scale + 1) * ((img.shape[1] - 1) * scale + 1)
        if max_pixels and full > max_pixels:
            raise DataError(f"{label}: the image is larger than its header says, over --max-pixels "
                            f"{limit_text(max_pixels)}")
    elif max_pixels and img.shape[0] * img.shape[1] > max_pixels:  # a header that understated the size
        raise DataError(f"{label}: the image is {size_text(img.shape[1], img.shape[0])}, over --max-pixels "
                        f"{limit_text(max_pixels)}")
    return img


def _interp(cv2, name: str) -> int:
    return {
        "linear": cv2.INTER_LINEAR,
        "area": cv2.INTER_AREA,
        "cubic": cv2.INTER_CUBIC,
        "nearest": cv2.INTER_NEAREST,
    }[name]


_COEF_BITS = 11  # fixed-point weights, as OpenCV's 8-bit resize (INTER_RESIZE_COEF_BITS)
_MID_SHIFT = 7  # the first pass's sums are rounded to 2^-4 of a level, so the second pass stays below 2^24
_OUT_SHIFT = 2 * _COEF_BITS - _MID_SHIFT


@functools.lru_cache(maxsize=64)
def _cubic_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (n_out, 4) and integer weights (n_out, 4, as float32) of OpenCV's INTER_CUBIC resize of one
    axis (its coordinate map, A = -0.75, replicated border, weights rounded to 2^-11), computed here in numpy's IEEE
    float32 (every operation rounded, none fused), so the same on every machine."""
    f32 = np.float32
    scale = 1.0 / (n_out / n_in)
    pos = ((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5).astype(f32)
    left = np.floor(pos)
    x = (pos - left).astype(f32)
    a, one = f32(-0.75), f32(1)
    x1, y = x + one, one - x
    c0 = ((a * x1 - f32(5) * a) * x1 + f32(8) * a) * x1 - f32(4) * a
    c1 = ((a + f32(2)) * x - (a + f32(3))) * x * x + one
    c2 = ((a + f32(2)) * y - (a + f32(3))) * y * y + one
    c3 = one - c0 - c1 - c2
    weights = np.rint(np.stack([c0, c1, c2, c3], axis=1) * f32(1 << _COEF_BITS)).astype(f32)
    index = np.clip(left.astype(np.int64)[:, None] + np.arange(-1, 3), 0, n_in - 1)
    return index, weights


def _fixed(weights: np.ndarray) -> np.ndarray:
    """Weights that sum to 1 (one row per output) in 2^-11 fixed point, rounded, the largest corrected so that each
    row sums to exactly 2^11 (float32 values, integers)."""
    fixed = np.rint(weights * (1 << _COEF_BITS))
    top = np.argmax(weights, axis=1)
    fixed[np.arange(len(fixed)), top] += (1 << _COEF_BITS) - fixed.sum(axis=1)
    return fixed.astype(np.float32)


@functools.lru_cache(maxsize=64)
def _area_taps(n_in: int, n_out: int, shrink: bool) -> tuple[np.ndarray, np.ndarray]:
    """Indices and fixed-point weights of OpenCV's INTER_AREA along one axis: with ``shrink`` (both axes shrink)
    each output averages the source cells it covers, partial cells by their share (computeResizeAreaTab); else
    OpenCV's area-mode linear interpolation (the coordinate ``floor(d * scale)``, the fraction
    ``(d + 1) - (s + 1) / scale``)."""
    scale = 1.0 / (n_out / n_in)
    if shrink:
        rows: list[list[tuple[int, float]]] = []
        for d in range(n_out):
            f1 = d * scale
            f2 = f1 + scale
            cell = min(scale, n_in - f1)
            s2 = min(math.floor(f2), n_in - 1)
            s1 = min(math.ceil(f1), s2)
            taps = [(s1 - 1, (s1 - f1) / cell)] if s1 - f1 > 1e-3 else []
            taps += [(i, 1.0 / cell) for i in range(s1, s2)]
            if f2 - s2 > 1e-3:
                taps.append((s2, min(min(f2 - s2, 1.0), cell + f1 - s2) / cell))
            rows.append(taps)
        k = max(len(r) for r in rows)
        index = np.zeros((n_out, k), dtype=np.int64)
        weights = np.zeros((n_out, k), dtype=np.float64)
        for d, taps in enumerate(rows):
            for j, (i, w) in enumerate(taps):
                index[d, j], weights[d, j] = i, w
        weights /= weights.sum(axis=1, keepdims=True)
        return index, _fixed(weights)
    d = np.arange(n_out)
    left = np.floor(d * scale).astype(np.int64)
    frac = (d + 1) - (left + 1) / scale
    frac = np.where(frac <= 0, 0.0, frac - np.floor(frac))
    frac = np.where(left + 1 >= n_in, 0.0, frac)
    left = np.clip(left, 0, n_in - 1)
    index = np.stack([left, np.minimum(left + 1, n_in - 1)], axis=1)
    return index, _fixed(np.stack([1.0 - frac, frac], axis=1))


_scratch = threading.local()  # per-thread buffers of exact_resize, by shape (fresh ones cost page faults each call)


def _buffer(shape: tuple[int, ...], dtype: Any, slot: str) -> np.ndarray:
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None or len(bufs) > 24:  # images of many sizes: keep the memory bounded
        bufs = _scratch.bufs = {}
    key = (slot, shape, np.dtype(dtype).str)
    buf = bufs.get(key)
    if buf is None:
        buf = bufs[key] = np.empty(shape, dtype=dtype)
    return buf


def _taps_rows(a: np.ndarray, index: np.ndarray, weights: np.ndarray, slot: str) -> np.ndarray:
    """sum_k weights[:, k] * a[index[:, k]] along axis 0 of an (H, W, C) array, in float32: exact while every
    partial sum is an integer below 2^24, whatever order the matrix product adds them in (a view of a buffer)."""
    n_out, k = index.shape
    flat = a.reshape(a.shape[0], -1)
    gathered = np.take(flat, index.ravel(), axis=0, out=_buffer((n_out * k, flat.shape[1]), a.dtype, slot + "g"))
    if a.dtype != np.float32:
        wide = _buffer(gathered.shape, np.float32, slot + "f")
        np.copyto(wide, gathered)
        gathered = wide
    out = _buffer((n_out, 1, flat.shape[1]), np.float32, slot + "o")
    np.matmul(weights[:, None, :], gathered.reshape(n_out, k, -1), out=out)
    return out.reshape(n_out, *a.shape[1:])


def exact_resize(img: np.ndarray, width: int, height: int, interpolation: str = "cubic",
                 dst: np.ndarray | None = None) -> np.ndarray:
    """Resize an HxWxC uint8 image (``cubic`` or ``area``) in integer arithmetic, bit for bit the same everywhere.

    OpenCV's kernel and coordinates for the interpolation (INTER_CUBIC: A = -0.75, replicated border; INTER_AREA:
    the covered cells' shares, or its area-mode linear weights when an axis grows) with 11-bit weights, as its 8-bit
    resize; the two separable passes' sums kept exact (integers below 2^24 in float32, so no summation order, SIMD
    width or fused multiply-add can change them), the first pass rounded to 1/16 of a level, the result to the
    nearest level. It differs from OpenCV's own uint8 resize by one level on a few percent of the values (OpenCV's
    SIMD rounding, which differs between x86 and ARM itself) and costs several times as much.
    """
    cv2 = _cv2()
    h, w = img.shape[:2]
    if interpolation == "cubic":
        rows, cols = _cubic_taps(h, height), _cubic_taps(w, width)
    elif interpolation == "area":
        shrink = h >= height and w >= width
        rows, cols = _area_taps(h, height, shrink), _area_taps(w, width, shrink)
    else:
        raise ConfigError(f"exact_resize: interpolation must be cubic or area, got {interpolation!r}")
    mid = _taps_rows(img, *rows, "a")  # vertical, then horizontal (always this order)
    mid *= np.float32(2.0 ** -_MID_SHIFT)
    np.rint(mid, out=mid)
    # the horizontal pass over the rows of the transposed image (OpenCV's transpose: a copy, exact)
    across = cv2.transpose(mid, dst=_buffer((w, height, mid.shape[2]), np.float32, "t"))
    acc = cv2.transpose(_taps_rows(across, *cols, "b"), dst=_buffer((height, width, mid.shape[2]), np.float32, "u"))
    acc += np.float32(1 << (_OUT_SHIFT - 1))
    acc *= np.float32(2.0 ** -_OUT_SHIFT)
    np.floor(acc, out=acc)
    np.clip(acc, 0, 255, out=acc)
    if dst is None:
        dst = np.empty((height, width, img.shape[2]), dtype=np.uint8)
    np.copyto(dst, acc, casting="unsafe")
    return dst


def resize_pixels(img: np.ndarray, width: int, height: int, spec: PreprocessSpec,
                  dst: np.ndarray | None = None) -> np.ndarray:
    """Resize an HxWx3 uint8 image to ``width`` x ``height`` with the spec's interpolation and
    :data:`RESIZE_NUMERICS` (into ``dst``, a uint8 (height, width, 3) array, when given)."""
    cv2 = _cv2()
    if spec.resize_numerics == NATIVE or spec.interpolation == "nearest":
        return cv2.resize(img, (width, height), dst=dst, interpolation=_interp(cv2, spec.interpolation))
    if spec.interpolation == "linear":
        return cv2.resize(img, (width, height), dst=dst, interpolation=cv2.INTER_LINEAR_EXACT)
    return exact_resize(img, width, height, spec.interpolation, dst)


def portability_note(spec: PreprocessSpec, machine: str | None = None) -> str | None:
    """One line on why FP32 probabilities differ from an x86 reference on this (non-x86) machine, or None: the
    spec resizes with OpenCV's 8-bit kernels (``resize_numerics: native``, every bundle made before the field),
    which round differently on ARM than on x86."""
    import platform

    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64", "i386", "i686", "x86") or spec.resize_numerics != NATIVE \
            or spec.interpolation == "nearest":
        return None
    return (f"this bundle resizes with OpenCV's 8-bit {spec.interpolation} kernels (preprocess resize_numerics: "
            f"native), which round one 8-bit level differently on {machine} than on x86, so FP32 probabilities differ "
            "from the x86 reference by up to ~1e-2 (over the 1e-4 FP32 budget; INT8 budgets hold); re-export with "
            "`edgecls export --resize-numerics portable` for the same pixels on both")


def resized_shape(spec: PreprocessSpec, h: int, w: int) -> tuple[int, int]:
    """The (height, width) an ``h`` x ``w`` image is resized to before the centre crop: the input size itself for
    ``squash``, else the short side at ``img_size / crop_pct`` with the aspect ratio kept."""
    size = spec.img_size
    if spec.resize == Resize.SQUASH:
        return size, size
    short = int(round(size / spec.crop_pct))
    if h <= w:
        return short, max(short, int(round(w * short / h)))
    return max(short, int(round(h * short / w))), short

def resize_image(img: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Apply the spec's resize policy (and centre crop) to an HxWxC uint8 image."""
    size = spec.img_size
    h, w = img.shape[:2]
    if spec.resize == Resize.SQUASH:
        if (h, w) == (size, size):
            return img
        return resize_pixels(img, size, size, spec)
    new_h, new_w = resized_shape(spec, h, w)
    if (new_h, new_w) != (h, w):
        img = resize_pixels(img, new_w, new_h, spec)
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    return img[top : top + size, left : left + size]


def _norm_constants(spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """(mean in pixel units, scale / std), float32, shaped (3, 1, 1) to broadcast over CHW."""
    mean = np.asarray(spec.mean, dtype=np.float32) / np.float32(spec.scale)
    inv_std = np.float32(spec.scale) / np.asarray(spec.std, dtype=np.float32)
    return mean.reshape(3, 1, 1), inv_std.reshape(3, 1, 1)


def _normalize_into(chw: np.ndarray, mean: np.ndarray, inv_std: np.ndarray, out: np.ndarray) -> np.ndarray:
    # uint8 -> float32 is exact, so (x - mean) * inv_std written in place equals the allocating expression bit for bit
    np.subtract(chw, mean, out=out)
    np.multiply(out, inv_std, out=out)
    return out


def normalize(rgb: np.ndarray, spec: PreprocessSpec, *, out: np.ndarray | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB -> 3xHxW float32, scaled and normalised with the spec's mean and std (into ``out`` when
    given: a C-contiguous float32 (3, H, W) array, e.g. one row of a batch)."""
    mean, inv_std = _norm_constants(spec)
    if out is None:
        out = np.empty((3, *rgb.shape[:2]), dtype=np.float32)
    return _normalize_into(rgb.transpose(2, 0, 1), mean, inv_std, out)


class Preprocessor:
    """:func:`preprocess` with reused buffers: the resize writes into a buffer kept between calls, and the
    normalised tensor into ``out`` (a row of a batch the caller keeps), so a stream of frames allocates nothing per
    frame after the first. The numbers are :func:`preprocess`'s, bit for bit (it is this class).

    ``output``: what each call makes, one of :data:`INPUT_KINDS`: the float32 (3, S, S) tensor (default), or the
    resized and cropped uint8 (S, S, 3) pixels in BGR or RGB for an artifact that normalises inside its graph (the
    same resize, so the graph's normalisation of them equals the float path's).

    Not thread-safe: one per thread (the decode pools keep one in a ``threading.local``).
    """

    def __init__(self, spec: PreprocessSpec, *, output: str = FLOAT_INPUT) -> None:
        self.spec = spec
        self.output = check_input_kind(output, where="Preprocessor output")
        self._mean, self._inv_std = _norm_constants(spec)
        self._min_side = reduce_min_side(spec)
        self._resized: dict[tuple[int, int], np.ndarray] = {}
        self._planes = np.empty((3, spec.img_size, spec.img_size), dtype=np.uint8)

    def __call__(self, source: ImageSource, out: np.ndarray | None = None, *, name: str | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """One image -> float32 (3, img_size, img_size) (or uint8 (img_size, img_size, 3) pixels, see ``output``),
        written into ``out`` when given (and returned)."""
        bgr = decode_image(source, name=name, max_pixels=max_pixels, min_side=self._min_side)
        return self.from_bgr(self.resize(bgr), out)

    def from_bgr(self, small: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """A resized and cropped BGR uint8 (S, S, 3) image -> this preprocessor's output (into ``out``)."""
        want = input_shape(self.spec, self.output, 1)[1:]
        dtype = input_dtype(self.output)
        if out is None:
            out = np.empty(want, dtype=dtype)
        elif out.shape != want or out.dtype != dtype:
            raise ConfigError(f"out must be a {dtype} {want} array, got {out.dtype} {out.shape}")
        cv2 = _cv2()
        if self.output == PIXELS_BGR:
            np.copyto(out, small)
            return out
        if self.output == PIXELS_RGB:
            return cv2.cvtColor(small, cv2.COLOR_BGR2RGB, dst=out)
        # BGR -> RGB and HWC -> CHW at once: each colour plane copied out (OpenCV, fast) into a reused buffer
        for c in range(3):
            cv2.extractChannel(small, 2 - c, self._planes[c])
        return _normalize_into(self._planes, self._mean, self._inv_std, out)

    def resize(self, img: np.ndarray) -> np.ndarray:
        """:func:`resize_image` into a buffer reused while the output size stays the same (a view of it)."""
        spec = self.spec
        size = spec.img_size
        h, w = img.shape[:2]
        new_h, new_w = resized_shape(spec, h, w)
        if (new_h, new_w) != (h, w):
            buf = self._resized.get((new_h, new_w))
            if buf is None:
                if len(self._resized) >= 4:  # images of many sizes: keep the memory bounded
                    self._resized.clear()
                buf = self._resized[(new_h, new_w)] = np.empty((new_h, new_w, 3), dtype=np.uint8)
            img = resize_pixels(img, new_w, new_h, spec, dst=buf)
        if spec.resize == Resize.SQUASH:
            return img
        top = (new_h - size) // 2
        left = (new_w - size) // 2
        return img[top : top + size, left : left + size]


def pixels_to_tensor(pixels: np.ndarray, spec: PreprocessSpec, kind: str) -> np.ndarray:
    """uint8 pixels (N, S, S, 3) in ``kind``'s channel order -> the float32 (N, 3, S, S) tensor :func:`preprocess`
    makes from the same image, bit for bit (what an artifact's in-graph normalisation computes)."""
    mean, inv_std = _norm_constants(spec)
    order = (2, 1, 0) if kind == PIXELS_BGR else (0, 1, 2)
    out = np.empty((pixels.shape[0], 3, *pixels.shape[1:3]), dtype=np.float32)
    for i in range(pixels.shape[0]):
        planes = np.ascontiguousarray(pixels[i].transpose(2, 0, 1)[list(order)])
        _normalize_into(planes, mean, inv_std, out[i])
    return out


def tensor_to_pixels(tensor: np.ndarray, spec: PreprocessSpec, kind: str) -> np.ndarray:
    """The inverse of :func:`pixels_to_tensor`: float32 (N, 3, S, S) -> uint8 (N, S, S, 3) pixels of ``kind``,
    rounded (exact for a tensor this module made; values outside the pixel range are clipped)."""
    mean, inv_std = _norm_constants(spec)
    values = np.rint(np.asarray(tensor, dtype=np.float32) / inv_std + mean)
    pixels = np.clip(values, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(pixels[..., ::-1] if kind == PIXELS_BGR else pixels)


def preprocess(source: ImageSource, spec: PreprocessSpec, *, name: str | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode (if needed), convert BGR to RGB, resize/crop and normalise one image -> float32 CHW.

    A JPEG is decoded at a reduced size when ``spec.jpeg_reduce`` allows (see :class:`PreprocessSpec`).
    ``max_pixels``: see :func:`decode_image`. :class:`Preprocessor` is the same with reused buffers.
    """
    return Preprocessor(spec)(source, name=name, max_pixels=max_pixels)


def preprocess_batch(sources: Sequence[ImageSource], spec: PreprocessSpec) -> np.ndarray:
    """Preprocess several images into one float32 NCHW array."""
    if not sources:
        return np.zeros((0, 3, spec.img_size, spec.img_size), dtype=np.float32)
    return np.stack([preprocess(s, spec) for s in sources])


def preprocess_paths(paths: Sequence[Path], spec: PreprocessSpec, *, what: str,
                     output: str = FLOAT_INPUT) -> np.ndarray:
    """Decode and preprocess image files into one float32 NCHW array (or uint8 NHWC pixels, see
    :class:`Preprocessor`'s ``output``); a :class:`DataError` naming ``what`` (the calibration, the parity check, the
    benchmark) and the file when one cannot be read."""
    out = new_input(spec, output, len(paths))
    pre = Preprocessor(spec, output=output)
    for i, path in enumerate(paths):
        try:
            pre(path, out[i])
        except DataError as exc:
            raise DataError(f"{what}: {exc}") from None
    return out
