"""A reproducible multi-label scene dataset: simple shapes on textured backgrounds.

Each image holds a random subset of :data:`SYNTH_CLASSES` (mostly one to three kinds, sometimes none), each kind
drawn one to three times with a random colour that contrasts with the background, size, position, rotation and
fill. It is made to be learnable: an ImageNet-pretrained backbone fine-tuned on a few hundred images reaches a high
mAP within minutes on a CPU, which makes it the embedded dataset for tests, examples and smoke runs.

Same arguments give byte-identical files: every random draw comes from ``numpy.random.default_rng`` seeded with
``(seed, image index)``, so the first images are also the same whatever ``n`` is.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgecls.errors import ConfigError, DataError

__all__ = ["SYNTH_CLASSES", "generate_synthetic"]

SYNTH_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")

_KINDS_PER_IMAGE = (0.06, 0.40, 0.34, 0.15, 0.05)  # probability of 0, 1, 2, 3, 4 object kinds
_INSTANCES = (0.75, 0.20, 0.05)  # probability of 1, 2, 3 instances of a kind
_SIZE_RANGE = (0.15, 0.35)  # object diameter as a fraction of the image side
_JPEG_QUALITY = 92
_SHIFT = 4  # sub-pixel bits for polygon and circle drawing


def _cv2():
    from edgecls._deps import require

    return require("cv2", extra="runtime", package="opencv-python-headless")


def generate_synthetic(
    out: str | Path,
    *,
    n: int = 600,
    seed: int = 0,
    img_size: int = 192,
    unknown_fraction: float = 0.02,
    overwrite: bool = False,
) -> Path:
    """Write ``n`` synthetic images to ``out/images/img_00000.jpg ...`` and their labels to ``out/labels.csv``.

    ``labels.csv`` has the header ``filename,circle,square,triangle,star,cross,ring`` and one row of 1/0 values per
    image, with about ``unknown_fraction`` of the label cells replaced by ``NA``. The folder is written to a
    temporary folder beside ``out`` and renamed into place, so ``out`` is never left half-written.

    Args:
        out: Folder to create.
        n: Number of images.
        seed: Seed; the same seed (and arguments) gives byte-identical files.
        img_size: Side of the square images in pixels (at least 32).
        unknown_fraction: Share of label cells written as ``NA`` (unknown).
        overwrite: Replace ``out`` when it exists, is not empty and is a dataset this function made (its exact
            layout: ``labels.csv`` with the header above and ``images/img_NNNNN.jpg``, nothing else); any other
            folder, the current folder (or one above it), the home folder and the root are refused.

    Returns:
        The path of ``labels.csv``.

    Raises:
        DataError: ``out`` exists and is not empty (without ``overwrite``, or not a synthetic dataset) or is a file.
        ConfigError: An argument is out of range.
    """
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    if img_size < 32:
        raise ConfigError(f"img_size must be at least 32, got {img_size}")
    if not 0.0 <= unknown_fraction < 1.0:
        raise ConfigError(f"unknown_fraction must be in [0, 1), got {unknown_fraction}")
    out = Path(os.path.abspath(os.path.expanduser(str(out))))
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is a file; choose a folder for the synthetic dataset")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"{out}: folder exists and is not empty; choose a new folder or pass --force to replace "
                            "a dataset this command made")
        _check_replaceable(out)

    cv2 = _cv2()
    from edgecls._io import remove_stale_temps, temp_prefix

    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out.parent, [out.name], (".tmp", ".old"))  # what a killed run over ``out`` left
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        images = tmp / "images"
        images.mkdir()
        width = max(5, len(str(n - 1)))
        rows = [",".join(("filename",) + SYNTH_CLASSES)]
        for i in range(n):
            rng = np.random.default_rng((seed, i))
            image, labels = _render(rng, img_size, cv2)
            name = f"img_{i:0{width}d}.jpg"
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
            if not ok:  # pragma: no cover - OpenCV always encodes uint8 BGR images
                raise DataError(f"{name}: OpenCV could not encode the image")
            (images / name).write_bytes(buf.tobytes())
            unknown = rng.random(len(SYNTH_CLASSES)) < unknown_fraction
            values = ["NA" if u else str(int(v)) for v, u in zip(labels, unknown)]
            rows.append(",".join([name] + values))
        (tmp / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        _move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out / "labels.csv"


_IMAGE_NAME = re.compile(r"img_\d{5,}\.jpg")


def _check_replaceable(out: Path) -> None:
    """``--force`` replaces only a folder this command made: ``labels.csv`` with the synthetic header and an
    ``images/`` folder of ``img_NNNNN.jpg`` files, nothing else; and never the current folder, one above it, the home
    folder or the root. Raises :class:`DataError` saying why otherwise."""
    refuse = f"{out}: refusing to replace it with --force"
    if out.is_symlink():
        raise DataError(f"{refuse}: it is a symbolic link; remove the link or choose another folder")
    real = Path(os.path.realpath(out))
    cwd = Path(os.path.realpath(os.getcwd()))
    home = Path(os.path.realpath(os.path.expanduser("~")))
    if real == cwd or real in cwd.parents:
        raise DataError(f"{refuse}: it is the current folder or holds it; choose another folder")
    if real == home or real == Path(real.anchor):
        raise DataError(f"{refuse}: it is {'the home folder' if real == home else 'the root folder'}")
    header = ",".join(("filename",) + SYNTH_CLASSES)
    names = sorted(p.name for p in out.iterdir())
    if names != ["images", "labels.csv"]:
        extra = [n for n in names if n not in ("images", "labels.csv")]
        why = f"it also holds {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}" if extra else \
            "it has no labels.csv and images/"
        raise DataError(f"{refuse}: it is not a dataset made by `edgecls data synth` ({why}); delete it yourself "
                        "or choose another folder")
    labels, images = out / "labels.csv", out / "images"
    try:
        with open(labels, encoding="utf-8") as f:
            first = f.readline(len(header) + 2).rstrip("\r\n")
    except (OSError, UnicodeDecodeError):
        first = None
    if labels.is_symlink() or not labels.is_file() or first != header:
        raise DataError(f"{refuse}: {labels} is not the synthetic label file (its header is not {header}); delete "
                        "the folder yourself or choose another folder")
    if images.is_symlink() or not images.is_dir():
        raise DataError(f"{refuse}: {images} is not a folder; delete it yourself or choose another folder")
    for entry in images.iterdir():
        if not _IMAGE_NAME.fullmatch(entry.name) or entry.is_symlink() or not entry.is_file():
            raise DataError(f"{refuse}: {entry} is not one of its images (img_NNNNN.jpg); delete the folder yourself "
                            "or choose another folder")


def _move_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.rename(tmp, out)
        return
    from edgecls._io import temp_prefix

    old = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), suffix=".old", dir=out.parent))
    old.rmdir()
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# drawing


def _render(rng: np.random.Generator, size: int, cv2) -> tuple[np.ndarray, np.ndarray]:
    """One BGR uint8 image and its 0/1 label vector."""
    image = _background(rng, size, cv2)
    k = len(SYNTH_CLASSES)
    num_kinds = int(rng.choice(len(_KINDS_PER_IMAGE), p=_KINDS_PER_IMAGE))
    kinds = rng.choice(k, size=num_kinds, replace=False) if num_kinds else np.zeros(0, dtype=np.int64)
    instances = [int(kind) for kind in kinds for _ in range(1 + int(rng.choice(len(_INSTANCES), p=_INSTANCES)))]
    instances = [instances[j] for j in rng.permutation(len(instances))]
    placed: list[tuple[float, float, float]] = []
    for kind in instances:
        cx, cy, r = _place(rng, size, placed)
        placed.append((cx, cy, r))
        color = _contrasting_color(rng, image, cx, cy, r)
        angle = float(rng.uniform(0.0, 2.0 * math.pi))
        filled = bool(rng.random() < 0.75)
        _draw(cv2, image, SYNTH_CLASSES[kind], cx, cy, r, angle, color, filled, rng)
    noise = rng.normal(0.0, float(rng.uniform(2.0, 6.0)), image.shape)
    image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    labels = np.zeros(k, dtype=np.int64)
    labels[kinds] = 1
    return image, labels


def _place(rng: np.random.Generator, size: int, placed: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Centre and radius of a new object, inside the image and not hiding much of the others."""
    r = 0.5 * size * float(rng.uniform(*_SIZE_RANGE))
    cx = cy = size / 2
    for attempt in range(40):
        if attempt and attempt % 10 == 0:
            r *= 0.85
        margin = r + 1.0
        cx = float(rng.uniform(margin, size - margin))
        cy = float(rng.uniform(margin, size - margin))
        if all(math.hypot(cx - x, cy - y) >= 0.8 * (r + q) for x, y, q in placed):
            break
    return cx, cy, r


