"""Small text helpers shared by the layers that read other programs' output."""

from __future__ import annotations

import contextlib
import json
from typing import Any


def last_line(text: str, *, prefer: str = "") -> str:
    """The last non-empty line of `text` (stripped), or of the lines starting with `prefer` (case-insensitive)
    when there are any; "" for no text."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if prefer:
        lines = [ln for ln in lines if ln.lower().startswith(prefer.lower())] or lines
    return lines[-1] if lines else ""


def tool_message(line: str) -> str:
    """etcd's tools log JSON lines: the human part of one ("error", else "msg"), else the line itself."""
    try:
        obj = json.loads(line)
    except ValueError:
        return line.strip()
    if isinstance(obj, dict):
        return str(obj.get("error") or obj.get("msg") or line).strip()
    return line.strip()


def extract_json(text: str, opener: str) -> Any:
    """The last JSON value in `text` that starts a line with `opener` ("{" or "["); None when there is none.
    Pod logs mix stdout and stderr, so the value is looked for rather than assumed to be all of the text."""
    decoder = json.JSONDecoder()
    found: Any = None
    pos = 0
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith(opener):
            start = pos + len(line) - len(line.lstrip())
            with contextlib.suppress(ValueError):
                found, _ = decoder.raw_decode(text, start)
        pos += len(line)
    return found
