"""Which full snapshot and which delta segments rebuild etcd at a point in time (pure logic, no I/O).

The chain must be unbroken: the segments, in revision order, hold every revision from the base snapshot's
revision + 1 through the target. A hole is an error that names what is missing (a segment, a segment whose
manifest is not trusted, or a gap the stream recorded) — never a restore that silently stops early.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..errors import EtcdBackupError, UsageError
from ..manifest import SnapshotManifest, format_time, parse_time
from .segment import Coverage, Gap, SegmentManifest


class ChainError(EtcdBackupError):
    """The store cannot rebuild etcd at the requested point: something is missing, untrusted or not yet covered."""


@dataclass(frozen=True)
class Target:
    """At most one of revision and time; neither means the newest covered point."""

    revision: int | None = None
    time: datetime | None = None

    @classmethod
    def parse(cls, revision: int | None, time_text: str | None) -> Target:
        """From --to-revision and --to-time (ISO 8601, `2026-12-03T06:10:53.120Z`; UTC when it names no offset)."""
        if revision is not None and time_text is not None:
            raise UsageError("give --to-revision or --to-time, not both")
        if time_text is None:
            return cls(revision)
        try:
            t = datetime.fromisoformat(time_text)
        except ValueError:
            raise UsageError(f"--to-time: expected an ISO 8601 time such as 2026-12-03T06:10:53Z, got {time_text!r}"
                             ) from None
        return cls(None, t if t.tzinfo else t.replace(tzinfo=UTC))

    @property
    def given(self) -> bool:
        return self.revision is not None or self.time is not None


@dataclass
class StoredStream:
    """The delta stream as read from a store."""

    segments: list[SegmentManifest]  # authenticated manifests
    rejected: dict[int, str] = field(default_factory=dict)  # first revision (from the name) -> why refused
    rejected_chains: dict[int, str] = field(default_factory=dict)  # first revision -> the chain its name claims
    gaps: list[Gap] = field(default_factory=list)
    coverage: Coverage | None = None

    @property
    def covered_revision(self) -> int:
        """Every revision up to this one is stored (per the coverage record, or the newest segment)."""
        newest = max((s.last_revision for s in self.segments), default=0)
        return max(newest, self.coverage.revision if self.coverage else 0)


@dataclass
class ChainPlan:
    base: SnapshotManifest
    segments: list[SegmentManifest]  # in revision order, contiguous from base.etcd_revision + 1
    stop_revision: int  # replay revisions up to and including this one...
    stop_time: datetime | None = None  # ...received at or before this time (a time target)


def plan_chain(snapshots: list[SnapshotManifest], stream: StoredStream, target: Target) -> ChainPlan:
    """The plan for `target` from trusted, verified snapshots and the stored stream; ChainError when none."""
    if not stream.segments and stream.coverage is None:
        raise ChainError("no delta stream in this store (run `agent stream`), or none that the key authenticates")
    covered = stream.covered_revision
    base_limit, through = _limits(stream, target, covered, snapshots)
    base = max((m for m in snapshots if m.etcd_revision <= base_limit), key=lambda m: m.etcd_revision,
               default=None)
    if base is None:
        raise ChainError(f"no verified full snapshot at or before revision {base_limit} to start from")
    segments = _contiguous(stream, base, through)
    return ChainPlan(base, segments, through, target.time)


def _limits(stream: StoredStream, target: Target, covered: int, snapshots: list[SnapshotManifest],
            ) -> tuple[int, int]:
    """(newest revision the base snapshot may have, revision the segments must reach). For a time, a full
    snapshot taken at or before it and newer than every revision received by then is the state at that time."""
    if target.revision is not None:
        if target.revision > covered:
            raise ChainError(f"revision {target.revision} is not covered: the delta stream reaches revision {covered}")
        return target.revision, target.revision
    if target.time is None:
        return covered, covered
    t = target.time
    if stream.coverage is None or t > stream.coverage.at:
        newest = f"{stream.coverage.time} (revision {covered})" if stream.coverage else "no time yet"
        raise ChainError(f"{format_time(t)} is not covered: the delta stream is complete through {newest}")
    started = [s for s in stream.segments if parse_time(s.first_event_time) <= t]
    floor = max((m.etcd_revision for m in snapshots if m.created <= t and m.etcd_revision <= covered), default=None)
    if floor is not None and (not started or floor >= max(s.last_revision for s in started)):
        return floor, floor
    if not started:
        if stream.segments:
            raise ChainError(f"{format_time(t)} is before the delta stream's first event "
                             f"({min(s.first_event_time for s in stream.segments)}): restore a full snapshot")
        return covered, covered  # nothing changed since the stream started: the newest base is the state at t
    last = max(started, key=lambda s: s.first_revision)
    return last.first_revision, last.last_revision


def _holding(by_first: Sequence[SegmentManifest], revision: int) -> SegmentManifest | None:
    return next((s for s in by_first if s.first_revision <= revision <= s.last_revision), None)


def reachable(segments: Sequence[SegmentManifest], start_revision: int, cluster_id: str) -> list[SegmentManifest]:
    """The unbroken run of segments (of `cluster_id`) that rolls a snapshot at `start_revision` forward, in
    revision order, as far as it goes."""
    by_first = sorted((s for s in segments if s.cluster_id == cluster_id), key=lambda s: s.first_revision)
    run: list[SegmentManifest] = []
    need = start_revision + 1
    while (seg := _holding(by_first, need)) is not None:
        run.append(seg)
        need = seg.last_revision + 1
    return run


def _contiguous(stream: StoredStream, base: SnapshotManifest, through: int) -> list[SegmentManifest]:
    by_first = sorted(stream.segments, key=lambda s: s.first_revision)
    chosen: list[SegmentManifest] = []
    need = base.etcd_revision + 1
    while need <= through:
        seg = _holding(by_first, need)
        if seg is None:
            raise ChainError(_hole(stream, base, chosen, need))
        if seg.cluster_id != base.cluster_id:
            raise ChainError(f"delta segment {seg.id} is from cluster {seg.cluster_id}, but the base snapshot "
                             f"{base.id} is from cluster {base.cluster_id}")
        chosen.append(seg)
        need = seg.last_revision + 1
    return chosen


def _hole(stream: StoredStream, base: SnapshotManifest, chosen: list[SegmentManifest], need: int) -> str:
    after = f"after delta segment {chosen[-1].id}" if chosen else f"after base snapshot {base.id}"
    if need in stream.rejected:
        return f"delta chain broken at revision {need} ({after}): {stream.rejected[need]}"
    gap = next((g for g in stream.gaps if g.from_revision <= need <= g.to_revision), None)
    if gap is not None:
        return (f"revisions {gap.from_revision}..{gap.to_revision} are not in the delta stream ({gap.reason}; "
                f"recorded {gap.recorded_at}): choose a point after revision {gap.to_revision}")
    nxt = min((s for s in stream.segments if s.first_revision > need), key=lambda s: s.first_revision, default=None)
    missing = f"revisions {need}..{nxt.first_revision - 1}" if nxt else f"revision {need} onwards"
    named = f" (segment {nxt.prev_segment})" if nxt and nxt.prev_segment else ""
    return f"delta chain broken ({after}): no segment holds {missing}; a segment{named} is missing from the store"


# ---------------------------------------------------------------------------- the catalog of chains


@dataclass
class ChainWindow:
    """One chain (the segments a stream wrote after its base snapshot) and what it can restore: every revision
    from_revision..to_revision and every time from_time..to_time, starting from `start` (the base, or when the
    base is gone the oldest trusted snapshot inside the chain's revisions)."""

    id: str  # the base snapshot's id
    cluster_id: str
    segments: list[SegmentManifest]  # authenticated, in revision order
    rejected: dict[int, str]  # first revision -> why refused (this chain's)
    base: SnapshotManifest | None  # None: gone, or not trusted
    start: SnapshotManifest | None  # where a restore starts; None: nothing can (no snapshot to roll forward)
    from_revision: int = 0
    to_revision: int = 0
    from_time: str = ""
    to_time: str = ""
    current: bool = False  # the stream is writing this chain (the coverage record names it)
    broken: str = ""  # why the window stops before the chain's newest segment ("": it does not)

    @property
    def restorable(self) -> bool:
        return self.start is not None

    @property
    def state(self) -> str:
        if self.start is None:
            return f"not restorable: base snapshot {self.id} is gone and no trusted snapshot lies in its revisions"
        return f"broken: {self.broken}" if self.broken else "ok"

    def as_dict(self) -> dict[str, object]:
        return {"chain": self.id, "cluster_id": self.cluster_id, "base": self.base.id if self.base else None,
                "start": self.start.id if self.start else None, "from_revision": self.from_revision,
                "to_revision": self.to_revision, "from_time": self.from_time or None, "to_time": self.to_time or None,
                "segments": len(self.segments), "events": sum(s.event_count for s in self.segments),
                "stored_size": sum(s.stored_size for s in self.segments), "current": self.current,
                "state": self.state}


def chain_windows(snapshots: Sequence[SnapshotManifest], stream: StoredStream) -> list[ChainWindow]:
    """Every chain of the stream, oldest first, with its restorable window. `snapshots`: trusted, verified ones."""
    names = stream.rejected_chains
    ids = sorted({s.chain for s in stream.segments} | set(names.values())
                 | ({stream.coverage.chain} if stream.coverage else set()))
    trusted = {m.id: m for m in snapshots}
    out = []
    for chain in ids:
        segs = sorted((s for s in stream.segments if s.chain == chain), key=lambda s: s.first_revision)
        rejected = {rev: why for rev, why in stream.rejected.items() if names.get(rev) == chain}
        cov = stream.coverage if stream.coverage and stream.coverage.chain == chain else None
        cluster = segs[0].cluster_id if segs else (cov.cluster_id if cov else "")
        w = ChainWindow(chain, cluster, segs, rejected, trusted.get(chain), None, current=cov is not None)
        w.start = w.base or _start_inside(snapshots, segs)
        if w.start is not None:
            _fill_window(w, cov)
        out.append(w)
    return sorted(out, key=lambda w: (w.from_revision or (w.segments[0].first_revision if w.segments else 0), w.id))


def _start_inside(snapshots: Sequence[SnapshotManifest], segs: list[SegmentManifest]) -> SnapshotManifest | None:
    """The oldest snapshot a chain without its base can still roll forward from."""
    if not segs:
        return None
    inside = [m for m in snapshots if m.cluster_id == segs[0].cluster_id
              and segs[0].first_revision - 1 <= m.etcd_revision <= segs[-1].last_revision]
    return min(inside, key=lambda m: m.etcd_revision, default=None)


def _fill_window(w: ChainWindow, cov: Coverage | None) -> None:
    assert w.start is not None
    run = reachable(w.segments, w.start.etcd_revision, w.start.cluster_id)
    w.from_revision, w.from_time = w.start.etcd_revision, w.start.created_at
    w.to_revision, w.to_time = w.from_revision, w.from_time
    if run:
        w.to_revision, w.to_time = run[-1].last_revision, run[-1].last_event_time
    newest = w.segments[-1].last_revision if w.segments else w.from_revision
    if w.to_revision < newest or any(rev > w.to_revision for rev in w.rejected):
        need = w.to_revision + 1
        w.broken = (f"revision {need}: {w.rejected[need]}" if need in w.rejected else
                    f"no segment holds revision {need}; restorable only up to revision {w.to_revision}")
    elif cov is not None and cov.revision >= w.to_revision:
        w.to_revision, w.to_time = cov.revision, cov.time


def pick_chain(windows: Sequence[ChainWindow], ref: str) -> ChainWindow:
    """`latest` (the chain being written, else the newest) or an exact chain id; ChainError otherwise."""
    if not windows:
        raise ChainError("no delta stream in this store (run `agent stream`), or none that the key authenticates")
    if ref == "latest":
        return next((w for w in windows if w.current), windows[-1])
    found = next((w for w in windows if w.id == ref), None)
    if found is None:
        raise ChainError(f"no delta chain {ref} in this store (chains: {', '.join(w.id for w in windows)})")
    return found


# ---------------------------------------------------------------------------- retention of segments


@dataclass(frozen=True)
class SegmentVerdict:
    segment: SegmentManifest
    keep: bool
    reason: str


def segment_retention(segments: Sequence[SegmentManifest], kept: Sequence[SnapshotManifest],
                      present: set[str]) -> list[SegmentVerdict]:
    """Keep the segments some kept snapshot's window needs (the unbroken run that rolls it forward), and, to be
    safe, those of a kept base's chain after a hole; delete the rest: those before the oldest kept snapshot of
    their chain, and those of chains whose base is gone. `kept`: trusted, verified snapshots retention keeps;
    `present`: ids of every snapshot left in the store (trusted or not). In revision order."""
    needed: dict[str, str] = {}
    for k in sorted(kept, key=lambda m: m.etcd_revision):
        for s in reachable(segments, k.etcd_revision, k.cluster_id):
            needed.setdefault(s.id, f"window of snapshot {k.id} (revision {k.etcd_revision})")
    kept_ids = {k.id for k in kept}
    out = []
    for s in sorted(segments, key=lambda s: s.first_revision):
        if s.id in needed:
            out.append(SegmentVerdict(s, True, needed[s.id]))
        elif s.chain in kept_ids:
            out.append(SegmentVerdict(s, True, f"chain of kept snapshot {s.chain}, after a hole in it (kept to be "
                                      "safe; not restorable from it)"))
        else:
            gone = f"base {s.chain} {'is gone' if s.chain not in present else 'is not trusted'}"
            after = min((k for k in kept if k.cluster_id == s.cluster_id and k.etcd_revision >= s.last_revision),
                        key=lambda m: m.etcd_revision, default=None)
            out.append(SegmentVerdict(s, False, (
                f"older than kept snapshot {after.id} (revision {after.etcd_revision}); {gone}" if after else
                f"{gone} and no kept snapshot rolls forward through it")))
    return out
