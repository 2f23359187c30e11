"""The one parser and formatter of human durations (flags, env vars, manifest options).

Grammar: Go's time.ParseDuration (`90s`, `1h30m`, `1.5h`, `500ms`; units ns, us/µs, ms, s, m, h) plus `d` (24h) and
`w` (7d), which people expect for retention (`7d`). Strict: no sign, no spaces, no empty string, no unknown unit.
One extension to Go: a bare number means seconds (`120`), as the agent's flags and env vars always accepted it.
"""

from __future__ import annotations

import re

UNITS: dict[str, float] = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                           "h": 3600.0, "d": 86400.0, "w": 604800.0}
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_PART = re.compile(rf"({_NUMBER})([^0-9.]*)")
_BARE = re.compile(rf"{_NUMBER}")
_HINT = "e.g. 90s, 1h30m, 1.5h, 7d"


class DurationError(ValueError):
    """Not a valid duration; the message quotes the text and says what is wrong."""


def parse_duration(text: str) -> float:
    """Seconds (>= 0) of a duration such as `7d`, `1h30m`, `1.5h`, `500ms` or `120` (bare = seconds).

    Raises DurationError for anything else: empty, signed, spaced, a part without a number or with an unknown
    or missing unit."""
    if not text:
        raise DurationError(_invalid(text, "empty"))
    if _BARE.fullmatch(text):
        return float(text)
    pos, total = 0, 0.0
    while pos < len(text):
        m = _PART.match(text, pos)
        if m is None:
            raise DurationError(_invalid(text, _unexpected(text[pos])))
        number, unit = m.groups()
        if unit not in UNITS:
            raise DurationError(_invalid(text, f"unknown unit {unit!r} after {number}" if unit
                                         else f"missing unit after {number}"))
        total += float(number) * UNITS[unit]
        pos = m.end()
    return total


def _unexpected(char: str) -> str:
    return "negative durations are not allowed" if char == "-" else f"expected a number at {char!r}"


def _invalid(text: str, why: str) -> str:
    return f"invalid duration {text!r}: {why} ({_HINT}; units: {', '.join(u for u in UNITS if u.isascii())})"


def format_duration(seconds: float) -> str:
    """Compact rendering for tables, at most two units, truncated: 45s, 12m, 3h4m, 2d5h.

    The result parses back with parse_duration (to a value <= `seconds`); negative input renders as 0s."""
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h}h{m}m" if m else f"{h}h"
    d, h = divmod(s // 3600, 24)
    return f"{d}d{h}h" if h else f"{d}d"
