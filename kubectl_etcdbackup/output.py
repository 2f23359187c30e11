"""Render rows as a table, JSON or YAML (`-o table|json|yaml`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from .errors import UsageError

FORMATS = ("table", "json", "yaml")


def render(rows: Sequence[dict[str, Any]], fmt: str, columns: Sequence[tuple[str, str]] | None = None,
           cell: Callable[[str, Any], str] | None = None, doc: Any = None) -> str:
    """columns: (key, HEADER) pairs for the table; json/yaml print `doc` (default: rows) in full."""
    if fmt == "json":
        return json.dumps(rows if doc is None else doc, indent=2, sort_keys=False, default=str)
    if fmt == "yaml":
        return yaml.safe_dump(rows if doc is None else doc, sort_keys=False, default_flow_style=False).rstrip()
    if fmt != "table":
        raise UsageError(f"unknown output format {fmt!r} (use {', '.join(FORMATS)})")
    if columns is None:
        columns = [(k, k.upper()) for k in (rows[0] if rows else {})]
    fmt_cell = cell or (lambda _k, v: "" if v is None else str(v))
    table = [[h for _, h in columns]] + [[fmt_cell(k, r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table)


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return ""
    v = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if v < 1024 or unit == "TiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} TiB"
