"""Small text utilities: the library under test in the swarmctl demo suite."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

# Hyphenation needs a dictionary that this demo does not ship, so tests of it skip at runtime.
HAS_HYPHENATION = False

# Words that title_case keeps lowercase unless they open or close the title.
SMALL_WORDS = frozenset({"a", "an", "and", "as", "at", "but", "by", "for", "in", "of", "on", "or", "the", "to"})

_WORD = re.compile(r"\w+(?:['’]\w+)*")


def normalize_whitespace(text: str) -> str:
    """Collapse each run of whitespace to one space and strip both ends."""
    return " ".join(text.split())


def slugify(text: str, separator: str = "-", ascii_only: bool = False) -> str:
    """Return a lowercase URL slug of ``text``.

    Letters and digits of any script are kept. Every other run of characters, emoji
    included, becomes one ``separator``. With ``ascii_only``, accents are removed
    ("café" becomes "cafe") and characters with no ASCII form are dropped.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    if ascii_only:
        decomposed = unicodedata.normalize("NFKD", text)
        text = decomposed.encode("ascii", "ignore").decode("ascii")

    words = re.findall(r"[^\W_]+", text)
    return separator.join(words)


def words(text: str) -> list[str]:
    """Split ``text`` into words, keeping apostrophes inside a word ("don't")."""
    return _WORD.findall(text)


def word_count(text: str) -> int:
    return len(words(text))


def word_frequencies(text: str) -> Counter[str]:
    """Count each word of ``text``, ignoring case."""
    return Counter(word.casefold() for word in words(text))


def display_width(text: str) -> int:
    """Return the number of terminal columns ``text`` takes.

    Wide and fullwidth characters (most CJK) take two columns and combining marks
    take none. Emoji are counted by their East Asian width, which terminals do not
    all agree on.
    """
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def truncate(text: str, width: int, placeholder: str = "…") -> str:
    """Shorten ``text`` to at most ``width`` characters, cutting at a word boundary.

    The placeholder counts toward ``width``. Text that already fits is returned
    unchanged. Raises ValueError if ``width`` cannot hold the placeholder.
    """
    if len(text) <= width:
        return text
    if width < len(placeholder):
        raise ValueError(f"width {width} is smaller than the placeholder {placeholder!r}")

    room = width - len(placeholder)
    cut = text[: room + 1]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    else:
        cut = cut[:room]
    return cut.rstrip() + placeholder


def wrap(text: str, width: int) -> list[str]:
    """Break ``text`` into lines of at most ``width`` characters.

    Words are never split, so a word longer than ``width`` gets a line of its own.
    """
    if width < 1:
        raise ValueError(f"width must be at least 1, got {width}")

    lines: list[str] = []
    current = ""
    for word in text.split():
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= width:
            current = f"{current} {word}"
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines


def title_case(text: str) -> str:
    """Capitalize each word of a title, keeping SMALL_WORDS lowercase inside it.

    NOTE: words with inner capitals are flattened ("iPhone" becomes "Iphone").
    The suite tracks this with an xfail test.
    """
    parts = text.split()
    result = []
    for index, word in enumerate(parts):
        inner = 0 < index < len(parts) - 1
        if inner and word.lower() in SMALL_WORDS:
            result.append(word.lower())
        else:
            result.append(word.capitalize())
    return " ".join(result)


def is_palindrome(text: str) -> bool:
    """Return whether ``text`` reads the same backwards, ignoring case, spaces and punctuation."""
    letters = [char.casefold() for char in text if char.isalnum()]
    return letters == letters[::-1]


def hyphenate(word: str) -> list[str]:
    """Split ``word`` into syllables.

    Raises NotImplementedError while HAS_HYPHENATION is false.
    """
    if not HAS_HYPHENATION:
        raise NotImplementedError("hyphenation needs a dictionary, which this demo does not ship")
    return [word]
