"""Retention policy (pure): which snapshots to delete.

Keep a snapshot if it is among the newest `retain_count`, or younger than `retain_age`. Both limits
must be exceeded to delete. Never delete the newest verified snapshot, whatever the policy says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from .manifest import SnapshotManifest


@dataclass(frozen=True)
class RetentionPolicy:
    retain_count: int | None = None  # keep at least this many newest
    retain_age_seconds: float | None = None  # keep everything younger than this

    def __post_init__(self) -> None:
        if self.retain_count is not None and self.retain_count < 1:
            raise ValueError("retain count must be at least 1")
        if self.retain_age_seconds is not None and self.retain_age_seconds < 0:
            raise ValueError("retain age must not be negative")


@dataclass(frozen=True)
class RetentionDecision:
    keep: list[SnapshotManifest]
    delete: list[SnapshotManifest]
    reasons: dict[str, str]  # snapshot id -> why kept or deleted


def decide(snapshots: Sequence[SnapshotManifest], policy: RetentionPolicy, now: datetime,
           ) -> RetentionDecision:
    ordered = sorted(snapshots, key=lambda m: (m.created_at, m.id), reverse=True)
    newest_verified = next((m.id for m in ordered if m.verified), None)
    keep: list[SnapshotManifest] = []
    delete: list[SnapshotManifest] = []
    reasons: dict[str, str] = {}
    if policy.retain_count is None and policy.retain_age_seconds is None:
        return RetentionDecision(ordered, [], {m.id: "no retention policy" for m in ordered})
    for rank, m in enumerate(ordered):
        age = (now - m.created).total_seconds()
        if m.id == newest_verified:
            reason = "newest verified snapshot (always kept)"
        elif policy.retain_count is not None and rank < policy.retain_count:
            reason = f"among newest {policy.retain_count}"
        elif policy.retain_age_seconds is not None and age < policy.retain_age_seconds:
            reason = "younger than retain age"
        else:
            delete.append(m)
            reasons[m.id] = "beyond retain count and age"
            continue
        keep.append(m)
        reasons[m.id] = reason
    return RetentionDecision(keep, delete, reasons)


ORPHAN_AGE_SECONDS = 86400.0  # a backup takes minutes (the CronJob's deadline is 15 min); a day-old orphan is dead


def stale_orphans(orphans: Sequence[str], made_at: Callable[[str], datetime | None], now: datetime,
                  min_age_seconds: float = ORPHAN_AGE_SECONDS) -> list[str]:
    """Objects without a manifest (a backup killed before its manifest was written) old enough that no
    running backup can still own them. Names whose age is unknown are never chosen."""
    out = []
    for name in orphans:
        t = made_at(name)
        if t is not None and (now - t).total_seconds() > min_age_seconds:
            out.append(name)
    return out
