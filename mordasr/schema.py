"""Typed dataclasses built from plain mappings (YAML configs, JSON files), every value checked.

One helper for every file mordasr reads into a dataclass (training configs, model folders, adapter
configs), so a typo or a wrong type is always the same one line naming the file and the key:
``configs/x.yaml: model.mor.top_k: expected int, got str 'x'`` or
``configs/x.yaml: model.mor.rnak: unknown key (did you mean 'rank'?)``, never a traceback later.

Field types understood: nested dataclasses, ``Literal``, unions and ``Optional``, ``list``,
``tuple`` (fixed length or ``...``), ``dict``, ``int``/``float``/``bool``/``str``, ``Path`` and
``Any``. This module is the lowest layer of the package: it imports nothing of mordasr.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar

T = TypeVar("T")


class SchemaError(ValueError):
    """A value that does not fit its field; the message is one line ``key: problem``.

    Raised from a dataclass's ``__post_init__``, its key is relative to that dataclass (a field
    name): :func:`from_mapping` puts the dataclass's own place in front of it.
    """


class _Mismatch(SchemaError):
    """The value at ``key`` is not of the expected type."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


def from_mapping(
    cls: type[T],
    data: Any,
    *,
    source: str | Path | None = None,
    key: str = "",
    error: Callable[[str], Exception] = SchemaError,
) -> T:
    """Build dataclass ``cls`` from the mapping ``data``, checking every value against its
    field's type (containers item by item, nested dataclasses recursively).

    Unknown keys, missing required keys, values of the wrong type and the ``ValueError`` s of a
    ``__post_init__`` all raise ``error`` (:class:`SchemaError` unless a caller wants its own
    type) with one line: ``source: key.path: problem``. ``source`` names the file the data came
    from; ``key`` is the dotted place of ``data`` in a larger document.
    """
    try:
        return _build(cls, data, key)
    except SchemaError as caught:
        message = str(caught)
    raise error(f"{source}: {message}" if source is not None else message) from None


def suggest(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to a misspelt ``name``, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(value: Any) -> str:
    """A value for an error message: its type and (shortened) repr, e.g. ``str 'ten'``."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _at(key: str, problem: str) -> str:
    return f"{key}: {problem}" if key else problem


def _build(cls: type[T], data: Any, key: str) -> T:
    if not isinstance(data, Mapping):
        raise _mismatch(cls, data, key)
    hints = typing.get_type_hints(cls)
    init_fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    names = [f.name for f in init_fields]
    kwargs = {}
    for name, value in data.items():
        place = f"{key}.{name}" if key else str(name)
        if name not in names:
            raise SchemaError(f"{place}: unknown key{suggest(str(name), names)}")
        kwargs[name] = _convert(hints[name], value, place)
    for f in init_fields:
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in kwargs:
            raise SchemaError(f"{key + '.' if key else ''}{f.name}: required key is missing")
    try:
        return cls(**kwargs)
    except SchemaError as caught:  # raised by __post_init__: its key is relative to cls
        raise SchemaError(f"{key}.{caught}" if key else str(caught)) from None
    except (ValueError, TypeError) as caught:
        raise SchemaError(_at(key, str(caught))) from None


def _convert(hint: Any, value: Any, key: str) -> Any:
    """``value`` as type ``hint`` (containers converted item by item), or a SchemaError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else _build(hint, value, key)  # type: ignore[arg-type]
    if origin is Literal:
        if value is False and "no" in args:  # YAML 1.1 reads a bare `no` as false
            value = "no"
        if value in args and not isinstance(value, bool):
            return value
        raise _mismatch(hint, value, key)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(hint, value, key)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise _mismatch(hint, value, key)
        return [_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        variadic = len(args) == 2 and args[1] is Ellipsis
        if not isinstance(value, list | tuple) or (not variadic and len(value) != len(args)):
            raise _mismatch(hint, value, key)
        items = args[:1] * len(value) if variadic else args
        pairs = enumerate(zip(items, value, strict=True))
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in pairs)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _mismatch(hint, value, key)
        return {k: _convert(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise _mismatch(hint, value, key)
    if isinstance(hint, type) and issubclass(hint, PurePath) and isinstance(value, str | PurePath):
        return hint(value)
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise _mismatch(hint, value, key)


def _convert_union(hint: Any, value: Any, key: str) -> Any:
    args = typing.get_args(hint)
    if value is None and type(None) in args:
        return None
    candidates = [arg for arg in args if arg is not type(None)]
    if len(candidates) == 1:  # an optional value: say what is wrong inside it
        try:
            return _convert(candidates[0], value, key)
        except _Mismatch as caught:
            if caught.key == key:
                raise _mismatch(hint, value, key) from None
            raise
    for arg in candidates:
        try:
            return _convert(arg, value, key)
        except SchemaError:
            continue
    raise _mismatch(hint, value, key)


def _mismatch(hint: Any, value: Any, key: str) -> _Mismatch:
    message = _at(key, f"expected {_type_name(hint)}, got {describe(value)}")
    if _type_name(hint).startswith("float") and _is_numeric_text(value):
        message += " (YAML reads 1e-4 as a string: write 1.0e-4)"
    return _Mismatch(message, key)


def _is_numeric_text(value: Any) -> bool:
    """Whether ``value`` is a string that reads as a number (YAML 1.1 keeps ``1e-4`` a string)."""
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        return f"a list of {_type_name(args[0])}"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"a list of {_type_name(args[0])}"
    if origin is tuple:
        return f"a list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
    if origin is dict:
        return f"a mapping of {_type_name(args[1])}"
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return f"a mapping ({hint.__name__})"  # type: ignore[union-attr]
    if isinstance(hint, type) and issubclass(hint, PurePath):
        return "a path (str)"
    return getattr(hint, "__name__", str(hint))
