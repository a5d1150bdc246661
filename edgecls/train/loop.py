"""`edgecls train`: fine-tune a backbone with a multi-label head, keep the best checkpoint, tune thresholds, report."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from edgecls._deps import library_versions
from edgecls._io import atomic_write_text
from edgecls.config import build_config, dump_yaml, to_plain
from edgecls.data import Dataset, label_priors, load_dataset, pos_weight_from
from edgecls.errors import ConfigError, DataError, TrainingDiverged
from edgecls.metrics import (
    DEFAULT_THRESHOLD,
    MetricsReport,
    compute_metrics,
    labels_per_image,
    mean_average_precision,
    sigmoid,
    tune_thresholds,
)
from edgecls.train._datasets import ImageDataset, build_augment
from edgecls.train._device import (
    Dist,
    Precision,
    choose_precision,
    default_workers,
    epoch_seed,
    init_distributed,
    keep_freed_memory,
    resolve_device,
    seed_everything,
)
from edgecls.train.backbones import HEAD_PRIOR, ModelSpec, MultiLabelNet, build_model, default_preprocess
from edgecls.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from edgecls.train.config import Augment, Optimizer, Scheduler, Strategy, TrainConfig
from edgecls.train.evaluate import predict_logits
from edgecls.train.losses import build_loss, distill_loss
from edgecls.train.run_folder import prepare_out, remove_leftovers

log = logging.getLogger("edgecls.train")

# Settings that may change when a run is resumed; everything else must stay as the run started. ``lr`` is the one
# to lower after a divergence: the restored optimizer and schedule are rescaled to it.
RESUMABLE = ("epochs", "patience", "cooldown_epochs", "workers", "device", "progress", "lr")
# --strategy auto: its cached-feature head phase (benchmarks/training.py's freeze --cache-features settings) in a
# sub-run folder, then fine-tuning from that head, stopped after AUTO_PATIENCE epochs without a new best of its own;
# best.pt is fine-tuning's best only where it beats the head's val mAP, else the head's checkpoint.
AUTO_HEAD_DIR = "head"
AUTO_HEAD = {"strategy": Strategy.FREEZE, "cache_features": True, "lr": 3e-3, "weight_decay": 1e-3,
             "augment": Augment.NONE, "ema": False, "patience": None, "scheduler": Scheduler.COSINE}
AUTO_PATIENCE = 3
# A training loss this many times its first value is logged as a warning (the run is probably diverging).
LOSS_RISE_WARNING = 100.0


@dataclass
class FitResult:
    """What a training run produced."""

    run_dir: Path
    best_checkpoint: Path
    best_epoch: int
    best_map: float
    epochs_run: int
    stopped: str  # "completed" | "early_stop" | "interrupted"
    report: MetricsReport | None = None  # validation, at the tuned thresholds
    report_at_half: MetricsReport | None = None
    thresholds: np.ndarray | None = None
    seconds: float = 0.0
    auto: dict[str, Any] | None = None  # --strategy auto: which phase won, both val mAPs, the margin and the times


@dataclass
class _State:
    """Mutable progress of a run, saved in last.pt so a resumed run continues exactly."""

    epoch: int = 0  # epochs completed
    iteration: int = 0
    best_map: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    cooldown_from: int = 0  # epochs completed when the cool-down began (0: none yet)
    cooldown_length: int = 0  # its epochs
    cooldown_lrs: list[float] = dataclasses.field(default_factory=list)  # each group's lr when it began
    losses: list[float] = dataclasses.field(default_factory=list)
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------
# building blocks


def _trainable_for_epoch(model: MultiLabelNet, cfg: TrainConfig, epoch: int) -> None:
    """Set requires_grad for this epoch from the strategy (idempotent, so a resumed run gets the same state)."""
    if cfg.strategy in (Strategy.FULL, Strategy.FINETUNE):
        model.unfreeze_last(len(model.stages()))
    elif cfg.strategy is Strategy.FREEZE or epoch < cfg.staged_head_epochs:
        model.freeze_encoder()
    else:
        model.freeze_encoder()
        model.unfreeze_last(cfg.staged_unfreeze)
    if cfg.strategy is not Strategy.FREEZE:
        for stage in model.stages()[: cfg.frozen_stages]:
            stage.requires_grad_(False)
    for p in model.head.parameters():
        p.requires_grad_(True)


def _param_groups(model: MultiLabelNet, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Head at lr, encoder at lr * encoder_lr_scale (finetune/staged) or lr (full); no decay on biases and norms."""
    groups: list[dict[str, Any]] = []

    def add(params: list[nn.Parameter], lr: float) -> None:
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        if decay:
            groups.append({"params": decay, "lr": lr, "weight_decay": cfg.weight_decay})
        if no_decay:
            groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0})

    add(list(model.head.parameters()), cfg.lr)
    if cfg.strategy is not Strategy.FREEZE:
        scale = 1.0 if cfg.strategy is Strategy.FULL else cfg.encoder_lr_scale
        add(list(model.encoder.parameters()), cfg.lr * scale)
    return groups


