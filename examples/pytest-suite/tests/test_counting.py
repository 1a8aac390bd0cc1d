"""Tests of words, word_count and word_frequencies, using a module-scoped corpus."""

import pathlib
import time

import pytest

from textkit import word_count, word_frequencies

CORPUS_PATH = pathlib.Path(__file__).parent / "data" / "corpus.txt"


@pytest.fixture(scope="module")
def corpus():
    """Load the corpus once for all tests in this module."""
    time.sleep(0.3)  # simulated slow load, which shows in the timing of the first test that uses it
    return CORPUS_PATH.read_text(encoding="utf-8")


def test_word_count_empty():
    assert word_count("") == 0


def test_word_count_punctuation_only():
    assert word_count("... -- !?") == 0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("don't stop", 2),
        ("l'été est là", 3),
        ("東京 大阪", 2),
    ],
)
def test_word_count(text, expected):
    assert word_count(text) == expected


def test_corpus_word_count(corpus):
    time.sleep(0.25)  # simulated slow work, so a live progress display has something to show

    assert word_count(corpus) == 48


class TestWordFrequencies:
    def test_ignores_case(self):
        assert word_frequencies("The the THE")["the"] == 3

    def test_missing_word_is_zero(self):
        assert word_frequencies("alpha beta")["gamma"] == 0

    def test_corpus_most_common(self, corpus):
        time.sleep(0.2)  # simulated slow work

        assert word_frequencies(corpus).most_common(2) == [("it", 8), ("was", 8)]

    def test_corpus_rare_word(self, corpus):
        time.sleep(0.15)  # simulated slow work

        assert word_frequencies(corpus)["incredulity"] == 1

    def test_corpus_lookup_deliberate_fail(self, corpus):
        # DELIBERATE FAILURE: a plain dict lookup of a word the corpus does not
        # contain raises KeyError, to show a test that fails with an exception
        # rather than an assertion. The print shows up as captured stdout.
        counts = dict(word_frequencies(corpus))
        print(f"corpus has {len(counts)} distinct words")

        assert counts["dickens"] > 0
