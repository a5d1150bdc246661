"""Pretrained weight files for the backbones: reading a state_dict file, a checked load that names what does not fit,
the efficientnet-lite key remap (Lite0/1/2), and a failed download turned into a one-line :class:`ConfigError`."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from edgecls.errors import ConfigError

# efficientnet-lite checkpoint layout (EfficientNet-PyTorch style) -> timm tf_efficientnet_liteN: blocks per stage.
LITE0_REPEATS = (1, 2, 2, 3, 3, 4, 1)
LITE_REPEATS = {0: LITE0_REPEATS, 1: (1, 3, 3, 4, 4, 5, 1), 2: (1, 3, 3, 4, 4, 5, 1)}
_LITE0_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LITE0_BLOCK0 = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def one_line(exc: BaseException) -> str:
    return re.sub(r"\s+", " ", f"{type(exc).__name__}: {exc}").strip()[:300]


def download(name: str, build: Callable[[], nn.Module], *, hint: str) -> nn.Module:
    try:
        return build()
    except Exception as exc:
        raise ConfigError(
            f"{name}: the ImageNet weights could not be downloaded ({one_line(exc)}); pass --weights PATH "
            f"(a local {hint} file for this architecture) or --no-pretrained"
        ) from exc


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{path}: not a readable weights file ({one_line(exc)})") from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ConfigError(
            f"{path}: expected a state_dict (name -> tensor), or a dict with a 'state_dict' or 'model' key"
        )
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel / DDP
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def load_checked(model: nn.Module, state: dict[str, Tensor], *, path: Path | str, skip: tuple[str, ...]) -> None:
    """Load ``state`` strictly, except keys under the ``skip`` prefixes (classifier), which are ignored."""

    def skipped(key: str) -> bool:
        return any(key == s or key.startswith(s + ".") for s in skip)

    state = {k: v for k, v in state.items() if not skipped(k)}
    own = {k: v for k, v in model.state_dict().items() if not skipped(k)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shape)):
        if keys:
            more = f" (+{len(keys) - 4} more)" if len(keys) > 4 else ""
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:4])}{more}")
    if problems:
        raise ConfigError(
            f"{path}: does not fit this architecture ({'; '.join(problems)}); pass a state_dict saved from the "
            f"same architecture"
        )
    model.load_state_dict(state, strict=False)


def lite_remap(state: dict[str, Tensor], repeats: tuple[int, ...]) -> dict[str, Tensor]:
    """EfficientNet-PyTorch key names (``_blocks.N._expand_conv``) -> timm ``tf_efficientnet_liteN`` names, with
    ``repeats`` blocks per stage (``LITE_REPEATS[N]``)."""
    positions = [(s, i) for s, r in enumerate(repeats) for i in range(r)]
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            n = int(m[1])
            if n >= len(positions) or m[2] not in (_LITE0_BLOCK0 if n == 0 else _LITE0_BLOCK):
                out[key] = value  # left for the strict load to report
                continue
            s, i = positions[n]
            out[f"blocks.{s}.{i}.{(_LITE0_BLOCK0 if n == 0 else _LITE0_BLOCK)[m[2]]}.{m[3]}"] = value
        else:
            top, _, rest = key.partition(".")
            out[f"{_LITE0_TOP[top]}.{rest}" if top in _LITE0_TOP else key] = value
    return out
