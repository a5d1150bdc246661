"""Torch datasets over :class:`edgecls.data.Sample` lists: eval preprocessing is the shared numpy one."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from edgecls.data import Sample
from edgecls.errors import DataError
from edgecls.preprocess import PreprocessSpec, decode_image, preprocess
from edgecls.train.config import Augment

log = logging.getLogger("edgecls.train")


def build_augment(preset: Augment, spec: PreprocessSpec):
    """torchvision v2 pipeline from an RGB uint8 CHW tensor to a normalised float tensor, or None (eval path)."""
    if preset is Augment.NONE:
        return None
    from torchvision.transforms import v2

    size = spec.img_size
    scale = (0.7, 1.0) if preset is Augment.LIGHT else (0.35, 1.0)
    ops = [v2.RandomResizedCrop((size, size), scale=scale, antialias=True), v2.RandomHorizontalFlip()]
    if preset is Augment.STRONG:
        ops += [v2.ColorJitter(0.3, 0.3, 0.3, 0.05), v2.RandomGrayscale(0.05)]
    else:  # light: crop, flip and a little colour, as the fine-tuning script of issue 14 that beat our defaults
        ops += [v2.ColorJitter(0.1, 0.1, 0.1)]
    mean = [m for m in spec.mean]
    std = [s for s in spec.std]
    # spec.scale maps pixels to [0, 1] for every spec we build; ToDtype(scale=True) does the same.
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(ops)


class ImageDataset(Dataset):
    """Returns ``(image, target, known)``; a file that fails to decode yields a zero image with every label unknown,
    so it adds nothing to the loss, and is reported once.

    With ``seed``, each image's augmentation draws from its own generator seeded by (seed, index), so an epoch's
    crops, flips and colours are the same whichever process loads them: with no worker, one or eight, and after a
    resume with another ``--workers``. Without it they would follow the loading process's generator, so a run
    would depend on how many workers loaded it."""

    def __init__(self, samples: Sequence[Sample], spec: PreprocessSpec, transform=None,
                 seed: int | None = None) -> None:
        self.samples = list(samples)
        self.spec = spec
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> torch.Tensor:
        sample = self.samples[index]
        if self.transform is None:
            return torch.from_numpy(preprocess(sample.path, self.spec))
        bgr = decode_image(sample.path)
        rgb = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1)
        if self.seed is None:
            return self.transform(rgb)
        # torchvision's transforms draw from torch's global generator: fork it, so that the training process's own
        # draws (dropout) go on as if this image had not been loaded here
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + index) % (2**63))
            return self.transform(rgb)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        known = torch.from_numpy(sample.known.astype(bool))
        try:
            image = self.load(index)
        except DataError as exc:
            log.warning("skipping unreadable image during training: %s", exc)
            image = torch.zeros(3, self.spec.img_size, self.spec.img_size)
            known = torch.zeros_like(known)
        return image, torch.from_numpy(sample.target.astype(np.float32)), known
