"""Executor labels: parsing --labels, comparing values, matching requirements."""

from __future__ import annotations

import pytest

from swarmctl.errors import UsageError
from swarmctl.labels import builtin_labels, format_labels, label_value, parse_labels, satisfies


def test_labels_parsed():
    assert parse_labels(" os=linux, browser = chromium ,,") == {"os": "linux", "browser": "chromium"}
    assert parse_labels("") == {}


@pytest.mark.parametrize("text", ["os", "=linux", "os=linux,gpu"])
def test_labels_invalid_part_named(text):
    with pytest.raises(UsageError, match=r"invalid label .* in --labels: expected key=value"):
        parse_labels(text)


def test_labels_values_compare_as_text():
    assert label_value(True) == "true"
    assert label_value(False) == "false"
    assert label_value(8) == "8"
    assert satisfies({"gpu": "true", "cores": "8"}, {"gpu": label_value(True), "cores": label_value(8)})


def test_labels_requirement_needs_every_pair():
    labels = {"os": "linux", "browser": "chromium"}

    assert satisfies(labels, {})
    assert satisfies(labels, {"os": "linux"})
    assert not satisfies(labels, {"os": "linux", "gpu": "true"})
    assert not satisfies(labels, {"browser": "firefox"})


def test_labels_builtin_and_format():
    builtin = builtin_labels()

    assert set(builtin) == {"os", "arch"}
    assert builtin["os"] == "linux"
    assert format_labels({"b": "2", "a": "1"}) == "a=1,b=2"
    assert format_labels({}) == "(none)"
