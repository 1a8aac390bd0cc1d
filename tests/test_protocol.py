"""Tests of swarmctl.protocol: the msgpack frame of every message kind and its checks."""

from __future__ import annotations

import dataclasses
import os
import types
import zlib
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmctl import protocol
from swarmctl.errors import ProtocolError

# Node ids as pytest writes them: parametrize ids keep non-ASCII letters and escape control
# characters with a backslash, so an id may contain the literal text "\x00" or "\n".
NODE_IDS = [
    "tests/test_unicode.py::test_name[café-δ-日本]",
    "tests/test_escapes.py::test_bytes[\\x00\\xff]",
    "tests/test_escapes.py::test_text[line\\nbreak\\ttab]",
    "tests/test_escapes.py::test_unicode_escape[\\u2603]",
    "tests/test_backslash.py::test_path[C:\\\\Users\\\\me]",
    "tests/test_emoji.py::test_face[😀]",
]


def sample_value(hint: Any, name: str) -> Any:
    """Build a plausible value of the type ``hint`` for the field ``name``."""
    origin = typing.get_origin(hint)
    if hint is typing.Any:
        return {"nested": [1, "two", 3.5, None]}
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return sample_value(options[0], name)
    if origin is list:
        (item,) = typing.get_args(hint)
        return [sample_value(item, name), sample_value(item, name + "-second")]
    if origin is dict:
        key, value = typing.get_args(hint)
        assert key is str, f"{name}: only str keys are expected on the wire"
        return {"key-one": sample_value(value, name), "key-two": sample_value(value, name + "-second")}
    if hint is bool:
        return True
    if hint is int:
        return 7
    if hint is float:
        return 1.25
    if hint is str:
        return f"{name}-värde"
    if hint is bytes:
        return bytes(range(256))
    raise AssertionError(f"no sample for field {name} of type {hint!r}")


def sample_message(cls: type[protocol.Message]) -> protocol.Message:
    hints = typing.get_type_hints(cls)
    values = {f.name: sample_value(hints[f.name], f.name) for f in dataclasses.fields(cls)}
    return cls(**values)


def frame_of(data: Any) -> bytes:
    return msgpack.packb(data, use_bin_type=True)


@pytest.mark.parametrize("kind", sorted(protocol._REGISTRY))
def test_protocol_round_trip_every_kind(kind: str) -> None:
    cls = protocol._REGISTRY[kind]
    message = sample_message(cls)

    frame = protocol.encode(message)
    decoded = protocol.decode(frame)

    assert cls.KIND == kind
    assert type(decoded) is cls
    assert decoded == message


def test_protocol_registry_covers_message_subclasses() -> None:
    registered = set(protocol._REGISTRY.values())
    defined = {
        value
        for value in vars(protocol).values()
        if isinstance(value, type) and issubclass(value, protocol.Message) and value is not protocol.Message
    }

    assert defined == registered


def test_protocol_frame_is_map_with_kind() -> None:
    frame = protocol.encode(protocol.Heartbeat(free_slots=3, load=0.5))

    data = msgpack.unpackb(frame, raw=False)

    assert data == {"k": "heartbeat", "free_slots": 3, "load": 0.5, "resources": {}, "held": []}


def test_protocol_defaults_fill_omitted_fields() -> None:
    decoded = protocol.decode(frame_of({"k": "hello", "version": 1, "role": "client", "node_id": "n1"}))

    assert decoded == protocol.Hello(version=1, role="client", node_id="n1")


def test_protocol_unknown_kind() -> None:
    with pytest.raises(ProtocolError, match="unknown message kind 'gossip'"):
        protocol.decode(frame_of({"k": "gossip", "rumour": "x"}))


def test_protocol_unknown_field() -> None:
    frame = frame_of({"k": "ack", "seq": 1, "priority": "high"})

    with pytest.raises(ProtocolError, match=r"ack frame has unknown fields \['priority'\]"):
        protocol.decode(frame)


