"""The one place where library errors become click's one-line `Error: ...` (shared by every command module)."""

from __future__ import annotations

import functools
from typing import Any, Callable

import click

from edgecls._deps import missing_extra
from edgecls.errors import EdgeclsError


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into a one-line `Error: ...` and exit code 1 (2 for usage errors, as click does)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EdgeclsError as exc:
            raise click.ClickException(str(exc)) from None
        except ImportError as exc:  # an extra's module imported without `require` (runtime-only install)
            missing = missing_extra(exc)
            if missing is None:
                raise
            raise click.ClickException(str(missing)) from None

    return wrapper
