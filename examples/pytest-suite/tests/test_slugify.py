"""Tests of slugify and normalize_whitespace.

The parametrized cases use non-ASCII input on purpose. pytest escapes non-ASCII
characters in node ids, so "café" appears as "caf\\xe9" in the id.
"""

import time

import pytest

from textkit import normalize_whitespace, slugify


@pytest.mark.parametrize(
    "text, expected",
    [
        ("café", "café"),
        ("日本語", "日本語"),
        ("🎉 party", "party"),
        ("Ünïcödé  Straße", "ünïcödé-straße"),
        ("  many   spaces  ", "many-spaces"),
    ],
)
def test_slugify_keeps_letters(text, expected):
    assert slugify(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("café", "cafe"),
        ("日本語 text", "text"),
        ("🎉", ""),
    ],
)
def test_slugify_ascii_only(text, expected):
    assert slugify(text, ascii_only=True) == expected


@pytest.mark.parametrize(
    "separator, expected",
    [
        ("_", "release_notes_2024"),
        (".", "release.notes.2024"),
        # DELIBERATE FAILURE: the expected slug is wrong, to show a failing
        # parametrized case next to passing ones.
        pytest.param("-", "release--notes--2024", id="deliberate-fail"),
    ],
)
def test_slugify_separator(separator, expected):
    assert slugify("Release Notes: 2024", separator=separator) == expected


def test_slugify_long_title():
    time.sleep(0.3)  # simulated slow work, so a live progress display has something to show
    title = " ".join(["word"] * 500)

    assert slugify(title) == "-".join(["word"] * 500)


@pytest.mark.parametrize(
    "text",
    ["a\tb", "a \r\n b", "\u00a0a b\u2003"],
    ids=["tab", "crlf", "unicode-spaces"],
)
def test_normalize_whitespace(text):
    assert normalize_whitespace(text) == "a b"