def test_protocol_missing_field() -> None:
    frame = frame_of({"k": "welcome", "version": 1, "term": 3})

    with pytest.raises(ProtocolError, match="welcome frame is missing fields") as caught:
        protocol.decode(frame)

    assert "coordinator_id" in str(caught.value)


@pytest.mark.parametrize(
    "data",
    [
        [1, 2, 3],
        "hello",
        42,
        None,
        {"kind": "hello"},
        {"k": 5},
        {"k": b"hello"},
    ],
    ids=["list", "string", "integer", "nil", "no-k", "integer-k", "binary-k"],
)
def test_protocol_non_map_frame(data: Any) -> None:
    with pytest.raises(ProtocolError, match="expected a map with a string field 'k'"):
        protocol.decode(frame_of(data))


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",
        b"\x92\x01",
        b"\x80\x80",
        b"\x81\x01\x02",
        b"\xa2\xff\xfe",
        b"GET / HTTP/1.1\r\n\r\n",
    ],
    ids=["empty", "reserved-byte", "truncated-array", "trailing-data", "integer-key", "invalid-utf8", "http-text"],
)
def test_protocol_garbage_bytes(frame: bytes) -> None:
    with pytest.raises(ProtocolError, match="malformed frame"):
        protocol.decode(frame)


def test_protocol_oversized_encode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "MAX_FRAME_BYTES", 1024)
    message = protocol.BundleChunk(digest="ab" * 32, data=b"\0" * 2048, last=False)

    with pytest.raises(ProtocolError, match="bundle_chunk frame of .* bytes exceeds the limit of 1024 bytes"):
        protocol.encode(message)


def test_protocol_oversized_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = protocol.encode(protocol.BundleChunk(digest="ab" * 32, data=b"\0" * 2048, last=True))
    monkeypatch.setattr(protocol, "MAX_FRAME_BYTES", 1024)

    with pytest.raises(ProtocolError, match=f"frame of {len(frame)} bytes exceeds the limit of 1024 bytes"):
        protocol.decode(frame)


def test_protocol_frame_at_limit_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    message = protocol.BundleChunk(digest="ab" * 32, data=b"\0" * 2048, last=True)
    frame = protocol.encode(message)
    monkeypatch.setattr(protocol, "MAX_FRAME_BYTES", len(frame))

    assert protocol.encode(message) == frame
    assert protocol.decode(frame) == message


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_protocol_node_ids_survive(node_id: str) -> None:
    collected = protocol.Collected(
        run_id="run-1",
        case_ids=[node_id, "tests/test_plain.py::test_a"],
        collect_results=[{"case_id": node_id, "outcome": "skipped", "message": "skip ☂"}],
    )
    assign = protocol.Assign(
        run_id="run-1",
        shard_id=0,
        attempt=1,
        term=1,
        suite={"kind": "pytest", "bundle": "0" * 64, "name": "suite"},
        case_ids=[node_id],
        collection_digest="f" * 64,
    )

    assert protocol.decode(protocol.encode(collected)) == collected
    assert protocol.decode(protocol.encode(assign)) == assign
    assert protocol.decode(protocol.encode(assign)).case_ids[0] == node_id


def test_protocol_undecodable_file_name_survives() -> None:
    # pytest names a file whose name is not valid UTF-8 with the surrogate escape of the byte:
    # the file b"test_\xff.py" is collected as "test_\udcff.py::test_a".
    node_id = "test_\udcff.py::test_a"
    collected = protocol.Collected(run_id="run-1", case_ids=[node_id], collect_results=[])

    decoded = protocol.decode(protocol.encode(collected))

    assert decoded.case_ids == [node_id]


@given(digest=st.text(), data=st.binary(), last=st.booleans())
def test_protocol_bundle_chunk_arbitrary_values(digest: str, data: bytes, last: bool) -> None:
    message = protocol.BundleChunk(digest=digest, data=data, last=last)

    assert protocol.decode(protocol.encode(message)) == message


