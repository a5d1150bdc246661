"""Multi-label losses, all masked on unknown labels: an unknown entry contributes neither loss nor gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgecls.train.config import Loss, TrainConfig


def _masked_mean(loss: Tensor, known: Tensor) -> Tensor:
    """Mean over known entries; ``torch.where`` (not a product) so that a masked inf/nan cannot leak."""
    known = known.bool()
    total = torch.where(known, loss, torch.zeros_like(loss)).sum()
    return total / known.sum().clamp(min=1)


class MaskedBCE(nn.Module):
    def __init__(self, pos_weight: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def forward(self, logits: Tensor, targets: Tensor, known: Tensor) -> Tensor:
        loss = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.pos_weight, reduction="none")
        return _masked_mean(loss, known)


class MaskedFocal(nn.Module):
    """Focal loss (Lin et al. 2017) on sigmoid outputs, with optional BCE positive weights."""

    def __init__(self, gamma: float = 2.0, pos_weight: Tensor | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def forward(self, logits: Tensor, targets: Tensor, known: Tensor) -> Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.pos_weight, reduction="none")
        p = torch.sigmoid(logits)
        p_t = p * targets + (1 - p) * (1 - targets)
        return _masked_mean(bce * (1 - p_t).pow(self.gamma), known)


class MaskedASL(nn.Module):
    """Asymmetric loss (Ridnik et al. 2021): separate focusing for positives/negatives and a probability margin."""

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8) -> None:
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps

    def forward(self, logits: Tensor, targets: Tensor, known: Tensor) -> Tensor:
        p = torch.sigmoid(logits)
        p_neg = (p - self.clip).clamp(min=0) if self.clip > 0 else p
        loss_pos = targets * torch.log(p.clamp(min=self.eps)) * (1 - p).pow(self.gamma_pos)
        loss_neg = (1 - targets) * torch.log((1 - p_neg).clamp(min=self.eps)) * p_neg.pow(self.gamma_neg)
        return _masked_mean(-(loss_pos + loss_neg), known)


def build_loss(cfg: TrainConfig, pos_weight: Tensor | None) -> nn.Module:
    if cfg.loss is Loss.BCE:
        return MaskedBCE(pos_weight)
    if cfg.loss is Loss.FOCAL:
        return MaskedFocal(cfg.focal_gamma, pos_weight)
    return MaskedASL(cfg.asl_gamma_neg, cfg.asl_gamma_pos, cfg.asl_clip)


def distill_loss(student: Tensor, teacher: Tensor, known: Tensor | None, temperature: float) -> Tensor:
    """BCE of the student's tempered sigmoid against the teacher's (soft targets), times ``T**2`` so that its
    gradient keeps its size whatever the temperature; ``known`` masks entries out (None: every entry teaches)."""
    soft = torch.sigmoid(teacher.float() / temperature)
    loss = F.binary_cross_entropy_with_logits(student.float() / temperature, soft, reduction="none")
    mask = torch.ones_like(loss, dtype=torch.bool) if known is None else known
    return _masked_mean(loss, mask) * temperature**2
