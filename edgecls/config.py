"""Frozen dataclass configs, their YAML form, and the rules that turn CLI flags into a config.

A YAML config is only a serialised dataclass: keys are the field names (``encoder_lr_scale`` or the flag
spelling ``encoder-lr-scale``); an unknown key fails and names the closest valid one. Flags given on the
command line override the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

from edgecls.errors import ConfigError

T = TypeVar("T")


def field(default: Any = dataclasses.MISSING, *, help: str, flag: bool = True, cli_name: str | None = None,
          short: str | None = None, multiple: bool = False, required: bool = False,
          choices: tuple[str, ...] | None = None, shown: str | None = None, switch: bool = False,
          **kwargs: Any) -> Any:
    """A dataclass field with help text and how its command-line flag looks (``edgecls.cli.options`` reads it).

    Args:
        default: The field's default (omit it for a required field).
        help: What the field means; the flag's help text.
        flag: False keeps it out of the generated CLI options (an argument, or set another way).
        cli_name: The flag's name when it is not the field's (``--target`` for ``targets``).
        short: A one-letter alias (``-t``).
        multiple: A tuple field whose flag is repeated (``--target a --target b``), not comma-separated.
        required: The flag must be given.
        choices: The values a ``str`` field accepts.
        shown: What the help shows as the default when the value itself says little (``"all here"`` for ``()``).
        switch: A bool flag without a ``--no-`` form.
    """
    metadata = {"help": help, "flag": flag, "cli_name": cli_name, "short": short, "multiple": multiple,
                "required": required, "choices": choices, "shown": shown, "switch": switch}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _closest(name: str, valid: list[str]) -> str | None:
    """The valid name closest to ``name``, ignoring case (``mAP`` -> ``map``); None when none is close."""
    lowered = {v.lower(): v for v in valid}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1)
    return lowered[close[0]] if close else None


def _suggest(name: str, valid: list[str]) -> str:
    close = _closest(name, valid)
    return f"; did you mean {close!r}?" if close else ""


def check_keys(
    valid: type | Iterable[str],
    data: Mapping[str, Any],
    where: str,
    *,
    noun: str = "field",
    required: Iterable[str] = (),
    dashes: bool = False,
) -> None:
    """Refuse a mapping whose keys are not ``valid``'s: the one unknown-key check of every config and record.

    Args:
        valid: A dataclass (its field names) or the valid names, in the order the message lists them.
        data: The parsed mapping (YAML config, JSON record, keyword overrides).
        where: Where ``data`` came from (a file, ``"manifest.json: artifacts[0]"``); the message starts with it.
        noun: What a key is called in the message (``"field"`` for records, ``"key"`` for configs).
        required: Names that must be present too.
        dashes: Accept the flag spelling (``encoder-lr-scale`` for ``encoder_lr_scale``).

    Raises:
        ConfigError: ``data`` is not a mapping, has unknown keys (each named with its closest valid key) or lacks
            a required one; the message lists the valid names.
    """
    names = [f.name for f in dataclasses.fields(valid)] if isinstance(valid, type) else list(valid)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of {noun}s, got {type(data).__name__}")

    def spelled(key: Any) -> str:
        return str(key).replace("-", "_") if dashes else str(key)

    unknown = [k for k in data if spelled(k) not in names]
    given = {spelled(k) for k in data}
    missing = [n for n in required if n not in given]
    if not unknown and not missing:
        return
    parts = []
    if len(unknown) == 1:
        parts.append(f"unknown {noun} {unknown[0]!r}{_suggest(spelled(unknown[0]), names)}")
    elif unknown:
        hints = [f"{k!r} (did you mean {c!r}?)" if (c := _closest(spelled(k), names)) else repr(k) for k in unknown]
        parts.append(f"unknown {noun}s {', '.join(hints)}")
    if missing:
        parts.append(f"missing {noun}(s) {', '.join(missing)}")
    raise ConfigError(f"{where}: {' and '.join(parts)} (valid {noun}s: {', '.join(names)})")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def coerce(cls: type, name: str, value: Any, *, source: str) -> Any:
    """Convert ``value`` (from YAML or a flag) to the declared type of ``cls.name``; raise ConfigError if it can't."""
    hints = typing.get_type_hints(cls)
    tp, optional = _unwrap_optional(hints[name])
    if value is None:
        if optional:
            return None
        if typing.get_origin(tp) is tuple:  # a null list is the empty list (so a saved `teacher: null` loads)
            return ()
        raise ConfigError(f"{source}: {name} cannot be empty")
    try:
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            try:
                return tp(str(value).lower())
            except ValueError:
                valid = [m.value for m in tp]
                raise ConfigError(
                    f"{source}: invalid {name} {value!r}; valid: {', '.join(valid)}{_suggest(str(value), valid)}"
                ) from None
        if tp is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if tp is str:
            return str(value)
        if typing.get_origin(tp) is tuple:
            (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
            items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
            return tuple(item(v) for v in items)
    except ConfigError:
        raise
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: invalid value {value!r} for {name} (expected {_type_name(tp)})") from None
    return value


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return "a comma-separated list"
    return getattr(tp, "__name__", str(tp))


def config_from_mapping(cls: type[T], data: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """Validate keys of ``data`` against the dataclass ``cls`` and coerce values; returns field -> value."""
    check_keys(cls, data, source, noun="key", dashes=True)
    return {str(k).replace("-", "_"): coerce(cls, str(k).replace("-", "_"), v, source=source) for k, v in data.items()}


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return data


def build_config(cls: type[T], *, yaml_path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> T:
    """Defaults <- YAML file <- explicit overrides (CLI flags), validated; returns the frozen config."""
    values: dict[str, Any] = {}
    if yaml_path is not None:
        values.update(config_from_mapping(cls, load_yaml(yaml_path), source=str(yaml_path)))
    if overrides:
        values.update(config_from_mapping(cls, overrides, source="command line"))
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"incomplete config: {exc}") from None


def to_plain(cfg: Any) -> dict[str, Any]:
    """A config as plain YAML/JSON-ready values (enums by value, tuples as lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, enum.Enum):
            v = v.value
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def dump_yaml(cfg: Any) -> str:
    import yaml

    return yaml.safe_dump(to_plain(cfg), sort_keys=False)
