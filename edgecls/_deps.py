"""Import optional heavy dependencies where they are used, with an error that names the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from edgecls.errors import MissingDependency


def require(module: str, *, extra: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` naming ``pip install "edgecls[extra]"``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        name = package or module.split(".")[0]
        raise MissingDependency(
            f"{name} is needed for this and is not installed ({exc}); install it with: pip install \"edgecls[{extra}]\""
        ) from exc


def has(module: str) -> bool:
    """True when ``module`` can be imported (without importing it if it is already absent)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
