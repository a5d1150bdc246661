"""Evaluate a checkpoint on a dataset split with the shared preprocessing; also the prediction helper of training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from edgecls.data import Sample, Split, load_from_spec
from edgecls.errors import ConfigError
from edgecls.metrics import DEFAULT_THRESHOLD, MetricsReport, compute_metrics, sigmoid
from edgecls.preprocess import PreprocessSpec
from edgecls.train._datasets import ImageDataset
from edgecls.train._device import default_workers, resolve_device
from edgecls.train.checkpoint import Checkpoint, load_checkpoint


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    spec: PreprocessSpec,
    *,
    device: torch.device,
    batch_size: int = 32,
    workers: int = 0,
    channels_last: bool = False,
) -> np.ndarray:
    """Logits (N, K) float32 for ``samples`` through the shared eval preprocessing, in FP32."""
    loader = DataLoader(ImageDataset(samples, spec), batch_size=batch_size, shuffle=False, num_workers=workers)
    was_training = model.training
    model.eval()
    out = []
    for images, _, _ in loader:
        images = images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        out.append(model(images).float().cpu().numpy())
    model.train(was_training)
    k = len(getattr(model, "spec", None).class_names) if hasattr(model, "spec") else 0
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.float32)


@dataclass
class Evaluation:
    """A checkpoint's metrics on one split, at 0.5 and at its tuned thresholds, plus the raw probabilities."""

    split: str
    at_half: MetricsReport
    tuned: MetricsReport
    probs: np.ndarray
    targets: np.ndarray
    known: np.ndarray
    paths: list[Path]


def load_split_for(ckpt: Checkpoint, data: str | Path, split: str, *, strict: bool = False) -> Split:
    """Load ``split`` of ``data`` the way this checkpoint's training run did (its :class:`~edgecls.data.DataSpec`)."""
    dataset = load_from_spec(ckpt.data_spec, data=data, class_names=ckpt.class_names, owner="checkpoint",
                             strict=strict)
    return dataset.split(split)


def evaluate(
    checkpoint: str | Path | Checkpoint,
    data: str | Path,
    *,
    split: str = "test",
    batch_size: int = 32,
    device: str = "auto",
    workers: int | None = None,
    strict: bool = False,
) -> Evaluation:
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    part = load_split_for(ckpt, data, split, strict=strict)
    dev = resolve_device(device)
    model = ckpt.build_model().to(dev)
    logits = predict_logits(
        model, part.samples, ckpt.preprocess, device=dev, batch_size=batch_size,
        workers=default_workers() if workers is None else workers,
    )
    probs = sigmoid(logits)
    targets, known = part.targets(), part.known()
    names = ckpt.class_names
    untuned = np.full(len(names), DEFAULT_THRESHOLD, dtype=np.float32)
    thresholds = ckpt.thresholds if ckpt.thresholds is not None else untuned
    return Evaluation(
        split=part.name,
        at_half=compute_metrics(probs, targets, known, names, DEFAULT_THRESHOLD),
        tuned=compute_metrics(probs, targets, known, names, thresholds),
        probs=probs,
        targets=targets,
        known=known,
        paths=part.paths(),
    )