def _optimizer(groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer is Optimizer.SGD:
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    if cfg.optimizer is Optimizer.ADAM:
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Returns (scheduler, per_step): per-step schedulers advance every optimizer step, others once per epoch."""
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.scheduler is Scheduler.COSINE:
        warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
        floor = 0.01

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        return torch.optim.lr_scheduler.LambdaLR(opt, factor), True
    if cfg.scheduler is Scheduler.ONECYCLE:
        max_lr = [g["lr"] for g in opt.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total), True
    if cfg.scheduler is Scheduler.PLATEAU:
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=cfg.gamma, patience=2), False
    if cfg.scheduler is Scheduler.STEP:
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_epochs, gamma=cfg.gamma), False
    return None, False


def _batches_per_epoch(images: int, batch_size: int) -> int:
    """Training batches of one process per epoch: the last incomplete batch is dropped unless it is the only one."""
    return images // batch_size if images > batch_size else 1


def _pos_weight(cfg: TrainConfig, dataset: Dataset) -> torch.Tensor | None:
    text = cfg.pos_weight.strip().lower()
    if text == "none":
        return None
    if cfg.loss.value == "asl":
        raise ConfigError("--pos-weight does not apply to --loss asl (it weighs classes through its gammas); use none")
    if text == "auto":
        return torch.as_tensor(pos_weight_from(dataset.split("train")), dtype=torch.float32)
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--pos-weight {cfg.pos_weight!r}: use auto, none or one number per class") from None
    if len(values) != len(dataset.class_names) or any(v <= 0 for v in values):
        raise ConfigError(
            f"--pos-weight has {len(values)} values; need {len(dataset.class_names)} positive numbers "
            f"(classes: {', '.join(dataset.class_names)})"
        )
    return torch.tensor(values, dtype=torch.float32)


EMA_WARMUP_POWER = 0.75  # timm ModelEmaV3's warm-up power for runs of under ~1M steps (decay 0.999 at 10k steps)


def ema_decay_at(updates: int, ceiling: float, power: float = EMA_WARMUP_POWER) -> float:
    """The warmed-up EMA decay after ``updates`` averaging steps: ``min(ceiling, 1 - (1 + updates) ** -power)``.

    At 200 steps (15 epochs of aquarium) it is 0.981, so the average spans the last few epochs instead of reaching
    back to the ImageNet start as a fixed 0.999 would (half-life 693 steps)."""
    return min(ceiling, 1.0 - (1.0 + updates) ** -power)


def _warmup_ema(ceiling: float):
    """A ``multi_avg_fn`` for :class:`torch.optim.swa_utils.AveragedModel` with the warmed-up decay."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        weight = 1.0 - ema_decay_at(int(num_averaged), ceiling)
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, weight)
        else:  # integer buffers (BatchNorm's num_batches_tracked): follow the model
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    return update


@torch.no_grad()
def _extract_features(model: MultiLabelNet, loader: DataLoader, device: torch.device, channels_last: bool):
    model.eval()
    feats, targets, known = [], [], []
    for images, y, m in loader:
        images = images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        feats.append(model.forward_features(images).float().cpu())
        targets.append(y)
        known.append(m)
    return torch.cat(feats), torch.cat(targets), torch.cat(known)


# ----------------------------------------------------------------------------------------------------------------
# the run


