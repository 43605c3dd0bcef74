"""The fields of a frozen dataclass, coerced and checked from one table (pure: no I/O).

A class declares each field once, with its type and default; :func:`setting` adds bounds
(``ge``, ``gt``, ``le``) or a check of the field's own. :func:`field_table` turns the
declarations into a table, one :class:`SettingField` per field, and :func:`check_fields` runs
the table on each new instance, so that constructing one (or ``dataclasses.replace``) validates.

The user is ``tether.server.config.Settings``. Its values come from TOML, ``TETHER_*`` strings
and flag strings, so the coercions accept those forms: ``"4001"`` → 4001 (``"4.5"``, ``"abc"``
and booleans refused), ``"1.5"`` or 2 → a float, ``"yes"``/``"off"``/… → a bool, a list of
strings → a tuple, a string → a ``Path``, a ``Literal``'s choices, None where the type is
``X | None``.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType, NoneType, UnionType
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from tether.errors import ConfigError

T = TypeVar("T")
Check = Callable[[Any], Any]
"""A value as given → the field's value, or ``ValueError`` whose text is the one-line reason."""


def setting(
    default: T,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    check: Check | None = None,
) -> T:
    """A dataclass field's default, with bounds or a check that runs after its type's coercion."""
    return field(default=default, metadata={"ge": ge, "gt": gt, "le": le, "check": check})


@dataclass(frozen=True, slots=True)
class SettingField:
    """One field of the table: its default, and how a given value becomes its value."""

    name: str
    default: Any
    coerce: Check
    optional: bool = False  # None is a value (the type is X | None)
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    check: Check | None = None

    def validate(self, value: Any) -> Any:
        """The field's value for ``value``; ``ValueError`` with a one-line reason if it has none."""
        if value is None and self.optional:
            return None
        result = self.coerce(value)
        if self.ge is not None and not result >= self.ge:
            raise ValueError(f"must be at least {self.ge}")
        if self.gt is not None and not result > self.gt:
            raise ValueError(f"must be greater than {self.gt}")
        if self.le is not None and not result <= self.le:
            raise ValueError(f"must be at most {self.le}")
        return result if self.check is None else self.check(result)


def field_table(cls: type) -> Mapping[str, SettingField]:
    """The fields of the dataclass ``cls`` by name, in declaration order."""
    types = get_type_hints(cls)
    return MappingProxyType(
        {f.name: _field(f.name, types[f.name], f.default, f.metadata) for f in fields(cls)}
    )


def check_fields(instance: object, table: Mapping[str, SettingField]) -> None:
    """Coerce and check every field of a new frozen ``instance`` in place, in table order:
    ConfigError names the first bad one (``_`` shown as ``-``, as the flags spell it)."""
    for spec in table.values():
        given = getattr(instance, spec.name)
        try:
            value = spec.validate(given)
        except ValueError as exc:
            raise ConfigError(spec.name.replace("_", "-"), str(exc)) from None
        if value is not given:
            object.__setattr__(instance, spec.name, value)  # frozen: only while it is built


def _field(name: str, kind: Any, default: Any, metadata: Mapping[str, Any]) -> SettingField:
    optional = get_origin(kind) is UnionType and NoneType in get_args(kind)
    if optional:
        (kind,) = (arg for arg in get_args(kind) if arg is not NoneType)
    return SettingField(name, default, _coercion(kind), optional, **metadata)


def _coercion(kind: Any) -> Check:
    if get_origin(kind) is Literal:
        return _one_of(get_args(kind))
    if get_origin(kind) is tuple and get_args(kind)[1:] == (Ellipsis,):
        return _tuple_of(get_args(kind)[0])
    return _COERCIONS[kind]  # KeyError: a type this table does not know yet


_INTEGER = re.compile(r"[+-]?[0-9](?:_?[0-9])*(?:\.0*)?")  # "4001", "+5", "1_000", "4.0"
_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "off", "f", "n"})


def _to_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(text := value.strip()):
        try:
            return int(text.partition(".")[0])
        except ValueError:  # more digits than int() converts
            pass
    raise ValueError("must be an integer")


def _to_float(value: Any) -> float:
    number = math.nan
    # float() also takes other scripts' digits, and booleans: neither is a number here.
    ascii_text = not isinstance(value, str) or value.isascii()
    if isinstance(value, int | float | str) and not isinstance(value, bool) and ascii_text:
        with contextlib.suppress(ValueError, OverflowError):
            number = float(value)  # "1.5", " 2 ", "1e-3", "1_0", "inf"
    if math.isnan(number):
        raise ValueError("must be a number")
    return number


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ValueError("must be true or false")


def _to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _to_path(value: Any) -> Path:
    if not isinstance(value, str | Path):
        raise ValueError("must be a file path")
    return Path(value)


def _tuple_of(item: type) -> Check:
    noun = "strings" if item is str else f"{item.__name__} values"

    def coerce(value: Any) -> tuple[Any, ...]:
        if isinstance(value, list | tuple | set | frozenset) and all(
            isinstance(i, item) for i in value
        ):
            return tuple(value)
        raise ValueError(f"must be a list of {noun}")

    return coerce


def _one_of(choices: tuple[str, ...]) -> Check:
    def coerce(value: Any) -> str:
        if isinstance(value, str) and value in choices:
            return value
        raise ValueError(f"must be one of {', '.join(choices)}")

    return coerce


_COERCIONS: dict[Any, Check] = {
    int: _to_int,
    float: _to_float,
    bool: _to_bool,
    str: _to_str,
    Path: _to_path,
}
