"""Hostile frames for swarmctl.protocol.decode: every input either decodes to a well-typed message or raises ProtocolError."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmctl import protocol
from swarmctl.errors import ProtocolError
from swarmctl.wire_types import check_fields, field_types

# Any value msgpack can carry, nested a few levels, with text that may hold lone surrogates.
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1), st.floats(allow_nan=True),
    st.text(max_size=20), st.binary(max_size=20),
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12
)
KINDS = sorted(protocol._REGISTRY)


def decodes_cleanly(frame: bytes) -> protocol.Message | None:
    """Decode ``frame``; return the message, or None when it is rejected with ProtocolError."""
    try:
        message = protocol.decode(frame)
    except ProtocolError:
        return None
    values = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    check_fields(message.KIND, type(message), values)  # a message that decodes has well-typed fields
    return message


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(frame=st.binary(max_size=512))
def test_decode_arbitrary_bytes(frame: bytes) -> None:
    decodes_cleanly(frame)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_decode_fields_of_any_type(kind: str, data: st.DataObject) -> None:
    cls = protocol._REGISTRY[kind]
    names = list(field_types(cls))
    chosen = data.draw(st.lists(st.sampled_from(names), unique=True) if names else st.just([]))
    frame = {"k": kind, **{name: data.draw(VALUES, label=name) for name in chosen}}

    decodes_cleanly(msgpack.packb(frame, use_bin_type=True, unicode_errors="surrogatepass"))


@pytest.mark.parametrize("kind", KINDS)
def test_decode_truncated_frames(kind: str) -> None:
    cls = protocol._REGISTRY[kind]
    frame = msgpack.packb({"k": kind, **{name: None for name in field_types(cls)}}, use_bin_type=True)

    for end in range(len(frame)):
        assert decodes_cleanly(frame[:end]) is None


@pytest.mark.parametrize("depth", [10, 1_000, 100_000])
def test_decode_deeply_nested(depth: int) -> None:
    frame = b"\x82\xa1k\xa9log_batch\xa5lines" + b"\x91" * depth + b"\xc0"

    decodes_cleanly(frame)


def test_decode_wrong_type_names_field() -> None:
    frame = msgpack.packb({"k": "heartbeat", "free_slots": "many", "load": 0.5, "resources": {}, "held": []})

    with pytest.raises(ProtocolError, match="heartbeat frame has an invalid 'free_slots' field: expected int, got str 'many'"):
        protocol.decode(frame)


def test_decode_bool_is_not_int() -> None:
    frame = msgpack.packb({"k": "ack", "seq": True})

    with pytest.raises(ProtocolError, match="invalid 'seq' field"):
        protocol.decode(frame)


def test_decode_int_accepted_as_float() -> None:
    frame = msgpack.packb({"k": "welcome", "version": 3, "coordinator_id": "c", "term": 1, "heartbeat_s": 1, "lease_s": 5})

    message = protocol.decode(frame)

    assert message.heartbeat_s == 1


def test_decode_invalid_utf8_text() -> None:
    frame = b"\x82\xa1k\xa5leave\xa6reason\xa2\xff\xfe"

    message = decodes_cleanly(frame)

    assert message is None or isinstance(message.reason, str)
