import pytest

from swarmctl.durations import parse_duration
from swarmctl.errors import UsageError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("1.5", 1.5), ("90s", 90.0), ("10m", 600.0), ("1h30m", 5400.0), ("2d", 172800.0), (" 5S ", 5.0)],
)
def test_parse_duration_valid(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "m10", "1h-5m", "0", "0s", "-3", "10m junk"])
def test_parse_duration_invalid(text):
    with pytest.raises(UsageError) as caught:
        parse_duration(text, "--deadline")
    assert "--deadline" in str(caught.value)
    assert repr(text) in str(caught.value)