def _luma(bgr: np.ndarray) -> float:
    b, g, r = (float(v) for v in bgr)
    return 0.114 * b + 0.587 * g + 0.299 * r


def _contrasting_color(
    rng: np.random.Generator, image: np.ndarray, cx: float, cy: float, r: float
) -> tuple[int, int, int]:
    h, w = image.shape[:2]
    y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 1)
    x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 1)
    bg = image[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
    bg_luma = _luma(bg)
    for _ in range(16):
        color = rng.integers(0, 256, size=3)
        if abs(_luma(color) - bg_luma) >= 70.0:
            return int(color[0]), int(color[1]), int(color[2])
    return (0, 0, 0) if bg_luma >= 128 else (255, 255, 255)


def _background(rng: np.random.Generator, size: int, cv2) -> np.ndarray:
    """A textured background: noise, gradient, stripes, checker or smooth blobs, with moderate contrast."""
    kind = int(rng.integers(5))
    base = rng.uniform(20, 235, size=3)
    other = np.clip(base + rng.uniform(-60, 60, size=3), 0, 255)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 0:  # coloured noise, slightly blurred
        img = base + rng.normal(0.0, float(rng.uniform(8, 20)), (size, size, 3))
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), float(rng.uniform(0.5, 1.5)))
    elif kind == 1:  # linear gradient between two colours
        theta = float(rng.uniform(0, 2 * math.pi))
        t = (math.cos(theta) * xx + math.sin(theta) * yy) / size
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = base + t[..., None] * (other - base)
    elif kind == 2:  # stripes at a random angle, soft or hard
        theta = float(rng.uniform(0, math.pi))
        period = float(rng.uniform(6, 24)) * size / 192
        wave = np.sin(2 * math.pi * (math.cos(theta) * xx + math.sin(theta) * yy) / period)
        t = (wave > 0).astype(np.float32) if rng.random() < 0.5 else 0.5 + 0.5 * wave
        img = base + t[..., None] * (other - base)
    elif kind == 3:  # checkerboard of small cells
        cell = max(3, int(rng.uniform(5, 16) * size / 192))
        t = ((xx // cell + yy // cell) % 2).astype(np.float32)
        img = base + t[..., None] * (other - base)
    else:  # smooth blobs: a coarse random grid upsampled
        grid = rng.uniform(-1, 1, size=(int(rng.integers(3, 7)), int(rng.integers(3, 7)), 3)).astype(np.float32)
        t = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        img = base + t * float(rng.uniform(25, 50))
    return np.clip(img, 0, 255).astype(np.uint8)


def _polygon(kind: str, r: float, angle: float) -> np.ndarray:
    """Vertices (x, y) around the origin for a polygonal kind, circumradius ``r``, rotated by ``angle``."""
    if kind == "square":
        pts = [(math.cos(a), math.sin(a)) for a in (math.pi / 4 + j * math.pi / 2 for j in range(4))]
    elif kind == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2 + j * 2 * math.pi / 3 for j in range(3))]
    elif kind == "star":
        pts = []
        for j in range(10):
            a = -math.pi / 2 + j * math.pi / 5
            rad = 1.0 if j % 2 == 0 else 0.42
            pts.append((rad * math.cos(a), rad * math.sin(a)))
    elif kind == "cross":
        a = 0.3  # half the arm width, as a fraction of the arm length
        pts = [
            (a, -1),
            (a, -a),
            (1, -a),
            (1, a),
            (a, a),
            (a, 1),
            (-a, 1),
            (-a, a),
            (-1, a),
            (-1, -a),
            (-a, -a),
            (-a, -1),
        ]
    else:  # pragma: no cover - only called for polygon kinds
        raise ValueError(kind)
    p = np.asarray(pts, dtype=np.float64) * r
    c, s = math.cos(angle), math.sin(angle)
    return p @ np.array([[c, s], [-s, c]])


