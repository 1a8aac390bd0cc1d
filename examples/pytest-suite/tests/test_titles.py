"""Tests of title_case and is_palindrome."""

import time

import pytest

from textkit import is_palindrome, title_case


@pytest.mark.parametrize(
    "text, expected",
    [
        ("the lord of the rings", "The Lord of the Rings"),
        ("a tale of two cities", "A Tale of Two Cities"),
        ("what the wind is for", "What the Wind Is For"),
    ],
)
def test_title_case(text, expected):
    time.sleep(0.25)  # simulated slow work

    assert title_case(text) == expected


def test_title_case_single_small_word():
    assert title_case("of") == "Of"


@pytest.mark.xfail(reason="title_case flattens inner capitals, see the NOTE in textkit.title_case", strict=True)
def test_title_case_keeps_inner_capitals():
    assert title_case("my new iPhone") == "My New iPhone"


class TestPalindrome:
    @pytest.mark.parametrize(
        "text",
        [
            "racecar",
            "A man, a plan, a canal: Panama",
            "Was it a car or a cat I saw?",
        ],
    )
    def test_palindromes(self, text):
        time.sleep(0.2)  # simulated slow work

        assert is_palindrome(text)

    def test_not_palindrome(self):
        assert not is_palindrome("palindrome")

    def test_accented_palindrome(self):
        assert is_palindrome("ésope reste ici et se reposé")

    def test_accents_are_significant(self):
        assert not is_palindrome("Ésope reste ici et se repose")
