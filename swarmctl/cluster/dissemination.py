"""Wire shapes of membership updates, and the queue that piggybacks them on packets.

An update is one member's state as a small msgpack-able dict:

    {"n": node id, "i": incarnation, "s": "alive" | "suspect" | "dead" | "left",
     "a": [host, port], "m": meta (alive only), "f": accuser id (suspect and dead only)}

Short keys matter: an update is sent many times and a packet carries as many as fit.
Messages are dicts with a type ``"t"``, the sender id ``"from"`` and, on most types, a
list of updates ``"g"``. This module checks their shape, so that the membership core can
trust every field it reads. A wrong shape raises ProtocolError.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

from swarmctl.errors import ProtocolError

STATES = frozenset({"alive", "suspect", "dead", "left"})

# Upper bound on the bytes that adding {"g": [...]} with up to 65,535 items adds to a
# message, besides the items themselves: the 2-byte key and a 3-byte array header.
PIGGYBACK_FRAME_BYTES = 5
# Smallest update that could still fit: once less room is left, the queue stops looking.
MIN_UPDATE_BYTES = 24


def packed_size(value: Any) -> int:
    """Return the number of bytes of ``value`` encoded with msgpack."""
    return len(msgpack.packb(value))


class Update(NamedTuple):
    """A checked update, with the dict it came from for re-broadcasting unchanged."""

    node_id: str
    incarnation: int
    state: str
    address: tuple[str, int]
    meta: dict[str, Any] | None
    accuser: str
    wire: dict[str, Any]


def require_str(message: dict[str, Any], key: str) -> str:
    value = message.get(key)
    if type(value) is not str:
        raise ProtocolError(f"membership message field {key!r} must be a string, not {type(value).__name__}")
    return value


def require_int(message: dict[str, Any], key: str) -> int:
    value = message.get(key)
    if type(value) is not int or value < 0:
        raise ProtocolError(f"membership message field {key!r} must be a non-negative integer, not {value!r}")
    return value


def parse_address(value: Any) -> tuple[str, int]:
    if (
        type(value) not in (list, tuple)
        or len(value) != 2
        or type(value[0]) is not str
        or type(value[1]) is not int
        or not 0 <= value[1] <= 65535
    ):
        raise ProtocolError(f"membership address must be [host, port], not {value!r}")
    return value[0], value[1]


def parse_update(value: Any) -> Update:
    """Check the shape of one update and return it as an Update."""
    if type(value) is not dict:
        raise ProtocolError(f"membership update must be a map, not {type(value).__name__}")
    node_id = require_str(value, "n")
    incarnation = require_int(value, "i")
    state = value.get("s")
    if state not in STATES:
        raise ProtocolError(f"membership update for {node_id!r} has unknown state {state!r}")
    address = parse_address(value.get("a"))

    meta = value.get("m")
    if meta is not None and type(meta) is not dict:
        raise ProtocolError(f"membership update for {node_id!r} has meta of type {type(meta).__name__}, not a map")
    if state == "alive" and meta is None:
        raise ProtocolError(f"alive update for {node_id!r} lacks its meta")

    accuser = value.get("f", "")
    if type(accuser) is not str:
        raise ProtocolError(f"membership update for {node_id!r} has an accuser that is not a string")
    return Update(node_id, incarnation, state, address, meta, accuser, value)


def parse_updates(message: dict[str, Any], key: str = "g") -> list[Update]:
    """Check and return the list of updates under ``key``; a missing key is an empty list."""
    value = message.get(key)
    if value is None:
        return []
    if type(value) is not list:
        raise ProtocolError(f"membership message field {key!r} must be a list of updates")
    return [parse_update(item) for item in value]


class _Queued:
    __slots__ = ("size", "transmits", "update")

    def __init__(self, update: dict[str, Any], size: int) -> None:
        self.update = update
        self.size = size
        self.transmits = 0


class BroadcastQueue:
    """Updates waiting to be piggybacked, each sent until it reaches the retransmit limit.

    The queue keeps the newest update per member: queuing an update drops the older ones
    about the same member. The exception is suspicion, where confirmations by different
    accusers at the same incarnation are kept side by side, because each one shortens the
    suspicion timeout of its receivers. The least-sent updates go first, so news spreads
    before repeats.
    """

    def __init__(self, max_update_bytes: int) -> None:
        self._max_update_bytes = max_update_bytes
        self._items: dict[tuple[str, str], _Queued] = {}
        self._keys_by_member: dict[str, set[tuple[str, str]]] = {}
        self.dropped_oversized = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(self, update: dict[str, Any]) -> None:
        """Queue ``update`` for sending, in place of the older updates about the same member."""
        node_id = update["n"]
        suspect = update["s"] == "suspect"
        key = (node_id, update.get("f", "") if suspect else "")

        keys = self._keys_by_member.setdefault(node_id, set())
        for old_key in list(keys):
            old = self._items[old_key].update
            if not suspect or old["s"] != "suspect" or old["i"] < update["i"] or old_key == key:
                del self._items[old_key]
                keys.discard(old_key)

        size = packed_size(update)
        if size > self._max_update_bytes:
            # Only meta can make an update this large, and a node checks its own meta, so
            # this comes from a node configured with a larger limit. It would never fit.
            self.dropped_oversized += 1
            if not keys:
                del self._keys_by_member[node_id]
            return
        self._items[key] = _Queued(update, size)
        keys.add(key)

    def discard(self, node_id: str) -> None:
        """Drop every queued update about ``node_id``."""
        for key in self._keys_by_member.pop(node_id, ()):
            self._items.pop(key, None)

    def take(self, budget: int, limit: int, first: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Return the updates to piggyback in ``budget`` bytes, counting each as sent once.

        ``first``, if given, goes in ahead of the queue and is not counted, and a queued copy
        of it is skipped. An update that has been sent ``limit`` times leaves the queue.
        """
        chosen: list[dict[str, Any]] = []
        if first is not None:
            size = packed_size(first)
            if size <= budget:
                chosen.append(first)
                budget -= size
        if not self._items:
            return chosen

        for key, item in sorted(self._items.items(), key=lambda pair: pair[1].transmits):
            if item.size > budget or (first is not None and item.update == first):
                continue
            chosen.append(item.update)
            budget -= item.size
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[key]
                keys = self._keys_by_member[key[0]]
                keys.discard(key)
                if not keys:
                    del self._keys_by_member[key[0]]
            if budget < MIN_UPDATE_BYTES:
                break
        return chosen
