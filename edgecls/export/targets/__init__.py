"""Export targets: one :class:`Target` per output format in a registry (:mod:`.registry`), one family module per
engine (``onnx``, ``openvino``, ``coreml``, ``tensorrt``) that registers its targets when imported; importing a
family module imports nothing heavy, so :func:`list_targets` works with no extras installed.

Adding a target means adding one file here that calls :func:`register`, plus its name in ``registry._FAMILIES``.
"""

from edgecls.export.targets.registry import (
    ALL,
    COMMON_OPTIONS,
    EXTRA_OF,
    Built,
    Runner,
    Target,
    expand_targets,
    get_target,
    list_targets,
    quiet,
    register,
)

__all__ = ["ALL", "COMMON_OPTIONS", "EXTRA_OF", "Built", "Runner", "Target", "expand_targets", "get_target",
           "list_targets", "quiet", "register"]
