"""Check the values of a decoded frame against the annotations of its message class.

msgpack gives back whatever the peer packed, so a frame with the right field names can still
carry a string where a number belongs, and the handler that receives it would fail far from
the cause. ``check_fields`` checks each field before the message object is made:

- ``str``, ``bool``, ``bytes`` and ``dict`` must match exactly, an ``int`` must not be a
  ``bool``, and a ``float`` may also be an ``int``;
- ``X | None`` and other unions accept any of their members;
- ``list[X]`` and ``tuple[X, ...]`` check every element, and ``dict[K, V]`` every key and
  value, so a nested shape is checked to the depth its annotation gives;
- ``Any`` accepts everything; handlers that take ``Any`` parts check them where they use them.

A field of another type is reported with its name, the expected type and what arrived.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any, Union

from swarmctl.errors import ProtocolError


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Return the resolved annotation of each field of a message class."""
    return typing.get_type_hints(cls)


def check_fields(kind: str, cls: type, values: dict[str, Any]) -> None:
    """Raise ProtocolError naming the first field of ``values`` whose value does not fit its annotation."""
    hints = field_types(cls)
    for name, value in values.items():
        expected = hints.get(name, Any)
        if not _fits(value, expected):
            raise ProtocolError(
                f"{kind} frame has an invalid {name!r} field: expected {_describe(expected)}, got {_describe_value(value)}"
            )


@functools.cache
def _shape(expected: Any) -> tuple[Any, tuple]:
    """Return the origin and arguments of an annotation: computed once per annotation, not once per value."""
    return typing.get_origin(expected), typing.get_args(expected)


def _fits(value: Any, expected: Any) -> bool:
    if expected is Any:
        return True
    origin, args = _shape(expected)
    if origin in (Union, types.UnionType):
        return any(_fits(value, member) for member in args)
    if origin is typing.ClassVar:
        return True
    if expected is type(None):
        return value is None
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is None:
        return isinstance(value, expected)

    if origin is list:
        return isinstance(value, list) and (not args or all(_fits(item, args[0]) for item in value))
    if origin is tuple:
        # msgpack returns arrays as lists, so a tuple field arrives as a list.
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(item, args[0]) for item in value)
        return len(args) == len(value) and all(_fits(item, arg) for item, arg in zip(value, args))
    if origin is dict:
        if not isinstance(value, dict):
            return False
        key_type, value_type = args or (Any, Any)
        # Results are lists of dicts of str to Any: their keys are checked without a call per key.
        if key_type is str:
            keys_fit = all(isinstance(key, str) for key in value)
        else:
            keys_fit = all(_fits(key, key_type) for key in value)
        return keys_fit and (value_type is Any or all(_fits(item, value_type) for item in value.values()))
    return isinstance(value, origin)


def _describe(expected: Any) -> str:
    if isinstance(expected, type) and typing.get_origin(expected) is None:
        return expected.__name__
    return str(expected).replace("typing.", "")


def _describe_value(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
