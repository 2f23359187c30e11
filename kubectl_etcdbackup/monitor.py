"""Backup freshness (pure): is the newest verified snapshot older than the allowed age?"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from .durations import format_duration
from .manifest import SnapshotManifest


@dataclass(frozen=True)
class Freshness:
    stale: bool
    newest: SnapshotManifest | None
    age_seconds: float | None
    max_age_seconds: float
    message: str


def assess(snapshots: Sequence[SnapshotManifest], max_age_seconds: float, now: datetime) -> Freshness:
    newest = max((m for m in snapshots if m.verified), key=lambda m: (m.created_at, m.id), default=None)
    limit = format_duration(max_age_seconds)
    if newest is None:
        return Freshness(True, None, None, max_age_seconds, "STALE: no verified backup at all")
    age = (now - newest.created).total_seconds()
    if age > max_age_seconds:
        return Freshness(True, newest, age, max_age_seconds,
                         f"STALE: newest verified backup {newest.id} is {format_duration(age)} old (limit {limit})")
    return Freshness(False, newest, age, max_age_seconds,
                     f"OK: newest verified backup {newest.id} is {format_duration(age)} old (limit {limit})")