def _draw(
    cv2,
    image: np.ndarray,
    kind: str,
    cx: float,
    cy: float,
    r: float,
    angle: float,
    color: tuple[int, int, int],
    filled: bool,
    rng: np.random.Generator,
) -> None:
    scale = 1 << _SHIFT
    center = (round(cx * scale), round(cy * scale))
    thickness = max(2, round(r * float(rng.uniform(0.16, 0.24))))
    if kind == "circle":  # always filled: an outlined circle would be a ring
        cv2.circle(image, center, round(r * scale), color, -1, cv2.LINE_AA, _SHIFT)
        return
    if kind == "ring":  # always an outline, a clearly visible band
        band = max(2, round(r * float(rng.uniform(0.22, 0.35))))
        cv2.circle(image, center, round((r - band / 2) * scale), color, band, cv2.LINE_AA, _SHIFT)
        return
    pts = _polygon(kind, r, angle) + np.array([cx, cy])
    if not filled:  # keep the outline inside the object's extent
        pts = _polygon(kind, r - thickness / 2, angle) + np.array([cx, cy])
    poly = [np.round(pts * scale).astype(np.int32).reshape(-1, 1, 2)]
    if filled:
        cv2.fillPoly(image, poly, color, cv2.LINE_AA, _SHIFT)
    else:
        cv2.polylines(image, poly, True, color, thickness, cv2.LINE_AA, _SHIFT)
