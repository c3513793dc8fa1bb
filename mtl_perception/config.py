"""Strict dataclass configs: YAML in, typed dataclasses out, unknown keys and wrong types refused."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, TypeVar

from mtl_perception.errors import UserError

T = TypeVar("T")

SCALAR_TYPES = (bool, int, float, str)
_FLOAT_WITHOUT_DOT = re.compile(r"[-+]?\d+[eE][-+]?\d+")


class ConfigError(UserError, ValueError):
    """A configuration file or mapping does not match its schema."""


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data`` recursively; unknown keys and wrong types raise ``ConfigError``.

    Nested dataclass fields accept mappings; tuple fields accept lists. Scalar fields (bool, int,
    float, str, optionally None) and tuples of scalars are type-checked here, element by element,
    so every config names ``lr: "fast"`` as such; range and choice checks stay in each dataclass's
    ``__post_init__``. Missing keys take the dataclass defaults.
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        value = _coerce(hints[name], value, f"{where}.{name}" if where else name)
        mismatch = _type_mismatch(hints[name], value)
        if mismatch:
            raise ConfigError(f"{where or cls.__name__}: {name}: {mismatch}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _coerce(args[0], value, where)
        return value
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def is_float_text(value: Any) -> bool:
    """True for text like ``"3e-4"``: YAML 1.1 (PyYAML) reads a float without a dot as a string."""
    return isinstance(value, str) and _FLOAT_WITHOUT_DOT.fullmatch(value.strip()) is not None


def _type_mismatch(hint: Any, value: Any) -> str | None:
    """Why ``value`` does not fit ``hint``; None if it fits or the hint is not scalar / tuple of scalars."""
    options = _union_args(hint)
    checked = [a for a in options if a in SCALAR_TYPES or typing.get_origin(a) is tuple]
    if not checked:
        return None  # nested dataclasses check themselves; dicts and Any are free-form
    if value is None and type(None) in options:
        return None
    for option in checked:
        if typing.get_origin(option) is tuple and isinstance(value, tuple):
            return _tuple_mismatch(option, value)
        if option in SCALAR_TYPES and _fits_scalar(option, value):
            return None
    names = " or ".join(_type_name(a) for a in options)
    hint_text = " (YAML reads 1e-3 as text: write 1.0e-3)" if is_float_text(value) else ""
    return f"expected {names}, got {value!r}{hint_text}"


def _tuple_mismatch(hint: Any, value: tuple[Any, ...]) -> str | None:
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
        item_hints = (args[0],) * len(value)
    elif len(args) != len(value):
        return f"expected {len(args)} values, got {list(value)!r}"
    else:
        item_hints = args
    for index, (item_hint, item) in enumerate(zip(item_hints, value, strict=True)):
        mismatch = _type_mismatch(item_hint, item)
        if mismatch:
            return f"item {index}: {mismatch}"
    return None


def _union_args(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _fits_scalar(expected: type, value: Any) -> bool:
    if isinstance(value, bool):  # bool is an int subclass: refuse `max_steps: true`
        return expected is bool
    if expected is float:  # an int is a fine float (PEP 484 numeric tower)
        return isinstance(value, int | float)
    return isinstance(value, expected)


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is tuple:
        return "a list"
    return getattr(hint, "__name__", str(hint))


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-data view of a config dataclass (tuples become lists, safe for YAML and torch.save)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))
