"""How commands show things: tables or JSON/YAML on stdout, one-line notes and warnings on stderr. The only place
besides the command modules that prints."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..durations import format_duration
from ..output import human_bytes, render

if TYPE_CHECKING:
    from ..manifest import SnapshotManifest

SNAPSHOT_COLUMNS = [("id", "ID"), ("created", "CREATED"), ("age", "AGE"), ("revision", "REVISION"),
                    ("keys", "KEYS"), ("raw_size", "SIZE"), ("stored_size", "STORED"), ("etcd", "ETCD"),
                    ("cipher", "CIPHER"), ("verified", "VERIFIED"), ("trust", "TRUST")]


def out(text: str) -> None:
    print(text, flush=True)


def note(text: str) -> None:
    print(text, file=sys.stderr)


def warn(lines: Iterable[str]) -> None:
    for line in lines:
        print(line if line.startswith(("warning:", "note:", "error:")) else f"warning: {line}", file=sys.stderr)


def cell(key: str, value: Any) -> str:
    """The table form of a value: sizes human-readable, flags yes/no, lists joined."""
    if key in ("raw_size", "stored_size", "size", "db_size", "db_size_in_use"):
        return human_bytes(value) if value is not None else "?"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return "" if value is None else str(value)


def snapshots(items: Sequence[SnapshotManifest], fmt: str) -> None:
    """`list`: a table of summaries, or every field (and the trust judgement) as JSON/YAML."""
    now = datetime.now(UTC)
    if fmt == "table" and not items:
        note("No snapshots.")
        return
    rows = [m.summary() | {"age": format_duration((now - m.created).total_seconds())} for m in items]
    doc = [m.to_dict() | {"authenticated": m.authenticated, "untrusted_reason": m.untrusted_reason,
                          "age_seconds": int((now - m.created).total_seconds())} for m in items]
    out(render(rows, fmt, SNAPSHOT_COLUMNS, cell, doc=None if fmt == "table" else doc))


def rows(items: Sequence[dict[str, Any]], fmt: str, columns: Sequence[tuple[str, str]] | None = None,
         doc: Any = None) -> None:
    out(render(items, fmt, columns, cell, doc=doc))


def document(doc: Any, fmt: str) -> None:
    """JSON or YAML of one document (callers print their own table form)."""
    out(render([], fmt, doc=doc))