@given(
    run_id=st.text(),
    case_ids=st.lists(st.text()),
    messages=st.lists(st.text(), max_size=3),
    error=st.text(),
    output=st.binary(),
)
def test_protocol_collected_arbitrary_values(
    run_id: str, case_ids: list[str], messages: list[str], error: str, output: bytes
) -> None:
    collect_results = [
        {"case_id": f"tests/test_{i}.py", "outcome": "error", "message": text, "raw": output}
        for i, text in enumerate(messages)
    ]
    message = protocol.Collected(
        run_id=run_id,
        case_ids=case_ids,
        collect_results=collect_results,
        error=error,
    )

    assert protocol.decode(protocol.encode(message)) == message


def test_protocol_run_progress_eta_round_trip() -> None:
    message = protocol.RunProgress(
        run_id="run-1",
        status="running",
        total=400,
        done=120,
        executors=3,
        outcomes=[["tests/test_a.py::test_x", "failed"]],
        eta_s=130.5,
        eta_low_s=110.0,
        eta_high_s=160.25,
        eta_basis="durations",
        counts={"passed": 117, "failed": 3},
    )

    decoded = protocol.decode(protocol.encode(message))

    assert decoded == message
    assert decoded.counts == {"passed": 117, "failed": 3}


def test_protocol_run_progress_unknown_eta_round_trip() -> None:
    message = protocol.RunProgress("run-1", "running", 10, 0, 1, [], None, None, None, "unknown", {})

    decoded = protocol.decode(protocol.encode(message))

    assert decoded == message
    assert decoded.eta_s is None


def test_protocol_run_progress_without_eta_fields_decodes() -> None:
    # The frame of a coordinator that predates the ETA fields.
    frame = frame_of(
        {"k": "progress", "run_id": "run-1", "status": "running", "total": 4, "done": 1, "executors": 2,
         "outcomes": [["tests/test_a.py::test_x", "passed"]]}
    )

    decoded = protocol.decode(frame)

    assert decoded == protocol.RunProgress("run-1", "running", 4, 1, 2, [["tests/test_a.py::test_x", "passed"]])
    assert decoded.eta_s is None
    assert decoded.eta_low_s is None
    assert decoded.eta_high_s is None
    assert decoded.eta_basis == "unknown"
    assert decoded.counts == {}


# --- compression of large frames ---------------------------------------------------------------


def _results_of(size: int) -> protocol.RunResults:
    longrepr = "\n".join(f"E   assert value_{i} == expected_{i}" for i in range(size // 30))
    return protocol.RunResults("run-1", [{"case_id": "t.py::test_a", "outcome": "failed", "longrepr": longrepr}])


def test_compress_large_frame_round_trip():
    message = _results_of(200_000)
    plain = msgpack.packb({"k": message.KIND, **{f.name: getattr(message, f.name) for f in dataclasses.fields(message)}}, use_bin_type=True)

    frame = protocol.encode(message)

    assert frame[:1] == protocol.COMPRESSED_MARK
    assert len(frame) < len(plain) // 5
    assert protocol.decode(frame) == message


def test_compress_skips_small_and_bundle_frames():
    small = _results_of(1_000)
    chunk = protocol.BundleChunk("a" * 64, b"\0" * 200_000, False)

    assert protocol.encode(small)[:1] != protocol.COMPRESSED_MARK
    assert protocol.encode(chunk)[:1] != protocol.COMPRESSED_MARK
    assert protocol.decode(protocol.encode(chunk)) == chunk


def test_compress_skips_incompressible_frame():
    message = protocol.ConsensusFrame({"data": os.urandom(100_000)})

    frame = protocol.encode(message)

    assert frame[:1] != protocol.COMPRESSED_MARK
    assert protocol.decode(frame) == message


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (protocol.COMPRESSED_MARK + zlib.compress(b"\0" * (protocol.MAX_FRAME_BYTES + 1000)), "inflates past the limit"),
        (protocol.COMPRESSED_MARK + zlib.compress(b"\x81\xa1k\xa4list" * 10_000)[:50], "truncated"),
        (protocol.COMPRESSED_MARK + b"not zlib at all", "compressed data is invalid"),
    ],
)
def test_compressed_frame_invalid(frame, message):
    with pytest.raises(ProtocolError, match=message):
        protocol.decode(frame)