class _Run:
    """One training run. ``saved`` is the configuration recorded in the run (``cfg`` itself, or the ``auto`` one whose
    fine-tuning phase ``cfg`` is); ``head`` is that phase's cached-feature head run: its head weights start the
    model and its val mAP is the best to beat."""

    def __init__(self, cfg: TrainConfig, resume_from: Checkpoint | None, *, saved: TrainConfig | None = None,
                 head: FitResult | None = None) -> None:
        self.cfg = cfg
        self.head_run = head
        self.dist: Dist = init_distributed(cfg.device)
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        self.precision: Precision = choose_precision(self.device, cfg.amp)
        if self.device.type == "cpu":
            keep_freed_memory()
        self.run_dir = Path(cfg.out)
        self.main = self.dist.main
        if cfg.cache_features and self.dist.enabled:
            raise ConfigError("--cache-features trains only a small head: run it in one process, not under torchrun")
        self.dataset = load_dataset(
            cfg.data, classes=cfg.classes, seed=cfg.seed, val_fraction=cfg.val_fraction,
            test_fraction=cfg.test_fraction, strict=cfg.strict,
        )
        if "train" not in self.dataset.splits or "valid" not in self.dataset.splits:
            raise DataError(
                f"{cfg.data}: needs a train and a validation split (found: {', '.join(self.dataset.splits)})"
            )
        self.train_split = self.dataset.split("train")
        self.val_split = self.dataset.split("valid")
        if len(self.train_split) == 0 or len(self.val_split) == 0:
            raise DataError(f"{cfg.data}: the train or validation split has no usable images")
        self.spec = ModelSpec(
            backbone=cfg.backbone, class_names=tuple(self.dataset.class_names), head=cfg.head.value,
            dropout=cfg.dropout,
        )
        self.preprocess = default_preprocess(cfg.backbone, cfg.img_size).replace(resize=cfg.resize.value)
        self.workers = default_workers(self.device) if cfg.workers is None else cfg.workers
        self.resolved = dataclasses.replace(saved or cfg, img_size=self.preprocess.img_size, workers=self.workers)
        seed_everything(cfg.seed)
        if resume_from is not None:
            self.model = resume_from.build_model()
        else:
            self.model = build_model(self.spec, pretrained=cfg.pretrained, weights=cfg.weights)
            # The head starts from the data: bias = logit(training frequency of each class, NA excluded, clipped).
            self.model.init_head_bias(label_priors(self.train_split, HEAD_PRIOR))
            # auto fine-tunes from ImageNet weights and this data-initialised head, not from the trained
            # cached-feature head: started from that converged head, aquarium's fine-tuning overfit at once (train
            # loss 0.02 by epoch 8) and plateaued at val mAP 0.9156 (15 epochs), against 0.9427 from a fresh head
        if cfg.drop_path:
            self.model.set_drop_path(cfg.drop_path)
        stages = len(self.model.stages())
        if cfg.strategy is not Strategy.FREEZE and cfg.frozen_stages >= stages:
            raise ConfigError(f"--frozen-stages {cfg.frozen_stages}: {cfg.backbone} has {stages} encoder stages, so "
                              f"that freezes all of it; give 0-{stages - 1}, or --strategy freeze for a head alone")
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        pw = _pos_weight(cfg, self.dataset)
        self.criterion = build_loss(cfg, pw.to(self.device) if pw is not None else None)
        self.teacher = None
        if cfg.teacher:
            from edgecls.train._distill import Teacher

            self.teacher = Teacher(cfg.teacher, self.spec.class_names, self.preprocess, self.device,
                                   temperature=cfg.distill_temperature, batch_size=cfg.batch_size,
                                   workers=self.workers)
        self._teacher_cache: torch.Tensor | None = None  # teacher logits of the un-augmented train images
        self._teacher_seconds = 0.0  # this epoch's time in the teacher (online batches, or building the cache)
        self.state = _State()
        if head is not None:  # fine-tuning must beat the head: its val mAP is the best so far
            self.state.best_map = head.best_map
        self.ema = None
        if cfg.ema:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            average = _warmup_ema(cfg.ema_decay) if cfg.ema_warmup else get_ema_multi_avg_fn(cfg.ema_decay)
            self.ema = AveragedModel(self.model, multi_avg_fn=average, use_buffers=True)
        self.cached: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        _trainable_for_epoch(self.model, cfg, 0)
        self.optimizer = _optimizer(_param_groups(self.model, cfg), cfg)
        per_rank = math.ceil(len(self.train_split) / self.dist.world)
        self.batches_per_epoch = _batches_per_epoch(per_rank, cfg.batch_size)
        self.steps_per_epoch = max(1, math.ceil(self.batches_per_epoch / cfg.accumulate))
        self.scheduler, self.per_step = _scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.scaler else None
        if resume_from is not None:
            self._restore(resume_from)
        self.wrapped: nn.Module = self.model
        self.tb = None
        self._warned_rise = False

    # -- persistence --------------------------------------------------------------------------------------------
    def _restore(self, ckpt: Checkpoint) -> None:
        t = ckpt.training or {}
        self.optimizer.load_state_dict(t["optimizer"])
        if self.scheduler is not None and t.get("scheduler") is not None:
            self.scheduler.load_state_dict(t["scheduler"])
        if self.ema is not None and t.get("ema") is not None:
            self.ema.load_state_dict(t["ema"])
        if self.scaler is not None and t.get("scaler") is not None:
            self.scaler.load_state_dict(t["scaler"])
        s = t["state"]
        self.state = _State(
            epoch=int(s["epoch"]), iteration=int(s["iteration"]), best_map=float(s["best_map"]),
            best_epoch=int(s["best_epoch"]), bad_epochs=int(s["bad_epochs"]),
            cooldown_from=int(s.get("cooldown_from", 0)), cooldown_length=int(s.get("cooldown_length", 0)),
            cooldown_lrs=[float(v) for v in json.loads(s.get("cooldown_lrs", "[]"))],
            losses=[float(v) for v in t["losses"].tolist()], history=json.loads(s["history"]),
        )
        saved_lr = float(ckpt.config.get("lr", self.cfg.lr))
        if saved_lr > 0 and saved_lr != self.cfg.lr:
            self._rescale_lr(self.cfg.lr / saved_lr)
            log.info("resuming with lr %g instead of %g (the schedule continues, scaled)", self.cfg.lr, saved_lr)

    def _rescale_lr(self, ratio: float) -> None:
        """Scale every learning rate the restored optimizer and scheduler hold (``--resume RUN --lr X``)."""
        for group in self.optimizer.param_groups:
            for key in ("lr", "initial_lr", "max_lr", "min_lr"):
                if key in group:
                    group[key] *= ratio
        for attr in ("base_lrs", "_last_lr"):
            if self.scheduler is not None and hasattr(self.scheduler, attr):
                setattr(self.scheduler, attr, [v * ratio for v in getattr(self.scheduler, attr)])

    def _eval_model(self) -> MultiLabelNet:
        return self.ema.module if self.ema is not None else self.model  # type: ignore[return-value]

    def _checkpoint(self, *, training: bool, metrics: dict[str, Any], thresholds=None) -> Checkpoint:
        weights = self.model if training else self._eval_model()
        state = {k: v.detach().cpu().clone() for k, v in weights.state_dict().items()}
        extra = None
        if training:
            s = self.state
            extra = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "losses": torch.tensor(s.losses, dtype=torch.float32),
                "state": {
                    "epoch": s.epoch, "iteration": s.iteration, "best_map": s.best_map, "best_epoch": s.best_epoch,
                    "bad_epochs": s.bad_epochs, "history": json.dumps(s.history),
                    "cooldown_from": s.cooldown_from, "cooldown_length": s.cooldown_length,
                    "cooldown_lrs": json.dumps(s.cooldown_lrs),
                },
            }
        return Checkpoint(
            model_spec=self.spec, preprocess=self.preprocess, state_dict=state, thresholds=thresholds,
            config=to_plain(self.resolved), metrics=metrics, versions=library_versions(), epoch=self.state.epoch,
            training=extra, data=self.dataset.spec,
        )

    # -- data ---------------------------------------------------------------------------------------------------
    def _train_loader(self, epoch: int) -> DataLoader:
        cfg = self.cfg
        if cfg.cache_features:
            feats, targets, known = self.cached["train"]
            extra = () if self.teacher is None else (self._teacher_logits(),)
            dataset: torch.utils.data.Dataset = TensorDataset(feats, targets, known, *extra)
            workers = 0
        else:
            augment = build_augment(cfg.augment, self.preprocess)
            dataset = ImageDataset(self.train_split.samples, self.preprocess, augment,
                                   seed=epoch_seed(cfg.seed, epoch))
            if self.teacher is not None and augment is None:  # un-augmented: the teacher's outputs once per image
                from edgecls.train._distill import WithTeacher

                dataset = WithTeacher(dataset, self._teacher_logits())
            workers = self.workers
        sampler = DistributedSampler(dataset, num_replicas=self.dist.world, rank=self.dist.rank, shuffle=True,
                                     seed=cfg.seed)
        sampler.set_epoch(epoch)
        generator = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        # The last, smaller batch of an epoch would be a noisy step (and a spike in loss.png): drop it unless it is
        # the only batch. The sampler shuffles every epoch, so each image is still seen.
        drop_last = len(sampler) > cfg.batch_size
        return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers,
                          generator=generator, pin_memory=self.device.type == "cuda", drop_last=drop_last)

    def _teacher_logits(self) -> torch.Tensor:
        if self._teacher_cache is None:
            assert self.teacher is not None
            started = time.perf_counter()
            self._teacher_cache = self.teacher.logits_for(self.train_split.samples)
            seconds = time.perf_counter() - started
            self._teacher_seconds += seconds
            log.info("cached the teacher's outputs on %d un-augmented train images in %.1f s", len(self.train_split),
                     seconds)
        return self._teacher_cache

    def _cache_features(self) -> None:
        started = time.perf_counter()
        for name, split in (("train", self.train_split), ("valid", self.val_split)):
            loader = DataLoader(ImageDataset(split.samples, self.preprocess), batch_size=self.cfg.batch_size,
                                num_workers=self.workers)
            self.cached[name] = _extract_features(self.model, loader, self.device, self.cfg.channels_last)
        log.info("cached encoder features of %d + %d images in %.1f s", len(self.train_split), len(self.val_split),
                 time.perf_counter() - started)

    # -- one epoch ----------------------------------------------------------------------------------------------
    def _wrap(self) -> None:
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.model, device_ids=ids)
        else:
            self.wrapped = self.model

    def _forward_train(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.cache_features:
            return self.model.forward_head(x)
        return self.wrapped(x)

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        cfg = self.cfg
        self._teacher_seconds = 0.0
        loader = self._train_loader(epoch)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total, count, images = 0.0, 0, 0
        started = time.perf_counter()
        bar = self._progress(loader, f"epoch {epoch + 1}/{cfg.epochs}")
        n_batches = len(loader)
        for step, batch in enumerate(bar):
            x, y, m = batch[0], batch[1], batch[2]
            x, y, m = x.to(self.device, non_blocking=True), y.to(self.device), m.to(self.device)
            if cfg.channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            teacher = None
            if self.teacher is not None:  # cached (un-augmented) or on this augmented batch
                if len(batch) > 3:
                    teacher = batch[3].to(self.device)
                else:
                    teacher_start = time.perf_counter()
                    with self.precision.autocast():
                        teacher = self.teacher.logits(x)
                    self._teacher_seconds += time.perf_counter() - teacher_start
            with self.precision.autocast():
                logits = self._forward_train(x)
            loss = self.criterion(logits.float(), y, m)
            if teacher is not None:
                soft = distill_loss(logits, teacher, None if cfg.distill_unknown else m, cfg.distill_temperature)
                loss = (1.0 - cfg.distill_weight) * loss + cfg.distill_weight * soft
            if not torch.isfinite(loss):
                raise self._diverged(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}")
            scaled = loss / cfg.accumulate
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            if (step + 1) % cfg.accumulate == 0 or step + 1 == n_batches:
                self._cool_down(epoch, step, n_batches)
                self._optimizer_step()
            value = float(loss.detach())
            self._check_rise(value, epoch, step)
            self.state.losses.append(value)
            self.state.iteration += 1
            if self.tb is not None:
                self.tb.add_scalar("train/loss", value, self.state.iteration)
            total += value * len(x)
            count += len(x)
            images += len(x)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        seconds = time.perf_counter() - started
        return total / max(1, count), images * self.dist.world / max(seconds, 1e-9)

    def _diverged(self, what: str) -> TrainingDiverged:
        """The error for a NaN/inf loss or score, with advice that works: resume only when a checkpoint exists."""
        lower = f"{self.cfg.lr / 3:.2g}"
        if self.state.epoch == 0:
            advice = (
                "no epoch completed, so there is no checkpoint to resume; start a new run with a lower learning rate "
                f"(--lr {lower} instead of {self.cfg.lr:g}, or add --grad-clip 1.0) and --force to reuse {self.run_dir}"
            )
        else:
            advice = (
                f"the last good checkpoint is kept in {self.run_dir / 'last.pt'} (epoch {self.state.epoch}); continue "
                f"it with a lower learning rate: edgecls train --resume {self.run_dir} --lr {lower}"
            )
        return TrainingDiverged(f"{what}; {advice}")

    def _check_rise(self, value: float, epoch: int, step: int) -> None:
        """Warn once when the loss climbs far above its first value (finite, but the run is probably diverging)."""
        if self._warned_rise or not self.state.losses or not self.main:
            return
        first = self.state.losses[0]
        if first > 0 and value > LOSS_RISE_WARNING * first:
            self._warned_rise = True
            log.warning(
                "the training loss is %.4g at epoch %d, step %d, over %gx its first value %.4g; the run is "
                "probably diverging (stop it and try a lower --lr than %g, or --grad-clip 1.0)",
                value, epoch + 1, step + 1, LOSS_RISE_WARNING, first, self.cfg.lr,
            )

    def _cool_down(self, epoch: int, step: int, n_batches: int) -> None:
        """In the cool-down, every group's lr falls linearly from where it was when it began to 0 at its end."""
        s = self.state
        if not s.cooldown_length:
            return
        done = ((epoch - s.cooldown_from) * n_batches + step) / (s.cooldown_length * n_batches)
        for group, start in zip(self.optimizer.param_groups, s.cooldown_lrs, strict=True):
            group["lr"] = start * max(0.0, 1.0 - done)

    def _optimizer_step(self) -> None:
        cfg = self.cfg
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        if self.scheduler is not None and self.per_step and not self.state.cooldown_length:
            self.scheduler.step()  # (in a cool-down, _cool_down sets every lr)

    def _validate(self, epoch: int) -> tuple[np.ndarray, float]:
        """Validation logits (FP32, eval weights) and loss; non-finite scores mean the weights diverged."""
        model = self._eval_model()
        if self.cfg.cache_features:
            feats, _, _ = self.cached["valid"]
            model.eval()
            with torch.no_grad():
                logits = model.forward_head(feats.to(self.device)).float().cpu().numpy()
            model.train()
        else:
            logits = predict_logits(model, self.val_split.samples, self.preprocess, device=self.device,
                                    batch_size=self.cfg.batch_size, workers=self.workers,
                                    channels_last=self.cfg.channels_last)
        if not np.isfinite(logits).all():
            bad = int((~np.isfinite(logits)).any(axis=1).sum())
            raise self._diverged(f"the validation scores of {bad} image(s) became NaN or infinite after epoch "
                                 f"{epoch + 1}")
        t = torch.from_numpy(self.val_split.targets()).to(self.device)
        k = torch.from_numpy(self.val_split.known()).to(self.device)
        with torch.no_grad():
            loss = float(self.criterion(torch.from_numpy(logits).to(self.device), t, k))
        return logits, loss

    def _progress(self, iterable, desc: str):
        if not (self.cfg.progress and self.main):
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, unit="batch")

    # -- main loop ----------------------------------------------------------------------------------------------
    def run(self) -> FitResult:
        cfg = self.cfg
        started = time.perf_counter()
        if self.main:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(self.run_dir / "config.yaml", dump_yaml(self.resolved))
            except OSError as exc:
                here = (self.run_dir, *self.run_dir.parents)
                blocker = next((p for p in here if p.exists() and not p.is_dir()), None)
                reason = f"{blocker} is a file, not a folder" if blocker is not None else (exc.strerror or str(exc))
                raise ConfigError(
                    f"--out {self.run_dir}: cannot write the run there ({reason}); give a folder you can write to"
                ) from None
            self._open_tensorboard()
        log.info(
            "training %s (%s head) on %d train / %d valid images, %d classes, %s strategy, device %s, precision %s",
            cfg.backbone, cfg.head.value, len(self.train_split), len(self.val_split), len(self.spec.class_names),
            cfg.strategy.value, self.device, self.precision.name,
        )
        if self.dataset.skipped:
            log.warning("skipped %d missing or corrupt image(s); see `edgecls data inspect`", len(self.dataset.skipped))
        stopped = "completed"
        trainable = None
        threads = None
        try:
            if cfg.cache_features:
                self._cache_features()
                # Epochs on cached features are tiny matrix products: one thread, so that a busy machine's other
                # processes do not make every step wait for a second one (an epoch of 448 Lite0 features on a 2-core
                # machine at load 20: 3.0-3.5 s with 2 threads, 0.2-0.4 s with 1).
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
            while self.state.epoch < cfg.epochs:
                epoch = self.state.epoch
                seed_everything(epoch_seed(cfg.seed, epoch))
                _trainable_for_epoch(self.model, cfg, epoch)
                now = tuple(p.requires_grad for p in self.model.parameters())
                if now != trainable:
                    if trainable is not None:
                        log.info("epoch %d: unfreezing the last %d encoder stages", epoch + 1, cfg.staged_unfreeze)
                    self._wrap()
                    trainable = now
                epoch_start = time.perf_counter()
                train_loss, img_s = self._train_epoch(epoch)
                logits, val_loss = self._validate(epoch)
                probs = sigmoid(logits)
                report = compute_metrics(probs, self.val_split.targets(), self.val_split.known(),
                                         self.spec.class_names, DEFAULT_THRESHOLD)
                val_map = report.map
                if self.scheduler is not None and not self.per_step and not self.state.cooldown_length:
                    if cfg.scheduler is Scheduler.PLATEAU:
                        self.scheduler.step(val_map)
                    else:
                        self.scheduler.step()
                self.state.epoch = epoch + 1
                # best.pt holds the best so far (for auto: counting the head's); early stopping follows this run's
                # own progress, so fine-tuning that starts below the head but climbs is not cut off
                improved = val_map > self.state.best_map
                progressed = val_map > max((r["val_map"] for r in self.state.history), default=-math.inf)
                if improved:
                    self.state.best_map, self.state.best_epoch = val_map, epoch + 1
                self.state.bad_epochs = 0 if progressed else self.state.bad_epochs + 1
                row = {
                    "epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "val_map": val_map,
                    "val_f1_micro": report.f1_micro, "val_f1_macro": report.f1_macro,
                    "lr": self.optimizer.param_groups[0]["lr"], "train_images_per_s": img_s,
                    "seconds": time.perf_counter() - epoch_start, "iteration": self.state.iteration,
                }
                if self.teacher is not None:  # the teacher's share of the epoch (its cost, measured within the run)
                    row["teacher_seconds"] = self._teacher_seconds
                self.state.history.append(row)
                stop, why = self._stop_early(epoch + 1)  # before last.pt is saved: it holds a cool-down's start
                if self.main:
                    self._save_epoch(improved, row)
                log.info(
                    "epoch %d/%d  train_loss %.4f  val_loss %.4f  val_mAP %.4f  F1 %.3f/%.3f  %.1f img/s  %.1f s%s%s",
                    epoch + 1, cfg.epochs, train_loss, val_loss, val_map, report.f1_micro, report.f1_macro, img_s,
                    row["seconds"], "" if self.teacher is None else f" (teacher {self._teacher_seconds:.1f} s)",
                    "  *best*" if improved else "",
                )
                if why:
                    log.info(why)
                if stop:
                    stopped = "early_stop"
                    break
        except KeyboardInterrupt:
            stopped = "interrupted"
            log.warning(
                "interrupted in epoch %d; %s holds the last completed epoch (%d). Continue with: "
                "edgecls train --resume %s", self.state.epoch + 1, self.run_dir / "last.pt", self.state.epoch,
                self.run_dir,
            )
        finally:
            if threads is not None:
                torch.set_num_threads(threads)
            if self.tb is not None:
                self.tb.close()
        result = FitResult(
            run_dir=self.run_dir, best_checkpoint=self.run_dir / "best.pt", best_epoch=self.state.best_epoch,
            best_map=self.state.best_map, epochs_run=self.state.epoch, stopped=stopped,
        )
        if stopped != "interrupted" and self.main and self.head_run is not None and self.state.best_epoch == 0:
            # fine-tuning never beat the head: the head's checkpoint becomes the run's
            save_checkpoint(load_checkpoint(self.head_run.best_checkpoint), self.run_dir / "best.pt")
        if stopped != "interrupted" and self.main and (self.state.best_epoch > 0 or self.head_run is not None):
            self._finish(result)
        result.seconds = time.perf_counter() - started
        return result

    def _stop_early(self, done: int) -> tuple[bool, str | None]:
        """After ``done`` epochs: stop now, and what to log. When val mAP has not improved for ``patience`` epochs,
        the run first cools down (``cooldown_epochs`` more, the lr falling to 0) unless the schedule ends sooner."""
        cfg, s = self.cfg, self.state
        if s.cooldown_length:
            if done - s.cooldown_from < s.cooldown_length:
                return False, None
            return True, f"early stopping: the {s.cooldown_length}-epoch cool-down is done"
        if cfg.patience is None or s.bad_epochs < cfg.patience:
            return False, None
        length = min(cfg.cooldown_epochs, cfg.epochs - done)
        if self.head_run is not None and s.best_epoch == 0:
            length = 0  # auto's fine-tuning that never beat the head: no minutes spent cooling a loser down
        if length <= 0:
            return True, f"early stopping: val mAP has not improved for {cfg.patience} epochs"
        s.cooldown_from, s.cooldown_length = done, length
        s.cooldown_lrs = [float(g["lr"]) for g in self.optimizer.param_groups]
        return False, (f"val mAP has not improved for {cfg.patience} epochs: {length} more with the learning rate "
                       "falling to 0, then stop")

    def _auto_summary(self, result: FitResult) -> dict[str, Any]:
        """Which phase of --strategy auto won and by how much (logged, and in report.md / report.json)."""
        head = self.head_run
        assert head is not None
        tuned = [r["val_map"] for r in self.state.history]
        finetune = max(tuned) if tuned else math.nan
        won = "finetune" if result.best_epoch > 0 else "head"
        margin = finetune - head.best_map
        seconds = sum(r["seconds"] for r in self.state.history)
        if won == "finetune":
            log.info("auto: fine-tuning won: val mAP %.4f against the cached-feature head's %.4f (%+.4f), best at "
                     "epoch %d of %d", finetune, head.best_map, margin, result.best_epoch, result.epochs_run)
        else:
            log.info("auto: the cached-feature head won: val mAP %.4f; fine-tuning reached %.4f (%+.4f) in %d "
                     "epoch(s) and is discarded", head.best_map, finetune, margin, result.epochs_run)
        return {"winner": won, "head_val_map": head.best_map, "finetune_val_map": finetune, "margin": margin,
                "head_seconds": head.seconds, "finetune_seconds": seconds, "finetune_epochs": result.epochs_run}

    def _open_tensorboard(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is in the train extra; without it the scalars are only in history.jsonl
            log.info("tensorboard is not installed; scalars go to history.jsonl only")
            return
        self.tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.state.iteration + 1)

    def _save_epoch(self, improved: bool, row: dict[str, Any]) -> None:
        if self.tb is not None:
            for key in ("train_loss", "val_loss", "val_map", "val_f1_micro", "val_f1_macro", "lr"):
                self.tb.add_scalar(f"epoch/{key}", row[key], row["epoch"])
            self.tb.flush()
        metrics = {"val_map": row["val_map"], "epoch": row["epoch"]}
        if improved:
            save_checkpoint(self._checkpoint(training=False, metrics=metrics), self.run_dir / "best.pt")
        save_checkpoint(self._checkpoint(training=True, metrics=metrics), self.run_dir / "last.pt")
        lines = "".join(json.dumps(r) + "\n" for r in self.state.history)
        atomic_write_text(self.run_dir / "history.jsonl", lines)

    def _finish(self, result: FitResult) -> None:
        """Reload the best weights, tune thresholds on validation, write report and plots, store thresholds."""
        from edgecls.train import _report

        best = load_checkpoint(self.run_dir / "best.pt")
        model = best.build_model().to(self.device)
        if self.cfg.cache_features:
            with torch.no_grad():
                logits = model.forward_head(self.cached["valid"][0].to(self.device)).float().cpu().numpy()
        else:
            logits = predict_logits(model, self.val_split.samples, self.preprocess, device=self.device,
                                    batch_size=self.cfg.batch_size, workers=self.workers)
        probs = sigmoid(logits)
        targets, known = self.val_split.targets(), self.val_split.known()
        thresholds = tune_thresholds(probs, targets, known, rule=self.cfg.threshold_rule,
                                     strength=self.cfg.threshold_strength)
        names = self.spec.class_names
        at_half = compute_metrics(probs, targets, known, names, DEFAULT_THRESHOLD)
        tuned = compute_metrics(probs, targets, known, names, thresholds)
        best.thresholds = thresholds
        best.metrics = {
            "epoch": best.epoch, "val_map": mean_average_precision(probs, targets, known),
            "valid_at_0.5": at_half.to_dict(), "valid_tuned": tuned.to_dict(),
        }
        save_checkpoint(best, self.run_dir / "best.pt")
        if self.head_run is not None:
            result.auto = self._auto_summary(result)
        info = {
            "backbone": self.cfg.backbone, "strategy": self.resolved.strategy.value,
            "img_size": self.preprocess.img_size,
            "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "stopped": result.stopped,
            "train_images": len(self.train_split), "valid_images": len(self.val_split),
            "data": str(self.cfg.data), "checkpoint": str(self.run_dir / "best.pt"),
            "threshold_rule": self.cfg.threshold_rule,
            "teacher": self.cfg.teacher,
            "labels_per_image_truth": float(((targets > 0.5) & known).sum(axis=1).mean()),
            "labels_per_image_tuned": labels_per_image(probs, thresholds),
            "labels_per_image_at_0.5": labels_per_image(probs, DEFAULT_THRESHOLD),
        }
        if result.auto is not None:
            info.update({f"auto_{k}": v for k, v in result.auto.items()})
        _report.write_report(self.run_dir, split="valid", at_half=at_half, tuned=tuned, info=info)
        s = self.state
        ends = [int(r.get("iteration", r["epoch"] * self.batches_per_epoch)) for r in s.history]
        _report.plot_loss(list(range(1, len(s.losses) + 1)), s.losses, self.run_dir / "loss.png",
                          val_iterations=ends, val_losses=[r["val_loss"] for r in s.history])
        _report.plot_val_map([r["epoch"] for r in s.history], [r["val_map"] for r in s.history],
                             self.run_dir / "val_map.png")
        _report.plot_pr_curves(probs, targets, known, names, self.run_dir / "pr_curves.png")
        result.report, result.report_at_half, result.thresholds = tuned, at_half, thresholds


