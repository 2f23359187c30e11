"""durations.py: the one duration parser (Go's grammar plus d and w, strict) and its formatter, and the places
that use it (manifest options accept the same forms as the agent's flags)."""

from __future__ import annotations

import pytest

from kubectl_etcdbackup.durations import DurationError, format_duration, parse_duration
from kubectl_etcdbackup.k8s.manifests import ManifestError, ManifestOptions, duration_seconds, validate_options


@pytest.mark.parametrize("text,secs", [
    ("90s", 90), ("15m", 900), ("1h30m", 5400), ("1.5h", 5400), ("500ms", 0.5), ("7d", 604800), ("2w", 1209600),
    ("1d12h", 129600), ("1m1h", 3660), (".5m", 30), ("2.m", 120), ("250us", 250e-6), ("250µs", 250e-6),
    ("10ns", 10e-9), ("0", 0), ("0s", 0), ("120", 120), ("1.5", 1.5),
])
def test_parses_go_durations_with_days_and_weeks(text: str, secs: float) -> None:
    assert parse_duration(text) == pytest.approx(secs)


@pytest.mark.parametrize("text,why", [
    ("", "empty"), ("-5m", "negative durations are not allowed"), ("+5m", "expected a number at '+'"),
    ("7x", "unknown unit 'x' after 7"), ("1H", "unknown unit 'H' after 1"), ("1h30", "missing unit after 30"),
    ("d7", "expected a number at 'd'"), ("1h 30m", "unknown unit 'h ' after 1"), (" 1h", "expected a number"),
    (".", "expected a number at '.'"), ("1e3s", "unknown unit 'e' after 1"), ("1y", "unknown unit 'y' after 1"),
])
def test_rejects_with_a_clear_one_line_error(text: str, why: str) -> None:
    with pytest.raises(DurationError) as e:
        parse_duration(text)
    msg = str(e.value)
    assert msg.startswith(f"invalid duration {text!r}: {why}") and "\n" not in msg
    assert "units: ns, us, ms, s, m, h, d, w" in msg
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("secs,text", [(0, "0s"), (45, "45s"), (60, "1m"), (754, "12m"), (3600, "1h"),
                                       (11040, "3h4m"), (86400, "1d"), (190800, "2d5h"), (-5, "0s")])
def test_format_is_compact_and_parses_back(secs: float, text: str) -> None:
    assert format_duration(secs) == text
    assert parse_duration(text) <= max(secs, 0)


def test_manifest_options_take_the_same_durations_as_the_agent() -> None:
    """Before: manifests allowed one unit only (1h30m failed there while `prune --retain-age 1h30m` worked)."""
    assert duration_seconds("1h30m") == 5400
    validate_options(ManifestOptions(max_age="1h30m", keep_within="1d12h", idle_timeout="90s", command_timeout="9m30s"))
    # What goes to the cluster is also what the chart computes with: whole units only.
    for bad in ("0h", "0", "soon", "-1h", "1.5d", "500ms"):
        with pytest.raises(ManifestError, match="invalid duration"):
            duration_seconds(bad)
