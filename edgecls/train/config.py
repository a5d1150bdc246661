"""The training configuration: one frozen dataclass; CLI flags and YAML keys map one-to-one to its fields."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from edgecls.config import field
from edgecls.data.spec import DEFAULT_SEED, DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION, check_fractions
from edgecls.errors import ConfigError
from edgecls.metrics import DEFAULT_THRESHOLD_RULE, THRESHOLD_RULES
from edgecls.preprocess import Resize


class Strategy(str, enum.Enum):
    AUTO = "auto"  # a cached-feature head first (seconds), then fine-tuning (fresh head), early-stopped; best wins
    FREEZE = "freeze"  # head only, encoder frozen (BatchNorm in eval)
    FINETUNE = "finetune"  # everything, encoder at lr * encoder_lr_scale
    FULL = "full"  # everything at one lr
    STAGED = "staged"  # head for staged_head_epochs, then the last staged_unfreeze stages at a lower lr


class Loss(str, enum.Enum):
    BCE = "bce"
    FOCAL = "focal"
    ASL = "asl"


class Optimizer(str, enum.Enum):
    ADAMW = "adamw"
    ADAM = "adam"
    SGD = "sgd"


class Scheduler(str, enum.Enum):
    COSINE = "cosine"
    ONECYCLE = "onecycle"
    PLATEAU = "plateau"
    STEP = "step"
    CONSTANT = "constant"


class Augment(str, enum.Enum):
    NONE = "none"
    LIGHT = "light"
    STRONG = "strong"


class Head(str, enum.Enum):
    LINEAR = "linear"
    MLP = "mlp"


DEFAULT_DROPOUT = 0.2  # before the head's linear layer(s); ModelSpec's default too


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; saved resolved as ``config.yaml`` in the run directory."""

    data: str = field(help="dataset: label file, folder, YOLO data.yaml or COCO json", flag=False)
    out: str = field(help="run directory to write (checkpoints, reports, plots)", flag=False)
    # model
    backbone: str = field("efficientnet_lite0", help="backbone name (see `edgecls backbones`), or timm:<arch>")
    pretrained: bool = field(True, help="start from ImageNet weights")
    weights: str | None = field(None, help="local pretrained weights file for the backbone (offline)")
    head: Head = field(Head.LINEAR, help="classifier head")
    dropout: float = field(DEFAULT_DROPOUT, help="dropout before the head's linear layer(s)")
    # 0: 0.1 gave aquarium's default command val 0.9304 against 0.9338 (three seeds; benchmarks/RESULTS.md)
    drop_path: float = field(0.0, help="stochastic depth in training: the last block's drop rate (0 at the first, "
                             "rising linearly with the block's index; timm backbones and EfficientNet-Lite)")
    img_size: int | None = field(None, help="input size (default: the backbone's)")
    resize: Resize = field(Resize.SQUASH, help="squash: whole image to a square; shorter: resize + centre crop")
    # data
    classes: tuple[str, ...] | None = field(None, help="class names for label files without a header (a,b,c)")
    val_fraction: float = field(DEFAULT_VAL_FRACTION, help="validation share when the dataset has no own splits")
    test_fraction: float = field(DEFAULT_TEST_FRACTION, help="test share when the dataset has no own splits")
    strict: bool = field(False, help="missing or corrupt images are an error instead of skipped")
    # strong, not light: over three seeds of aquarium's default command, test mAP 0.9873 +- 0.0018 (each >= 0.985)
    # against 0.9796 +- 0.0078, val 0.9338 +- 0.0025 against 0.9348 +- 0.0076 (benchmarks/RESULTS.md, issue 14)
    augment: Augment = field(Augment.STRONG, help="training augmentation preset: light (crops of 70-100% of the "
                             "image, flips, a little colour), strong (crops of 35-100%, more colour, 5% grey), none")
    # strategy and optimisation
    strategy: Strategy = field(Strategy.AUTO, help="what to train; auto: a cached-feature head, then fine-tuning "
                               "(ImageNet weights, a fresh head); the better on validation is kept")
    cache_features: bool = field(False, help="freeze only: compute encoder features once, train the head on them")
    head_epochs: int = field(60, help="auto: epochs of its cached-feature head phase (seconds in all)")
    # 20, not 15: aquarium's fine-tuning val mAP still rose at the 15th of 15 epochs (0.9431); on a 20-epoch schedule it
    # was 0.9450 / test 0.9843 by epoch 13 (benchmarks/RESULTS.md, issue 14); ~7.9 min idle on 2 cores
    epochs: int = field(20, help="number of epochs (auto: of its fine-tuning phase)")
    batch_size: int = field(32, help="images per step (per process)")
    lr: float = field(3e-3, help="learning rate of the head (and of everything with --strategy full)")
    encoder_lr_scale: float = field(0.1, help="encoder lr = lr * this, for finetune and staged")
    weight_decay: float = field(1e-4, help="weight decay")
    optimizer: Optimizer = field(Optimizer.ADAMW, help="optimizer")
    momentum: float = field(0.9, help="SGD momentum")
    scheduler: Scheduler = field(Scheduler.COSINE, help="learning-rate schedule")
    warmup_epochs: float = field(1.0, help="linear warm-up length for cosine")
    step_epochs: int = field(10, help="step scheduler: epochs between decays")
    gamma: float = field(0.1, help="step/plateau decay factor")
    frozen_stages: int = field(0, help="finetune, full, staged and auto's fine-tuning: the first N encoder stages "
                               "(stem = 1) keep their ImageNet weights and BatchNorm statistics")
    staged_head_epochs: int = field(2, help="staged: epochs that train the head alone")
    staged_unfreeze: int = field(2, help="staged: number of last encoder stages to unfreeze after that")
    loss: Loss = field(Loss.BCE, help="loss (all masked on unknown labels)")
    pos_weight: str = field("none", help="BCE positive weights: auto, none, or one number per class (a,b,c)")
    focal_gamma: float = field(2.0, help="focal loss gamma")
    asl_gamma_neg: float = field(4.0, help="asymmetric loss gamma for negatives")
    asl_gamma_pos: float = field(0.0, help="asymmetric loss gamma for positives")
    asl_clip: float = field(0.05, help="asymmetric loss probability margin for negatives")
    grad_clip: float | None = field(None, help="clip the gradient norm to this value")
    accumulate: int = field(1, help="gradient accumulation steps")
    ema: bool = field(False, help="keep an exponential moving average of the weights; it is what is evaluated, "
                      "early-stopped on and saved in best.pt")
    ema_decay: float = field(0.999, help="EMA decay per step (with --ema-warmup: its ceiling)")
    ema_warmup: bool = field(True, help="EMA decay warms up per step as min(ema_decay, 1 - (1 + step)^-3/4), timm's "
                             "ModelEmaV3 warm-up for short runs: a short fine-tune averages its last epochs")
    patience: int | None = field(None, help="early stopping: epochs without val mAP improvement (auto: 3)")
    # 0: on aquarium's default command 3 epochs of cool-down gave val +0.0014 and test +0.0025 (means of three seeds,
    # no seed worse) for +1.5-2.8 min a run, spent after val mAP had stopped improving (benchmarks/RESULTS.md)
    cooldown_epochs: int = field(0, help="early stopping: when patience runs out, this many more epochs with the "
                                 "learning rate falling linearly to 0, then stop (the best epoch is kept; auto: "
                                 "not when fine-tuning is still below the head)")
    threshold_rule: str = field(DEFAULT_THRESHOLD_RULE, help=f"how per-class thresholds are tuned on validation: "
                                f"{', '.join(THRESHOLD_RULES)}")
    threshold_strength: float | None = field(None, help="shrink: positives at which a class keeps half its own "
                                             "threshold (20); floor: fewest positives for its own (20)")
    # distillation
    teacher: tuple[str, ...] = field((), multiple=True, help="distil from this run folder or checkpoint (same "
                                     "labels; any backbone or input size, each model gets its own preprocessing); "
                                     "repeat it for an ensemble, the mean of their probabilities")
    distill_weight: float = field(0.5, help="loss = (1 - w) * label loss + w * teacher loss")
    distill_temperature: float = field(1.0, help="temperature of the teacher's and the student's sigmoids")
    distill_unknown: bool = field(True, help="the teacher also teaches where a label is unknown (NA)")
    # execution
    device: str = field("auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    amp: bool = field(True, help="mixed precision: fp16/bf16 autocast on CUDA, bf16 on CPUs that have it")
    channels_last: bool = field(True, help="channels_last memory format")
    workers: int | None = field(None, help="data-loading worker processes (default: half the cores, at most 4; "
                                "none when training on a CPU, where each epoch's fork costs the step copy-on-write "
                                "page faults)")
    seed: int = field(DEFAULT_SEED, help="random seed")
    progress: bool = field(True, help="progress bars")

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.head_epochs >= 1, "head_epochs must be at least 1"),
            (self.cooldown_epochs >= 0, f"--cooldown-epochs must be 0 or more, got {self.cooldown_epochs!r}"),
            (0 <= self.distill_weight <= 1, f"--distill-weight must be in [0, 1], got {self.distill_weight!r}"),
            (math.isfinite(self.distill_temperature) and self.distill_temperature > 0,
             f"--distill-temperature must be a number above 0, got {self.distill_temperature!r}"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (math.isfinite(self.lr) and self.lr > 0,
             f"--lr must be a finite number above 0 (got {self.lr!r}), e.g. --lr 0.001"),
            (math.isfinite(self.encoder_lr_scale) and self.encoder_lr_scale > 0,
             f"--encoder-lr-scale must be a finite number above 0 (got {self.encoder_lr_scale!r})"),
            (self.accumulate >= 1, "accumulate must be at least 1"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (0 <= self.drop_path < 1, f"--drop-path must be in [0, 1), got {self.drop_path!r}"),
            (0 < self.ema_decay < 1, "ema_decay must be in (0, 1)"),
            (self.patience is None or self.patience >= 1, "patience must be at least 1"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip must be positive"),
            (self.img_size is None or self.img_size >= 32, "img_size must be at least 32"),
            (self.workers is None or self.workers >= 0, "workers must be >= 0"),
            (self.frozen_stages >= 0, f"--frozen-stages must be 0 or more, got {self.frozen_stages!r}"),
            (self.staged_head_epochs >= 0 and self.staged_unfreeze >= 1, "staged settings must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        check_fractions(self.val_fraction, self.test_fraction)
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ConfigError(f"--threshold-rule {self.threshold_rule!r}: valid: {', '.join(THRESHOLD_RULES)}")
        if self.threshold_strength is not None and not (
            math.isfinite(self.threshold_strength) and self.threshold_strength >= 0
        ):
            raise ConfigError(f"--threshold-strength must be a number >= 0, got {self.threshold_strength!r}")
        if self.cache_features and self.strategy is not Strategy.FREEZE:
            raise ConfigError("--cache-features needs --strategy freeze (a trained encoder changes its features; "
                              "--strategy auto caches them for its head phase by itself)")
        if self.pretrained is False and self.weights:
            raise ConfigError("--weights and --no-pretrained contradict each other; drop one")
