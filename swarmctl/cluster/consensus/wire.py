"""Consensus messages as msgpack-ready maps, and back.

Each message becomes a map with its type under ``t``, the common fields ``term``,
``from`` and ``to``, and its own fields under their names. Entries travel as
``[index, term, kind, command]`` and snapshots as ``[index, term, data]``. Decoding
checks every field's type and raises ProtocolError naming the field, so a malformed
frame never reaches the core.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

from swarmctl.cluster.consensus.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    TimeoutNow,
)
from swarmctl.errors import ProtocolError

TYPES: dict[str, type] = {
    "vote": RequestVote,
    "vote_response": RequestVoteResponse,
    "append": AppendEntries,
    "append_response": AppendEntriesResponse,
    "heartbeat": Heartbeat,
    "heartbeat_response": HeartbeatResponse,
    "snapshot": InstallSnapshot,
    "timeout_now": TimeoutNow,
}
_NAMES = {cls: name for name, cls in TYPES.items()}
# Fields with a wire name other than their attribute name.
_RENAMED = {"source": "from", "target": "to"}
# Per message type: (attribute name, wire name, whether it has a default), computed once
# because dataclasses.fields is slow enough to show in the simulator's profile.
_FIELDS = {
    cls: tuple(
        (field.name, _RENAMED.get(field.name, field.name), field.default is not MISSING) for field in fields(cls)
    )
    for cls in TYPES.values()
}


def to_wire(message: Message) -> dict[str, Any]:
    """Return ``message`` as a map of msgpack-encodable values."""
    wire: dict[str, Any] = {"t": _NAMES[type(message)]}
    for name, wire_name, _ in _FIELDS[type(message)]:
        value = getattr(message, name)
        if name == "entries":
            value = [[entry.index, entry.term, int(entry.kind), entry.command] for entry in value]
        elif name == "snapshot":
            value = [value.index, value.term, value.data]
        wire[wire_name] = value
    return wire


def from_wire(wire: Any) -> Message:
    """Return the message that ``wire`` encodes; raise ProtocolError if its shape is wrong."""
    if type(wire) is not dict:
        raise ProtocolError(f"consensus message must be a map, not {type(wire).__name__}")
    cls = TYPES.get(wire.get("t"))  # type: ignore[arg-type]
    if cls is None:
        raise ProtocolError(f"unknown consensus message type {wire.get('t')!r}")

    values: dict[str, Any] = {}
    for name, wire_name, has_default in _FIELDS[cls]:
        if wire_name not in wire:
            if has_default:
                continue
            raise ProtocolError(f"consensus message {wire['t']!r} is missing field {wire_name!r}")
        values[name] = _decode_field(wire["t"], name, wire_name, wire[wire_name])
    return cls(**values)


def _decode_field(kind: str, name: str, wire_name: str, value: Any) -> Any:
    match name:
        case "source" | "target":
            expected: type = str
        case "pre_vote" | "transfer" | "granted" | "success":
            expected = bool
        case "entries":
            return tuple(_decode_entry(kind, item) for item in _require_list(kind, name, value))
        case "snapshot":
            index, term, data = _require_list(kind, name, value, length=3)
            return Snapshot(
                _require(kind, name, index, int), _require(kind, name, term, int), _require(kind, name, data, bytes)
            )
        case _:
            expected = int
    return _require(kind, wire_name, value, expected)


def _decode_entry(kind: str, item: Any) -> Entry:
    index, term, entry_kind, command = _require_list(kind, "entries", item, length=4)
    try:
        decoded_kind = EntryKind(_require(kind, "entries", entry_kind, int))
    except ValueError:
        raise ProtocolError(f"consensus message {kind!r} has an entry of unknown kind {entry_kind}") from None
    return Entry(
        _require(kind, "entries", index, int),
        _require(kind, "entries", term, int),
        decoded_kind,
        _require(kind, "entries", command, bytes),
    )


def _require_list(kind: str, name: str, value: Any, length: int | None = None) -> list[Any]:
    if type(value) not in (list, tuple) or (length is not None and len(value) != length):
        shape = "a list" if length is None else f"a list of {length}"
        raise ProtocolError(f"consensus message {kind!r} field {name!r} must be {shape}, not {value!r:.60}")
    return list(value)


def _require(kind: str, name: str, value: Any, expected: type) -> Any:
    # bool is a subclass of int, so check the exact type.
    if type(value) is not expected:
        raise ProtocolError(
            f"consensus message {kind!r} field {name!r} must be of type {expected.__name__}, "
            f"not {type(value).__name__}"
        )
    return value
