"""The teacher of ``--teacher``: a trained checkpoint, frozen, that gives per-class logits for the student's batches.

The teacher keeps its own preprocessing (input size, mean/std from its checkpoint): an augmented student batch is
mapped back to [0, 1] pixels, resized to the teacher's input size and normalised with the teacher's statistics, so
both see the same augmented image. Without augmentation the teacher's logits are computed once per image
(:meth:`Teacher.logits_for`), through its own eval preprocessing.

Several teachers (``--teacher A --teacher B``) teach as one ensemble: the mean of their tempered probabilities, each
member with its own preprocessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from edgecls.data import Sample
from edgecls.errors import ConfigError
from edgecls.preprocess import PreprocessSpec
from edgecls.train.checkpoint import load_checkpoint
from edgecls.train.evaluate import predict_logits


class _Member:
    """One teacher model and the mapping of a student batch onto its own input."""

    def __init__(self, source: str | Path, class_names: Sequence[str], student: PreprocessSpec,
                 device: torch.device, *, batch_size: int = 32, workers: int = 0) -> None:
        ckpt = load_checkpoint(source)
        if tuple(ckpt.class_names) != tuple(class_names):
            raise ConfigError(f"--teacher {source}: its labels ({', '.join(ckpt.class_names)}) are not this "
                              f"dataset's ({', '.join(class_names)}) in the same order; a teacher must predict the "
                              "same classes")
        self.source = str(source)
        self.backbone = ckpt.model_spec.backbone
        self.preprocess = ckpt.preprocess
        self.student = student
        self.device = device
        self.batch_size, self.workers = batch_size, workers
        self.model = ckpt.build_model().to(device).eval()
        self.model.requires_grad_(False)
        shape = (1, 3, 1, 1)
        self._student_mean = torch.tensor(student.mean, device=device).view(shape)
        self._student_std = torch.tensor(student.std, device=device).view(shape)
        self._mean = torch.tensor(self.preprocess.mean, device=device).view(shape)
        self._std = torch.tensor(self.preprocess.std, device=device).view(shape)

    def _same_input(self) -> bool:
        s, t = self.student, self.preprocess
        return s.img_size == t.img_size and tuple(s.mean) == tuple(t.mean) and tuple(s.std) == tuple(t.std)

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """Teacher logits (float32) for a normalised, augmented student batch ``(B, 3, H, W)``."""
        if not self._same_input():
            pixels = x.float() * self._student_std + self._student_mean  # back to [0, 1]
            size = self.preprocess.img_size
            if pixels.shape[-1] != size or pixels.shape[-2] != size:
                pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True,
                                       align_corners=False)
            x = (pixels - self._mean) / self._std
        return self.model(x.to(self.device)).float()

    def logits_for(self, samples: Sequence[Sample]) -> Tensor:
        """Teacher logits of un-augmented images, through the teacher's own eval preprocessing (computed once)."""
        out = predict_logits(self.model, samples, self.preprocess, device=self.device, batch_size=self.batch_size,
                             workers=self.workers)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


class Teacher:
    """The teacher of a run: one checkpoint, or the ensemble of several (the mean of their probabilities at the
    distillation temperature, returned as the logit that gives that mean at the same temperature)."""

    def __init__(self, sources: Sequence[str | Path], class_names: Sequence[str], student: PreprocessSpec,
                 device: torch.device, *, temperature: float = 1.0, batch_size: int = 32, workers: int = 0) -> None:
        if not sources:
            raise ValueError("a teacher needs at least one checkpoint")
        self.members = [_Member(s, class_names, student, device, batch_size=batch_size, workers=workers)
                        for s in sources]
        self.temperature = temperature

    def _combine(self, outs: list[Tensor]) -> Tensor:
        if len(outs) == 1:
            return outs[0]
        t = self.temperature
        mean = torch.stack([torch.sigmoid(o.float() / t) for o in outs]).mean(dim=0)
        return torch.logit(mean, eps=1e-6) * t

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """Teacher logits (float32) for a normalised, augmented student batch ``(B, 3, H, W)``."""
        return self._combine([m.logits(x) for m in self.members])

    def logits_for(self, samples: Sequence[Sample]) -> Tensor:
        """Teacher logits of un-augmented images, each member through its own eval preprocessing (computed once)."""
        return self._combine([m.logits_for(samples) for m in self.members])


class WithTeacher(Dataset):
    """A dataset's ``(image, target, known)`` items with the teacher's cached logits of that image appended."""

    def __init__(self, base: Dataset, logits: Tensor) -> None:
        self.base, self.logits = base, logits

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        return (*self.base[index], self.logits[index])
