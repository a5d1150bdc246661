"""A short quantization-aware fine-tune of a checkpoint (:func:`quantization_aware_finetune`), for the export's last
INT8 fix: NNCF inserts its INT8 fake quantizers (PERFORMANCE preset, ranges from the export's calibration images)
into the PyTorch model, and the model trains for a few epochs on the checkpoint's own training split with its own
training loss (masked on unknown labels), so the weights learn to live with INT8 rounding. Half of the loss is the
float model's own probabilities on the same batch (:func:`edgecls.train.losses.distill_loss`, every entry, NA labels
too): the INT8 budget is agreement with the float model's decisions, and the labels alone pull the fine-tuned model
away from them (on the tiny test model a labels-only fine-tune raised mAP and lowered agreement).

What comes back is the fine-tuned model without the quantizers (plain float weights of the checkpoint's
architecture): the export then quantizes it with the target's own quantizer and settings, exactly as a post-training
artifact is made, so a QAT artifact differs from a PTQ one only in its weights.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecls.errors import DataError

log = logging.getLogger("edgecls.train")

QAT_LR = 1e-5  # AdamW, constant: a fine-tune of a trained model, not a new training run
QAT_BATCH = 16
QAT_DISTILL = 0.5  # share of the loss that is the float model's probabilities (self-distillation)


@dataclass
class QATResult:
    """What :func:`quantization_aware_finetune` did.

    Attributes:
        model: The fine-tuned model (float weights, eval mode, no quantizers).
        epochs: Epochs run over the training split.
        steps: Optimizer steps.
        images: Training images.
        loss_first: Mean training loss (under fake quantization) of the first epoch.
        loss_last: Mean training loss of the last epoch.
        seconds: Wall time, quantizer insertion included.
    """

    model: nn.Module
    epochs: int
    steps: int
    images: int
    loss_first: float
    loss_last: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("model")
        data.update(quantizer="nncf.quantize (torch, PERFORMANCE preset) + fine-tune", lr=QAT_LR,
                    optimizer="adamw", batch_size=QAT_BATCH, batchnorm="frozen (eval statistics)",
                    distill_weight=QAT_DISTILL)
        return data


def _loss(checkpoint: Any, train_split: Any) -> nn.Module:
    """The checkpoint's training loss (masked BCE, focal or ASL, with its positive weights)."""
    from edgecls.data import pos_weight_from
    from edgecls.train.config import Loss
    from edgecls.train.losses import MaskedASL, MaskedBCE, MaskedFocal

    saved = dict(checkpoint.config or {})
    loss = Loss(str(saved.get("loss", "bce")))
    text = str(saved.get("pos_weight", "none")).strip().lower()
    pos_weight = None
    if loss is not Loss.ASL and text == "auto":
        pos_weight = torch.as_tensor(pos_weight_from(train_split), dtype=torch.float32)
    elif loss is not Loss.ASL and text != "none":
        pos_weight = torch.as_tensor([float(v) for v in text.split(",")], dtype=torch.float32)
    if loss is Loss.BCE:
        return MaskedBCE(pos_weight)
    if loss is Loss.FOCAL:
        return MaskedFocal(float(saved.get("focal_gamma", 2.0)), pos_weight)
    return MaskedASL(float(saved.get("asl_gamma_neg", 4.0)), float(saved.get("asl_gamma_pos", 0.0)),
                     float(saved.get("asl_clip", 0.05)))


def quantization_aware_finetune(checkpoint: Any, data: str, *, epochs: int, calibration: np.ndarray,
                                seed: int = 0) -> QATResult:
    """Fine-tune ``checkpoint``'s model for ``epochs`` under NNCF's INT8 fake quantization on its training split.

    Args:
        checkpoint: A loaded :class:`~edgecls.train.checkpoint.Checkpoint`.
        data: The dataset it was trained on (its training split is read through the checkpoint's data spec).
        epochs: Passes over the training split (>= 1).
        calibration: Preprocessed float32 ``(N, 3, H, W)`` images that set the quantizers' initial ranges.
        seed: Seed of the batch order.

    Raises:
        DataError: The training split has no images.
    """
    from torch.utils.data import DataLoader

    from edgecls._deps import require
    from edgecls.data import load_from_spec
    from edgecls.train._datasets import ImageDataset
    from edgecls.train.losses import distill_loss

    nncf = require("nncf", extra="train")
    nncf.set_log_level(logging.ERROR)
    start = time.perf_counter()
    torch.manual_seed(seed)
    split = load_from_spec(checkpoint.data_spec, data=data, class_names=checkpoint.class_names,
                           owner="checkpoint").split("train")
    if not split.samples:
        raise DataError(f"{data}: the train split is empty; a quantization-aware fine-tune needs training images")
    model = checkpoint.build_model().cpu().eval()
    teacher = checkpoint.build_model().cpu().eval()
    calib = nncf.Dataset([torch.from_numpy(np.ascontiguousarray(calibration[i : i + 1]))
                          for i in range(len(calibration))])
    quantized = nncf.quantize(model, calib, preset=nncf.QuantizationPreset.PERFORMANCE,
                              subset_size=len(calibration))
    criterion = _loss(checkpoint, split)
    loader = DataLoader(ImageDataset(split.samples, checkpoint.preprocess), batch_size=QAT_BATCH, shuffle=True,
                        drop_last=len(split.samples) > QAT_BATCH, generator=torch.Generator().manual_seed(seed))
    params = [p for p in quantized.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=QAT_LR, weight_decay=0.0)
    quantized.train()
    for module in quantized.modules():  # a few epochs on small batches: keep the trained BatchNorm statistics
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    means: list[float] = []
    steps = 0
    for epoch in range(int(epochs)):
        total, count = 0.0, 0
        for x, y, known in loader:
            logits = quantized(x)
            with torch.no_grad():
                soft = teacher(x)
            loss = ((1.0 - QAT_DISTILL) * criterion(logits, y, known)
                    + QAT_DISTILL * distill_loss(logits, soft, None, 1.0))
            if not torch.isfinite(loss):
                raise DataError(f"the quantization-aware fine-tune diverged (loss {loss.item()}) at epoch {epoch + 1}")
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
            count += 1
            steps += 1
        means.append(total / max(count, 1))
        log.info("qat: epoch %d/%d, loss %.4f", epoch + 1, epochs, means[-1])
    state = {k: v for k, v in quantized.state_dict().items() if not k.startswith("__nncf")}
    finetuned = checkpoint.build_model().cpu()
    finetuned.load_state_dict(state)
    finetuned.eval()
    return QATResult(finetuned, int(epochs), steps, len(split.samples), means[0] if means else math.nan,
                     means[-1] if means else math.nan, round(time.perf_counter() - start, 2))
