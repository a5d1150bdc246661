"""Click options built from a config dataclass's fields, and the choices read from the library's registries.

A field made with :func:`edgecls.config.field` becomes one option (``--encoder-lr-scale`` for ``encoder_lr_scale``)
whose default is None, so that only the flags the user gave override a YAML file and the dataclass's defaults; the
help shows the dataclass's default. :class:`ConfigCommand` builds those options the first time click needs them, so
``edgecls --help`` imports no config's package.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from typing import Any, Callable, Mapping, Sequence

import click

from edgecls.config import _unwrap_optional


def _shown(fld: dataclasses.Field[Any]) -> str | None:
    """The default as the help shows it (None: show none)."""
    if fld.metadata.get("shown") is not None:
        return str(fld.metadata["shown"])
    if fld.default is dataclasses.MISSING or fld.default is None or fld.metadata.get("multiple"):
        return None
    default = fld.default.value if isinstance(fld.default, enum.Enum) else fld.default
    shown = ",".join(str(d) for d in default) if isinstance(default, tuple) else str(default)
    return shown or None


def options_from(cls: type, *, exclude: tuple[str, ...] = (),
                 helps: Mapping[str, str] | None = None) -> list[click.Option]:
    """One click option per flag field of the dataclass ``cls``, in field order.

    Args:
        cls: A dataclass whose fields come from :func:`edgecls.config.field`.
        exclude: Fields left out (arguments, or flags the command declares itself).
        helps: Help texts that replace a field's own (e.g. one that lists a registry's names).
    """
    hints = typing.get_type_hints(cls)
    options: list[click.Option] = []
    for fld in dataclasses.fields(cls):
        meta = fld.metadata
        if not meta.get("flag", True) or fld.name in exclude:
            continue
        tp, _ = _unwrap_optional(hints[fld.name])
        flag = meta.get("cli_name") or "--" + fld.name.replace("_", "-")
        names = [meta["short"], flag, fld.name] if meta.get("short") else [flag, fld.name]
        text = (helps or {}).get(fld.name, meta.get("help", ""))
        shown = _shown(fld)
        # default None: a flag not given stays None (an explicit None default would also satisfy `required`)
        common: dict[str, Any] = {"required": True} if meta.get("required") else {"default": None}
        if tp is bool:
            if meta.get("switch"):
                options.append(click.Option(names, is_flag=True, help=text, **common))
            else:
                options.append(click.Option([f"{flag}/--no-{flag[2:]}", fld.name], help=(
                    f"{text} [default: {'yes' if fld.default else 'no'}]"), **common))
            continue
        multiple = bool(meta.get("multiple"))
        if multiple:
            (tp,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        kind: Any
        if meta.get("choices"):
            kind = click.Choice(tuple(meta["choices"]))
        elif isinstance(tp, type) and issubclass(tp, enum.Enum):
            kind = click.Choice([m.value for m in tp], case_sensitive=False)
        elif tp in (int, float):
            kind = tp
        else:
            kind = str  # str, and comma-separated tuples (converted by edgecls.config.coerce)
        options.append(click.Option(names, type=kind, multiple=multiple, help=(
            f"{text} [default: {shown}]" if shown is not None else text), **common))
    return options


class ConfigCommand(click.Command):
    """A command whose config options (from :func:`options_from`) are built when click first needs them.

    ``options`` imports the config's package, which ``edgecls --help`` then does not. The options go after the
    command's arguments, or after all its own parameters with ``last=True``.
    """

    def __init__(self, *args: Any, options: Callable[[], list[click.Option]], last: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._options: Callable[[], list[click.Option]] | None = options
        self._last = last

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if self._options is not None:
            options, self._options = self._options(), None
            at = len(self.params) if self._last else sum(isinstance(p, click.Argument) for p in self.params)
            self.params[at:at] = options
        return super().get_params(ctx)


class RegistryChoice(click.Choice):
    """A :class:`click.Choice` whose values come from a registry, read the first time they are needed."""

    def __init__(self, names: Callable[[], Sequence[str]]) -> None:
        self._names = names
        self._loaded: tuple[str, ...] | None = None
        super().__init__(())

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        if self._loaded is None:
            self._loaded = tuple(self._names())
        return self._loaded

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:  # click.Choice.__init__ sets it; the registry decides
        pass


def given(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The flags the user gave (options_from's options are None, or an empty tuple, when not given)."""
    return {k: v for k, v in flags.items() if v is not None and v != ()}
