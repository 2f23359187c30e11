"""Retention policy (pure): which snapshots to keep, which to delete, and why; what a policy costs in the long run.

A tiered policy, with the rules restic and borg use: keep-last N (the N newest), keep-within DURATION (every
snapshot younger than that, measured from now), keep-hourly/daily/weekly/monthly N (UTC buckets: the newest
snapshot of each of the N newest buckets that hold a snapshot; weeks are ISO weeks). A snapshot is kept when
ANY rule keeps it, and every rule that keeps it is named. The newest verified snapshot is never deleted,
whatever the policy says. Snapshots that may not be trusted (`untrusted_reason`) are never counted by a rule
and never deleted: the policy only decides about snapshots it can believe.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

from .durations import format_duration
from .manifest import SnapshotManifest


@dataclass(frozen=True)
class RetentionPolicy:
    """0 turns a rule off; a policy with every rule off keeps everything."""

    keep_last: int = 0
    keep_within_seconds: float = 0.0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"{f.name.replace('_seconds', '').replace('_', '-')} must not be negative")

    @property
    def empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))

    def to_args(self) -> list[str]:
        """The --keep-* flags that give this policy (for the same command run elsewhere)."""
        args = ["--keep-last", str(self.keep_last)] if self.keep_last else []
        if self.keep_within_seconds:
            args += ["--keep-within", f"{self.keep_within_seconds:g}s"]
        for b in _BUCKETS:
            if getattr(self, b.field):
                args += [f"--keep-{b.name}", str(getattr(self, b.field))]
        return args

    def describe(self) -> str:
        """e.g. "within 1d, daily 7" (the rules that are on)."""
        parts = [f"last {self.keep_last}"] if self.keep_last else []
        if self.keep_within_seconds:
            parts.append(f"within {format_duration(self.keep_within_seconds)}")
        parts += [f"{b.name} {getattr(self, b.field)}" for b in _BUCKETS if getattr(self, b.field)]
        return ", ".join(parts) or "keep everything"


@dataclass(frozen=True)
class _Bucket:
    name: str  # hourly, daily, ...
    field: str  # the policy field holding N
    start: Callable[[datetime], datetime]  # the start of the bucket holding a UTC time: the bucket's identity
    label: str  # strftime of the start, shown in reasons


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _day(t: datetime) -> datetime:
    return _hour(t).replace(hour=0)


def _week(t: datetime) -> datetime:
    return _day(t) - timedelta(days=t.weekday())  # ISO weeks start on Monday


def _month(t: datetime) -> datetime:
    return _day(t).replace(day=1)


_BUCKETS = (
    _Bucket("hourly", "keep_hourly", _hour, "%Y-%m-%dT%H"),
    _Bucket("daily", "keep_daily", _day, "%Y-%m-%d"),
    _Bucket("weekly", "keep_weekly", _week, "%G-W%V"),
    _Bucket("monthly", "keep_monthly", _month, "%Y-%m"),
)

NEWEST_VERIFIED = "newest verified (always kept)"
NO_RULE = "no keep rule matches"
NO_POLICY = "no retention policy"


@dataclass(frozen=True)
class RetentionDecision:
    keep: list[SnapshotManifest]  # newest first, untrusted ones included
    delete: list[SnapshotManifest]  # newest first, never an untrusted one
    reasons: dict[str, list[str]]  # snapshot id -> every reason it is kept, or why it goes


def _rule_reasons(times: Sequence[datetime], policy: RetentionPolicy, now: datetime) -> list[list[str]]:
    """For UTC times sorted newest first: the reasons each one is kept (empty: no rule keeps it)."""
    reasons: list[list[str]] = [[] for _ in times]
    for i, t in enumerate(times):
        if i < policy.keep_last:
            reasons[i].append(f"last {policy.keep_last}")
        if (now - t).total_seconds() < policy.keep_within_seconds:
            reasons[i].append(f"within {format_duration(policy.keep_within_seconds)}")
    for bucket in _BUCKETS:
        wanted, seen = getattr(policy, bucket.field), None
        for i, t in enumerate(times):
            if wanted == 0:
                break
            start = bucket.start(t)
            if start != seen:  # newest first: the first time seen in a bucket is its newest
                reasons[i].append(f"{bucket.name} {start:{bucket.label}}")
                seen, wanted = start, wanted - 1
    return reasons


def decide(snapshots: Sequence[SnapshotManifest], policy: RetentionPolicy, now: datetime, *,
           next_at: datetime | None = None) -> RetentionDecision:
    """Keep or delete each snapshot, with every reason.

    Untrusted snapshots are kept ("not authenticated (why)") and take no slot in any rule. `next_at`: count a
    snapshot about to be taken at that time as if it existed already (it takes its slots, so keep-last 3 keeps 2
    existing ones); it is not part of the result. An empty policy keeps everything.
    """
    ordered = sorted(snapshots, key=lambda m: (m.created_at, m.id), reverse=True)
    trusted = [m for m in ordered if not m.untrusted_reason]
    reasons = {m.id: [f"not authenticated ({m.untrusted_reason})"] for m in ordered if m.untrusted_reason}
    if policy.empty:
        reasons.update({m.id: [NO_POLICY] for m in trusted})
        return RetentionDecision(ordered, [], reasons)
    times = ([next_at.astimezone(UTC)] if next_at else []) + [m.created for m in trusted]
    by_rule = _rule_reasons(times, policy, now)[1 if next_at else 0:]
    newest_verified = next((m.id for m in trusted if m.verified), None)
    for m, why in zip(trusted, by_rule, strict=True):
        reasons[m.id] = why + [NEWEST_VERIFIED] if m.id == newest_verified else why or [NO_RULE]
    delete = [m for m, why in zip(trusted, by_rule, strict=True) if not why and m.id != newest_verified]
    doomed = {m.id for m in delete}
    return RetentionDecision([m for m in ordered if m.id not in doomed], delete, reasons)


# The steady state is counted at the phase that keeps the most: the newest snapshot just before a UTC day, ISO
# week and month all end (2026-05-31 is a Sunday), so every bucket's newest lies as far back as it can.
_WORST_END = datetime(2026, 6, 1, tzinfo=UTC) - timedelta(seconds=1)


def steady_state_count(policy: RetentionPolicy, interval_seconds: float) -> int | None:
    """How many snapshots the policy keeps once the history is long enough, with one snapshot every
    `interval_seconds` (at the worst phase). None: the policy keeps everything (no steady state)."""
    if policy.empty:
        return None
    if interval_seconds <= 0:
        raise ValueError("the backup interval must be positive")
    # Snapshot i is taken at _WORST_END - i * interval. The newest ones form a prefix kept by last/within (and
    # the newest verified); each bucket rule then adds the newest snapshot of its N newest buckets.
    prefix = max(1, policy.keep_last, math.ceil(policy.keep_within_seconds / interval_seconds))
    kept: set[int] = set()
    for bucket in _BUCKETS:
        i = 0
        for _ in range(getattr(policy, bucket.field)):
            kept.add(i)
            elapsed = (_WORST_END - bucket.start(_WORST_END - timedelta(seconds=i * interval_seconds)))
            i = math.floor(elapsed.total_seconds() / interval_seconds) + 1  # the newest in an older bucket
    return prefix + len({i for i in kept if i >= prefix})


def estimate_interval(snapshots: Sequence[SnapshotManifest], sample: int = 10) -> float | None:
    """The backup interval, in seconds: the median gap between the `sample` newest snapshots (a missed or a
    manual run moves a median little). None with fewer than two snapshots."""
    times = sorted((m.created for m in snapshots), reverse=True)[:sample]
    gaps = [(a - b).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    positive = [g for g in gaps if g > 0]
    return statistics.median(positive) if positive else None


@dataclass(frozen=True)
class RetentionFit:
    """What the policy costs in the long run at the observed backup interval."""

    count: int  # snapshots kept in the steady state
    interval_seconds: float
    snapshot_bytes: int  # the newest stored size: what each snapshot is assumed to take
    capacity_bytes: int | None  # the store's size, None when it has none (an object store)

    @property
    def expected_bytes(self) -> int:
        return self.count * self.snapshot_bytes

    @property
    def fits(self) -> bool | None:
        """Whether the kept snapshots and the one being written fit; None when the store has no known size."""
        if self.capacity_bytes is None:
            return None
        return self.expected_bytes + self.snapshot_bytes <= self.capacity_bytes


def assess_fit(policy: RetentionPolicy, trusted: Sequence[SnapshotManifest], capacity_bytes: int | None,
               ) -> RetentionFit | None:
    """The policy's steady state for the trusted snapshots' interval and newest size; None when it cannot be
    told (a policy that keeps everything, or fewer than two snapshots)."""
    interval = estimate_interval(trusted)
    count = None if interval is None else steady_state_count(policy, interval)
    if interval is None or count is None:
        return None
    newest = max(trusted, key=lambda m: (m.created_at, m.id))
    return RetentionFit(count, interval, newest.stored_size, capacity_bytes)


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
