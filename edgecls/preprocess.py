"""Evaluation preprocessing: the one implementation used by validation, calibration, parity and the runtime.

Only numpy and OpenCV are used here, so the runtime can rebuild exactly what training saw at evaluation time
from the :class:`PreprocessSpec` stored in every checkpoint and bundle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from edgecls.errors import ConfigError, DataError

ImageSource = Union[str, Path, bytes, bytearray, np.ndarray]

RESIZE_MODES = ("squash", "shorter")
INTERPOLATIONS = ("linear", "area", "cubic", "nearest")
# the image files a dataset folder and the runtime's file listing pick up (edgecls.data uses this one too)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes the model's input tensor.

    ``resize="squash"`` resizes the whole image to ``img_size`` x ``img_size`` (nothing is cut off, which suits
    multi-label data where an object may sit at the border). ``resize="shorter"`` resizes the shorter side to
    ``round(img_size / crop_pct)`` keeping the aspect ratio, then takes a centre crop of ``img_size``.
    Pixels are scaled by ``scale`` (1/255 gives [0, 1]) then normalised with ``mean`` and ``std`` per RGB channel.
    """

    img_size: int = 224
    resize: str = "squash"
    crop_pct: float = 1.0
    interpolation: str = "linear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    scale: float = 1.0 / 255.0
    color: str = "RGB"
    layout: str = "NCHW"

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
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown preprocessing field(s) {unknown}; valid: {sorted(known)}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def replace(self, **changes: Any) -> "PreprocessSpec":
        return PreprocessSpec.from_dict({**self.to_dict(), **changes})


def _cv2():
    from edgecls._deps import require

    return require("cv2", extra="runtime", package="opencv-python-headless")


def decode_image(source: ImageSource, *, name: str | None = None) -> np.ndarray:
    """Read an image (path, encoded bytes or an HxWx3 BGR uint8 array) into a BGR uint8 array.

    Raises :class:`DataError` naming the file when it is missing or cannot be decoded.
    """
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
        buf = np.frombuffer(bytes(source), dtype=np.uint8)
        label = name or "image bytes"
    else:
        path = Path(source)
        label = name or str(path)
        try:
            buf = np.fromfile(str(path), dtype=np.uint8)
        except FileNotFoundError:
            raise DataError(f"{label}: image file not found") from None
        except OSError as exc:
            raise DataError(f"{label}: cannot read image file ({exc.strerror or exc})") from None
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise DataError(f"{label}: not a readable image (corrupt or unsupported format)")
    return img


def _interp(cv2, name: str) -> int:
    return {
        "linear": cv2.INTER_LINEAR,
        "area": cv2.INTER_AREA,
        "cubic": cv2.INTER_CUBIC,
        "nearest": cv2.INTER_NEAREST,
    }[name]


def resize_image(img: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Apply the spec's resize policy (and centre crop) to an HxWxC uint8 image."""
    cv2 = _cv2()
    size = spec.img_size
    interp = _interp(cv2, spec.interpolation)
    h, w = img.shape[:2]
    if spec.resize == "squash":
        if (h, w) == (size, size):
            return img
        return cv2.resize(img, (size, size), interpolation=interp)
    short = int(round(size / spec.crop_pct))
    if h <= w:
        new_h, new_w = short, max(short, int(round(w * short / h)))
    else:
        new_h, new_w = max(short, int(round(h * short / w))), short
    if (new_h, new_w) != (h, w):
        img = cv2.resize(img, (new_w, new_h), interpolation=interp)
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    return img[top : top + size, left : left + size]


def normalize(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """HxWx3 uint8 RGB -> 3xHxW float32, scaled and normalised with the spec's mean and std."""
    mean = np.asarray(spec.mean, dtype=np.float32) / np.float32(spec.scale)
    inv_std = np.float32(spec.scale) / np.asarray(spec.std, dtype=np.float32)
    out = (rgb.astype(np.float32) - mean) * inv_std
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def preprocess(source: ImageSource, spec: PreprocessSpec, *, name: str | None = None) -> np.ndarray:
    """Decode (if needed), convert BGR to RGB, resize/crop and normalise one image -> float32 CHW."""
    cv2 = _cv2()
    bgr = decode_image(source, name=name)
    rgb = cv2.cvtColor(resize_image(bgr, spec), cv2.COLOR_BGR2RGB)
    return normalize(rgb, spec)


def preprocess_batch(sources: Sequence[ImageSource], spec: PreprocessSpec) -> np.ndarray:
    """Preprocess several images into one float32 NCHW array."""
    if not sources:
        return np.zeros((0, 3, spec.img_size, spec.img_size), dtype=np.float32)
    return np.stack([preprocess(s, spec) for s in sources])
