"""Tests of optional features, which show the ways pytest skips a test."""

import time

import pytest

import textkit


@pytest.fixture
def hyphenation():
    """Skip the requesting test during setup when hyphenation is unavailable."""
    if not textkit.HAS_HYPHENATION:
        pytest.skip("hyphenation dictionary not installed")
    return textkit.hyphenate


@pytest.mark.skip(reason="spell checking is planned but not written yet")
def test_spell_check():
    raise AssertionError("unreachable: the skip marker stops this test")


@pytest.mark.skipif(not textkit.HAS_HYPHENATION, reason="hyphenation dictionary not installed")
def test_hyphenate_marker():
    assert textkit.hyphenate("syllable") == ["syl", "la", "ble"]


def test_hyphenate_runtime_skip():
    time.sleep(0.2)  # simulated slow feature probe before the skip
    if not textkit.HAS_HYPHENATION:
        pytest.skip("hyphenation dictionary not installed")

    assert textkit.hyphenate("syllable") == ["syl", "la", "ble"]


def test_hyphenate_fixture_skip(hyphenation):
    assert hyphenation("syllable") == ["syl", "la", "ble"]


def test_hyphenate_unavailable_raises():
    time.sleep(0.2)  # simulated slow work

    with pytest.raises(NotImplementedError, match="dictionary"):
        textkit.hyphenate("syllable")


def test_small_words_are_lowercase():
    assert all(word == word.lower() for word in textkit.SMALL_WORDS)
