"""Tests of the msgpack form of consensus messages."""

from __future__ import annotations

import msgpack
import pytest

from swarmctl.cluster.consensus import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    TimeoutNow,
)
from swarmctl.cluster.consensus.wire import from_wire, to_wire
from swarmctl.errors import ProtocolError

MESSAGES = [
    RequestVote(3, "a", "b", 5, 2, pre_vote=True),
    RequestVote(4, "a", "b", 5, 2, transfer=True),
    RequestVoteResponse(3, "b", "a", True, pre_vote=True),
    AppendEntries(2, "a", "b", 4, 1, (Entry(5, 2, EntryKind.NOOP), Entry(6, 2, EntryKind.COMMAND, b"\x00cmd")), 3),
    AppendEntries(2, "a", "b", 0, 0, (), 0),
    AppendEntriesResponse(2, "b", "a", False, 4, 2),
    Heartbeat(1, "a", "b", 3),
    HeartbeatResponse(1, "b", "a"),
    InstallSnapshot(4, "a", "b", Snapshot(9, 3, b"sqlite backup")),
    TimeoutNow(2, "a", "b"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda message: type(message).__name__)
def test_wire_round_trip(message) -> None:
    assert from_wire(msgpack.unpackb(msgpack.packb(to_wire(message)))) == message


def test_wire_optional_flags_may_be_left_out() -> None:
    wire = {"t": "vote", "term": 2, "from": "a", "to": "b", "last_log_index": 1, "last_log_term": 1}
    assert from_wire(wire) == RequestVote(2, "a", "b", 1, 1)


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        ([1, 2], "must be a map"),
        ({"t": "gossip"}, "unknown consensus message type 'gossip'"),
        ({"t": "heartbeat", "term": 1, "from": "a", "to": "b"}, "missing field 'commit'"),
        ({"t": "heartbeat", "term": "1", "from": "a", "to": "b", "commit": 0}, "field 'term' must be of type int"),
        ({"t": "heartbeat", "term": True, "from": "a", "to": "b", "commit": 0}, "field 'term' must be of type int"),
        ({"t": "timeout_now", "term": 1, "from": 7, "to": "b"}, "field 'from' must be of type str"),
        (
            {"t": "append", "term": 1, "from": "a", "to": "b", "prev_log_index": 0, "prev_log_term": 0,
             "entries": [[1, 1, 9, b""]], "leader_commit": 0},
            "entry of unknown kind 9",
        ),
        (
            {"t": "snapshot", "term": 1, "from": "a", "to": "b", "snapshot": [1, 1]},
            "field 'snapshot' must be a list of 3",
        ),
    ],
)
def test_wire_rejects_malformed_message(wire, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        from_wire(wire)
