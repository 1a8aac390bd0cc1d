"""Limits from [limits] of swarm.toml and from --limit options."""

from __future__ import annotations

import pytest

from swarmctl.bundle import BundleLimits
from swarmctl.config import load_config
from swarmctl.errors import UsageError
from swarmctl.limits import Limits, parse_limits


def test_limits_default():
    assert parse_limits(None, []) == Limits()
    assert Limits().bundle() == BundleLimits()


def test_limits_option_overrides_config(tmp_path):
    config = tmp_path / "swarm.toml"
    config.write_text("[limits]\nbundle_max_files = 10\nbundle_max_bytes = 5000\n")

    limits = parse_limits(load_config(config).tables["limits"], ["bundle_max_files=20", "http_body_max_bytes=1_000"])

    assert limits == Limits(bundle_max_bytes=5000, bundle_max_files=20, http_body_max_bytes=1000)
    assert limits.bundle() == BundleLimits(5000, 20, Limits().bundle_max_ratio)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["bundle_max_files"], "give NAME=VALUE"),
        (["frame_bytes=10"], "give NAME=VALUE with NAME one of bundle_max_bytes"),
        (["bundle_max_bytes=ten"], "takes a whole number"),
        (["bundle_max_ratio=0"], "must be a whole number above 0"),
        (["bundle_max_files=-5"], "must be a whole number above 0"),
    ],
)
def test_limits_invalid_option(options, message):
    with pytest.raises(UsageError, match=message):
        parse_limits(None, options)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[limits]\nbundle_max_files = \"many\"\n", "limits.bundle_max_files must be an integer"),
        ("[limits]\nmax_everything = 1\n", "unknown key 'max_everything' in \\[limits\\]"),
        ("[limits]\nbundle_max_ratio = 0\n", "must be a whole number above 0"),
    ],
)
def test_limits_invalid_config(tmp_path, text, message):
    config = tmp_path / "swarm.toml"
    config.write_text(text)

    with pytest.raises(UsageError, match=message):
        parse_limits(load_config(config).tables.get("limits"), [])
