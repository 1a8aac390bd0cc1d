"""A case result survives its wire form unchanged, with every field, in plain types."""

from __future__ import annotations

import dataclasses
import json

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from swarmctl.results import OUTCOMES, CaseResult, Subtest

texts = st.text(max_size=20)
subtests = st.builds(Subtest, texts, st.sampled_from(OUTCOMES), texts)
results = st.builds(
    CaseResult,
    case_id=texts,
    outcome=st.sampled_from(OUTCOMES),
    duration=st.floats(min_value=0, max_value=1e6),
    executor=texts,
    attempt=st.integers(min_value=1, max_value=5),
    message=texts,
    longrepr=texts,
    stdout=texts,
    counted_as=st.tuples(st.sampled_from(OUTCOMES)),
    subtests=st.lists(subtests, max_size=3).map(tuple),
    exit_code=st.none() | st.integers(min_value=-255, max_value=255),
    signal=st.none() | st.just("SIGSEGV"),
    warnings=st.lists(texts, max_size=2).map(tuple),
    flaky=st.booleans(),
    reassigned_from=st.lists(texts, max_size=2).map(tuple),
)


@given(results)
def test_wire_form_round_trips(result: CaseResult) -> None:
    wire = result.to_wire()
    assert set(wire) == {f.name for f in dataclasses.fields(CaseResult)}
    assert CaseResult.from_wire(msgpack.unpackb(msgpack.packb(wire))) == result
    assert CaseResult.from_wire(json.loads(json.dumps(wire))) == result


@given(results)
def test_wire_form_holds_no_shared_or_tuple_values(result: CaseResult) -> None:
    wire = result.to_wire()
    for name in ("counted_as", "subtests", "warnings", "reassigned_from"):
        assert isinstance(wire[name], list)
    assert all(isinstance(item, dict) for item in wire["subtests"])
    wire["subtests"].append({})
    assert len(result.to_wire()["subtests"]) == len(result.subtests)
