"""Tests of truncate, wrap and display_width."""

import time

import pytest

from textkit import display_width, truncate, wrap

SENTENCE = "The quick brown fox jumps over the lazy dog"


@pytest.mark.parametrize(
    "width, expected",
    [
        (100, SENTENCE),
        (20, "The quick brown fox…"),
        (12, "The quick…"),
    ],
)
def test_truncate(width, expected):
    time.sleep(0.3)  # simulated slow work, so a live progress display has something to show

    assert truncate(SENTENCE, width) == expected


def test_truncate_fits_width():
    for width in range(1, len(SENTENCE) + 1):
        assert len(truncate(SENTENCE, width)) <= width


def test_truncate_long_word():
    assert truncate("Supercalifragilistic", 8) == "Superca…"


def test_truncate_custom_placeholder():
    assert truncate(SENTENCE, 15, placeholder=" [...]") == "The quick [...]"


def test_truncate_width_too_small():
    with pytest.raises(ValueError, match="smaller than the placeholder"):
        truncate(SENTENCE, 2, placeholder="...")


def test_truncate_deliberate_fail():
    # DELIBERATE FAILURE: the expected string ignores that the placeholder counts
    # toward the width, so the report shows an assertion diff between two strings.
    assert truncate(SENTENCE, 20) == "The quick brown fox jumps…"


@pytest.mark.parametrize("width", [10, 20, 30])
def test_wrap_line_lengths(width):
    time.sleep(0.25)  # simulated slow work

    lines = wrap(SENTENCE, width)

    assert all(len(line) <= width for line in lines)
    assert " ".join(lines) == SENTENCE


def test_wrap_long_word_gets_own_line():
    assert wrap("a extraordinarily b", 5) == ["a", "extraordinarily", "b"]


def test_wrap_rejects_zero_width():
    with pytest.raises(ValueError, match="at least 1"):
        wrap(SENTENCE, 0)


@pytest.mark.parametrize(
    "text, columns",
    [
        ("日本語", 6),
        ("cafe\u0301", 4),
        ("ｆｕｌｌ", 8),
    ],
    ids=["cjk", "combining-accent", "fullwidth"],
)
def test_display_width(text, columns):
    assert display_width(text) == columns
