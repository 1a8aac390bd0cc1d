"""Tests for the JSON the HTTP API writes: infinite and NaN floats become null."""

from __future__ import annotations

import json
import math

import pytest

from swarmctl import protocol
from swarmctl.coordinator.http_api import JSONResponse, json_text, message_json

NOT_FINITE = [math.inf, -math.inf, math.nan]


@pytest.mark.parametrize("number", NOT_FINITE)
def test_json_text_nulls_non_finite(number: float) -> None:
    value = {"eta_s": number, "rows": [{"spent": [1.5, number]}], "name": "caf\u00e9"}

    text = json_text(value)

    assert json.loads(text) == {"eta_s": None, "rows": [{"spent": [1.5, None]}], "name": "caf\u00e9"}
    assert "Infinity" not in text
    assert "NaN" not in text


def test_json_text_plain_when_finite() -> None:
    progress = protocol.RunProgress("run-1", "running", 10, 4, 2, [["t.py::test_a", "passed"]], 12.5, 10.0, 15.0, "rate")
    value = message_json(progress)

    assert json_text(value) == json.dumps(value)


@pytest.mark.parametrize("number", NOT_FINITE)
def test_json_response_nulls_non_finite(number: float) -> None:
    response = JSONResponse({"ratio": number, "counts": {"passed": 3}})

    assert json.loads(response.body) == {"ratio": None, "counts": {"passed": 3}}


def test_json_response_compact_when_finite() -> None:
    assert JSONResponse({"ratio": 0.5, "ids": ["a", "b"]}).body == b'{"ratio":0.5,"ids":["a","b"]}'
