"""What an export works from (:class:`ExportContext`, the ``ctx`` every target's build receives): the model,
calibration and validation images (through the shared preprocessing) and the PyTorch reference logits, each made once
and cached. A target caches what it derives for the others in the same place (the FP32 ONNX every other artifact
is made from: :func:`edgecls.export.targets.onnx.float_onnx`).

Images are decoded and preprocessed once by :mod:`edgecls.preprocess` (the one implementation training evaluation,
the runtime and the parity check share), so PyTorch and every backend see the very same float32 arrays.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgecls.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from edgecls.export.config import ExportConfig

log = logging.getLogger("edgecls.export")

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
_BATCH = 32


@dataclass
class ImageSet:
    """Preprocessed images of one split (or a sample of it) with their labels.

    Attributes:
        split: Split name.
        names: Image paths relative to the dataset folder (how the parity check finds them again).
        images: float32 ``(N, 3, H, W)``.
        pixels: The same images as uint8 BGR pixels ``(N, H, W, 3)`` before normalisation (what a pixel-input
            artifact takes; ``images`` is made from them, so both say the same bit for bit).
        targets: float32 ``(N, K)``.
        known: bool ``(N, K)``.
        total: Images in the split before sampling.
        seed: Seed of the sample (None when the whole split is used).
    """

    split: str
    names: list[str]
    images: np.ndarray
    targets: np.ndarray
    known: np.ndarray
    total: int
    seed: int | None = None
    skipped: int = 0
    pixels: np.ndarray | None = None

    def inputs(self, kind: str) -> np.ndarray:
        """The images as an artifact taking ``kind`` (edgecls.preprocess.INPUT_KINDS) takes them."""
        from edgecls.preprocess import PIXELS_RGB, is_pixels

        if not is_pixels(kind):
            return self.images
        if self.pixels is None:
            raise DataError(f"the {self.split} images were loaded without their pixels")
        return np.ascontiguousarray(self.pixels[..., ::-1]) if kind == PIXELS_RGB else self.pixels

    def __len__(self) -> int:
        return len(self.names)

    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.names).encode()).hexdigest()[:16]

    def summary(self, *, method: str) -> dict[str, Any]:
        """What the manifest records about a calibration set."""
        return {"split": self.split, "images": len(self), "of": self.total, "seed": self.seed, "method": method,
                "preprocessing": "edgecls.preprocess (shared)", "images_sha256": self.fingerprint()}


def dataset_root(data: str | Path) -> Path:
    path = Path(os.path.abspath(os.path.expanduser(str(data))))
    return path if path.is_dir() else path.parent


def relative_names(paths: Sequence[Path], root: Path) -> list[str]:
    return [Path(os.path.relpath(p, root)).as_posix() for p in paths]


def load_images(ckpt: Any, data: str | Path, split: str, *, limit: int | None = None, seed: int = 0,
                purpose: str) -> ImageSet:
    """Load ``split`` of ``data`` exactly as the checkpoint's training run did and preprocess it.

    ``limit`` keeps a seeded random sample of that many images (sorted back into file order).

    Raises:
        DataError: the split has no readable image.
    """
    from edgecls.data import load_from_spec
    from edgecls.preprocess import PIXELS_BGR, pixels_to_tensor, preprocess_paths

    part = load_from_spec(ckpt.data_spec, data=data, class_names=ckpt.class_names, owner="checkpoint").split(split)
    samples = list(part.samples)
    if not samples:
        raise DataError(
            f"{data}: the {split!r} split has no readable images, and {purpose} needs real images; "
            "check the folder (or pick another split)"
        )
    total = len(samples)
    used_seed = None
    if limit is not None and limit < total:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(total, size=int(limit), replace=False))
        samples = [samples[i] for i in keep]
        used_seed = seed
    root = dataset_root(data)
    paths = [s.path for s in samples]
    pixels = preprocess_paths(paths, ckpt.preprocess, what=purpose, output=PIXELS_BGR)
    images = pixels_to_tensor(pixels, ckpt.preprocess, PIXELS_BGR)  # what preprocess() makes, bit for bit
    targets = np.stack([s.target for s in samples]).astype(np.float32)
    known = np.stack([s.known for s in samples]).astype(bool)
    return ImageSet(split, relative_names(paths, root), images, targets, known, total, used_seed, pixels=pixels)


def torch_logits(model: Any, images: np.ndarray) -> np.ndarray:
    """FP32 PyTorch logits for preprocessed images, on the CPU."""
    import torch

    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(images), _BATCH):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(images[i : i + _BATCH]))).float().numpy())
    return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, 0), np.float32)


@dataclass
class ExportContext:
    """Shared, lazily computed inputs of one export; targets read what they need from here.

    Attributes:
        config: The export configuration.
        checkpoint: The loaded :class:`~edgecls.train.checkpoint.Checkpoint`.
        model: The PyTorch model (eval mode, CPU) that every artifact must agree with.
        workdir: Scratch folder outside the bundle (the FP32 ONNX and other intermediates live here).
    """

    config: "ExportConfig"
    checkpoint: Any
    model: Any
    workdir: Path
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def preprocess(self) -> Any:
        return self.checkpoint.preprocess

    @property
    def img_size(self) -> int:
        return int(self.checkpoint.preprocess.img_size)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.checkpoint.class_names)

    def once(self, key: str, make: Any) -> Any:
        """``make()``'s result, made on the first call for ``key`` and cached for this export."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def calibration(self) -> ImageSet:
        """``calib_size`` images (seeded sample) of the calibration split, preprocessed."""
        cfg = self.config
        return self.once("calibration", lambda: load_images(
            self.checkpoint, cfg.data, cfg.calib_split, limit=cfg.calib_size, seed=cfg.seed,
            purpose=f"calibration ({cfg.calib_split} split)"))

    def validation(self) -> ImageSet:
        """The whole parity split, preprocessed."""
        cfg = self.config
        return self.once("validation", lambda: load_images(
            self.checkpoint, cfg.data, cfg.parity_split, purpose=f"the parity check ({cfg.parity_split} split)"))

    def reference_logits(self) -> np.ndarray:
        """PyTorch FP32 logits on the parity split: what every artifact is compared with."""
        return self.once("reference", lambda: torch_logits(self.model, self.validation().images))

    def reference_thresholds(self) -> np.ndarray:
        """The reference's per-class thresholds: the checkpoint's tuned ones, else tuned on the parity split."""
        from edgecls.metrics import sigmoid, tune_thresholds

        def make() -> np.ndarray:
            if self.checkpoint.thresholds is not None:
                return np.asarray(self.checkpoint.thresholds, dtype=np.float32)
            val = self.validation()
            return tune_thresholds(sigmoid(self.reference_logits()), val.targets, val.known)

        return self.once("reference_thresholds", make)

    def derived(self, model: Any, name: str) -> "ExportContext":
        """A context for the same export whose artifacts are made from ``model`` (e.g. fine-tuned weights): the
        same configuration, images, reference logits and thresholds (what artifacts are judged against), its own
        work folder ``workdir/name`` and its own FP32 ONNX."""
        shared = ("calibration", "validation", "reference", "reference_thresholds")
        self.reference_thresholds()
        work = self.workdir / name
        work.mkdir(parents=True, exist_ok=True)
        return ExportContext(self.config, self.checkpoint, model.cpu().eval(), work, self.input_name,
                             self.output_name, {k: self._cache[k] for k in shared if k in self._cache})

    def exported_program(self) -> Any:
        """``torch.export`` program with a dynamic batch of 1..max_batch (CoreML converts from it)."""
        import torch

        def make() -> Any:
            example = torch.zeros(2, 3, self.img_size, self.img_size)
            batch = torch.export.Dim("batch", min=1, max=int(self.config.max_batch))
            program = torch.export.export(self.model, (example,), dynamic_shapes=({0: batch},))
            return program.run_decompositions({})

        return self.once("exported_program", make)
