"""Dataclass configs built from plain values (YAML, JSON) and checked against their type hints.

One builder for the training configs and the model configs: an unknown key or a value of the wrong
type is an :class:`InputError` naming the source and the key; sections missing keys keep their defaults.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from shmoareg.errors import InputError

Config = TypeVar("Config")


def build_dataclass(default: Config, values: Any, source: str, prefix: str = "") -> Config:
    """A copy of the dataclass instance ``default`` with the keys of a mapping replaced, recursing into
    nested sections (so a section keeps its owner's defaults for the keys not given)."""
    where = prefix.rstrip(".") or "top level"
    if not isinstance(values, dict):
        raise InputError(f"{source}: {where} must be a mapping of keys to values, not {type(values).__name__}")
    hints = typing.get_type_hints(type(default))
    names = {f.name for f in dataclasses.fields(default)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(f"{source}: unknown key {prefix}{unknown[0]}; known keys here: {', '.join(sorted(names))}")
    built = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            built[name] = build_dataclass(getattr(default, name), value or {}, source, f"{prefix}{name}.")
        else:
            built[name] = _coerce(value, hint, source, f"{prefix}{name}")
    return dataclasses.replace(default, **built)


def plain(value: Any) -> Any:
    """``value`` with tuples turned into lists, recursively (JSON- and YAML-friendly)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def _coerce(value: Any, hint: Any, source: str, key: str) -> Any:
    """Check a scalar, list or mapping value against its type hint (ints are accepted as floats)."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        if value is None and type(None) in arguments:
            return None
        return _coerce(value, next(a for a in arguments if a is not type(None)), source, key)
    if origin is tuple:
        if len(arguments) == 2 and arguments[1] is Ellipsis:  # tuple[T, ...]: any length
            if not isinstance(value, (list, tuple)):
                raise InputError(f"{source}: {key} must be a list, not {value!r}")
            return tuple(_coerce(item, arguments[0], source, key) for item in value)
        if not isinstance(value, (list, tuple)) or len(value) != len(arguments):
            raise InputError(f"{source}: {key} must be a list of {len(arguments)} values, not {value!r}")
        return tuple(_coerce(item, kind, source, key) for item, kind in zip(value, arguments))
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"{source}: {key} must be a mapping, not {value!r}")
        return dict(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise InputError(f"{source}: {key} must be {hint.__name__}, not {value!r}")
    return value