def fit(cfg: TrainConfig, *, force: bool = False) -> FitResult:
    """Train a new run into ``cfg.out``.

    ``cfg.out`` must be new or an empty folder: an earlier run there is refused (continue it with :func:`resume`)
    and so is any other non-empty folder, unless ``force`` (an earlier run's files are then removed first; in
    another folder only the files the run writes are replaced). Temporary files a killed run left there are
    removed.
    """
    prepare_out(Path(cfg.out), force=force)
    if cfg.strategy is Strategy.AUTO:
        return _fit_auto(cfg)
    return _Run(cfg, None).run()


def _auto_phases(cfg: TrainConfig) -> tuple[TrainConfig, TrainConfig]:
    """The two runs of --strategy auto: the cached-feature head (in ``out/head``) and fine-tuning (in ``out``)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--strategy auto starts with a cached-feature head, which runs in one process; under "
                          "torchrun pass --strategy finetune (or run auto without torchrun)")
    head = dataclasses.replace(cfg, out=str(Path(cfg.out) / AUTO_HEAD_DIR), epochs=cfg.head_epochs, **AUTO_HEAD)
    finetune = dataclasses.replace(cfg, strategy=Strategy.FINETUNE,
                                   patience=cfg.patience if cfg.patience is not None else AUTO_PATIENCE)
    return head, finetune


def _fit_auto(cfg: TrainConfig) -> FitResult:
    started = time.perf_counter()
    head_cfg, finetune_cfg = _auto_phases(cfg)
    head_run = _Run(head_cfg, None)  # loads the data first: a user error is one line, not after a progress line
    log.info("auto: [1/2] a head on cached encoder features (%d epochs)", head_cfg.epochs)
    head = head_run.run()
    if head.stopped == "interrupted":
        return head
    log.info("auto: [2/2] fine-tuning (val mAP %.4f to beat, patience %d)", head.best_map,
             finetune_cfg.patience)
    result = _Run(finetune_cfg, None, saved=cfg, head=head).run()
    result.seconds = time.perf_counter() - started
    return result


def _head_result(run_dir: Path) -> FitResult:
    """The finished head phase of an auto run, read back from ``run_dir/head`` (to resume its fine-tuning)."""
    path = run_dir / AUTO_HEAD_DIR / "best.pt"
    if not path.is_file():
        raise ConfigError(f"--resume {run_dir}: an auto run without its head phase ({path} is missing); start it "
                          "over with --force")
    ckpt = load_checkpoint(path)
    best = float((ckpt.metrics or {}).get("val_map", math.nan))
    history = run_dir / AUTO_HEAD_DIR / "history.jsonl"
    rows = [json.loads(line) for line in history.read_text().splitlines()] if history.is_file() else []
    return FitResult(run_dir=run_dir / AUTO_HEAD_DIR, best_checkpoint=path, best_epoch=int(ckpt.epoch or 0),
                     best_map=best, epochs_run=len(rows), stopped="completed",
                     seconds=sum(float(r.get("seconds", 0.0)) for r in rows))


def resume(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> FitResult:
    """Continue the run in ``run_dir`` from its last completed epoch, with its saved configuration."""
    run_dir = Path(run_dir)
    if not (run_dir / "last.pt").is_file() or not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"--resume {run_dir}: no last.pt and config.yaml there; is it an `edgecls train` run folder?")
    overrides = dict(overrides or {})
    fixed = sorted(k for k in overrides if k not in RESUMABLE)
    if fixed:
        raise ConfigError(
            f"--resume keeps the run's settings; {', '.join(fixed)} cannot change (only {', '.join(RESUMABLE)} can)"
        )
    cfg = build_config(TrainConfig, yaml_path=run_dir / "config.yaml", overrides=overrides)
    cfg = dataclasses.replace(cfg, out=str(run_dir))
    if int(os.environ.get("RANK", "0")) == 0:
        remove_leftovers(run_dir)
    ckpt = load_checkpoint(run_dir / "last.pt")
    if ckpt.training is None:
        raise ConfigError(f"{run_dir / 'last.pt'}: holds no training state to resume from")
    if cfg.strategy is Strategy.AUTO:  # the head phase is done: continue the fine-tuning phase
        _, finetune_cfg = _auto_phases(cfg)
        return _Run(finetune_cfg, ckpt, saved=cfg, head=_head_result(run_dir)).run()
    return _Run(cfg, ckpt).run()
