"""Prune a store: apply the retention policy to its snapshots, then to the delta segments of continuous backup
(those a kept snapshot's window needs stay; see continuous.chain.segment_retention), delete stale objects without
a manifest and remove what killed runs left behind (temp files, incomplete multipart uploads).

Only snapshots that may be trusted are counted or deleted (see retention.decide). A bad manifest or an item
that cannot be deleted is a problem in the report, never an abort.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from ..catalog import Listing, delete_snapshot, list_snapshots
from ..durations import format_duration
from ..errors import EtcdBackupError, StoreError, UsageError
from ..keys import Keyring
from ..leftovers import LEFTOVER_MIN_AGE_SECONDS, Leftover, find_leftovers, remove_leftovers
from ..retention import RetentionDecision, RetentionPolicy, decide, stale_orphans
from ..stores import Store
from ..textutil import extract_json
from .source import SourceSpec, open_source

KEEP, DELETED, WOULD_DELETE, DELETE_FAILED = "keep", "deleted", "would delete", "delete failed"
ORPHAN_REASON = "object without a manifest, over a day old (a failed backup, never a snapshot)"


@dataclass
class PruneOptions:
    store: Store
    keyring: Keyring | None
    policy: RetentionPolicy
    dry_run: bool = False
    now: datetime | None = None  # default: the current time
    leftover_min_age: float = LEFTOVER_MIN_AGE_SECONDS  # younger leftovers may belong to a running backup
    allow_plaintext: bool = False  # with a keyring: also count (and so delete) unencrypted snapshots
    reserve_next: bool = False  # count the snapshot about to be taken as if it existed (make room for it)


@dataclass(frozen=True)
class PruneRow:
    id: str  # snapshot id, object name or leftover name
    kind: str  # snapshot, segments (a run of delta segments), orphan, or the leftover's kind (temp-file, ...)
    action: str  # keep | deleted | would delete | delete failed
    reasons: list[str]


@dataclass
class PruneReport:
    rows: list[PruneRow] = field(default_factory=list)  # snapshots newest first, segments, orphans, leftovers
    leftovers_removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # bad manifests, failed deletions
    notes: list[str] = field(default_factory=list)  # what the cluster said, when it ran there

    @property
    def deleted(self) -> list[str]:
        """Snapshot ids and orphan object names deleted (leftovers are in leftovers_removed)."""
        return [r.id for r in self.rows if r.action == DELETED and r.kind in ("snapshot", "orphan")]


def run_prune(opts: PruneOptions) -> PruneReport:
    """Decide, then (unless dry_run) delete; every decision is a row with its reasons.

    Raises UsageError when snapshots are encrypted but no keyring is given: without it a planted manifest cannot
    be told from a genuine one. Raises StoreError only when the store cannot be listed."""
    now = opts.now or datetime.now(UTC)
    listing = list_snapshots(opts.store, opts.keyring, now=now, allow_plaintext=opts.allow_plaintext)
    if opts.keyring is None and any(m.cipher != "none" for m in listing.snapshots):
        raise UsageError("prune needs the encryption key to tell genuine snapshots from planted ones "
                         "(--encryption-key-file or --key-env)")
    report = PruneReport(problems=list(listing.problems))
    decision = _prune_snapshots(opts, listing, now, report)
    if opts.keyring is not None:  # the delta stream is always sealed: without the key nothing is pruned there
        _prune_segments(opts, listing, decision, now, report)
    _prune_orphans(opts, listing, now, report)
    _prune_leftovers(opts, now, report)
    return report


def _delete(report: PruneReport, dry_run: bool, what: str, delete: Callable[[], None]) -> str:
    """Run one deletion (unless dry_run); a failure is a problem, not an abort. Returns the row's action."""
    if dry_run:
        return WOULD_DELETE
    try:
        delete()
    except EtcdBackupError as e:
        report.problems.append(f"cannot delete {what}: {e}")
        return DELETE_FAILED
    return DELETED


def _prune_snapshots(opts: PruneOptions, listing: Listing, now: datetime, report: PruneReport,
                     ) -> RetentionDecision:
    decision = decide(listing.snapshots, opts.policy, now, next_at=now if opts.reserve_next else None)
    doomed = {m.id for m in decision.delete}
    for m in listing.snapshots:
        action = KEEP
        if m.id in doomed:
            action = _delete(report, opts.dry_run, f"snapshot {m.id}", partial(delete_snapshot, opts.store, m))
        report.rows.append(PruneRow(m.id, "snapshot", action, decision.reasons[m.id]))
    return decision


def _prune_segments(opts: PruneOptions, listing: Listing, decision: RetentionDecision, now: datetime,
                    report: PruneReport) -> None:
    """Keep the segments a kept snapshot's window needs, delete the others (manifest first: the commit point),
    one row per run of a chain's segments with the same verdict; objects without a manifest go after a day."""
    from ..continuous.chain import segment_retention
    from ..continuous.segment import SEGMENT_MANIFEST_SUFFIX, SEGMENT_SUFFIX, chain_of
    from ..continuous.stored import read_stream

    assert opts.keyring is not None
    try:
        names = opts.store.list_names()
        stream = read_stream(opts.store, opts.keyring)
    except EtcdBackupError as e:
        report.problems.append(f"cannot read the delta stream, its segments were not pruned: {e}")
        return
    report.problems += [f"{why} (not pruned)" for why in stream.rejected.values()]
    doomed = {m.id for m in decision.delete}
    kept = [m for m in listing.trusted if m.verified and m.id not in doomed]
    present = {m.id for m in listing.snapshots if m.id not in doomed}
    runs: list[list] = []  # [verdict of the run's first segment, last revision, segment ids]
    for v in segment_retention(stream.segments, kept, present):
        first = runs[-1][0] if runs else None
        if first is not None and (first.segment.chain, first.keep, first.reason) == (v.segment.chain, v.keep, v.reason):
            runs[-1][1:] = [v.segment.last_revision, [*runs[-1][2], v.segment.id]]
        else:
            runs.append([v, v.segment.last_revision, [v.segment.id]])
    for v, last, ids in runs:
        actions = [KEEP] if v.keep else [_delete(report, opts.dry_run, f"delta segment {i}",
                                                 partial(_delete_segment, opts.store, i)) for i in ids]
        report.rows.append(PruneRow(f"{v.segment.chain} revisions {v.segment.first_revision}..{last}", "segments",
                                    DELETE_FAILED if DELETE_FAILED in actions else actions[0],
                                    [v.reason, f"{len(ids)} segment(s)"]))
    committed = {n.removesuffix(SEGMENT_MANIFEST_SUFFIX) for n in names if n.endswith(SEGMENT_MANIFEST_SUFFIX)}
    loose = [n for n in names if n.endswith(SEGMENT_SUFFIX) and chain_of(n)
             and n.removesuffix(SEGMENT_SUFFIX) not in committed]
    for name in stale_orphans(loose, partial(_last_written, opts.store), now):
        action = _delete(report, opts.dry_run, name, partial(opts.store.delete, name))
        report.rows.append(PruneRow(name, "orphan", action, [ORPHAN_REASON]))


def _delete_segment(store: Store, seg_id: str) -> None:
    from ..continuous.segment import segment_manifest_name, segment_object_name

    store.delete(segment_manifest_name(seg_id))
    store.delete(segment_object_name(seg_id))


def _prune_orphans(opts: PruneOptions, listing: Listing, now: datetime, report: PruneReport) -> None:
    for name in stale_orphans(listing.orphans, partial(_last_written, opts.store), now):
        action = _delete(report, opts.dry_run, name, partial(opts.store.delete, name))
        report.rows.append(PruneRow(name, "orphan", action, [ORPHAN_REASON]))


def _last_written(store: Store, name: str) -> datetime | None:
    """When an object without a manifest was last written: an import (whose id carries the snapshot's original,
    older time) may still be verifying it. None (never chosen) when that cannot be told."""
    try:
        return store.modified_at(name)
    except EtcdBackupError:
        return None


def _prune_leftovers(opts: PruneOptions, now: datetime, report: PruneReport) -> None:
    try:
        found = find_leftovers(opts.store, now, opts.leftover_min_age)
    except EtcdBackupError as e:
        report.problems.append(f"cannot look for leftovers: {e}")
        return
    for item in found:
        action = WOULD_DELETE if opts.dry_run else _remove_leftover(opts.store, item, report)
        report.rows.append(PruneRow(item.name, item.kind, action,
                                    [f"left by a killed run, {format_duration(item.age_seconds)} old"]))


def _remove_leftover(store: Store, item: Leftover, report: PruneReport) -> str:
    problems = remove_leftovers(store, [item])
    report.problems += problems
    if problems:
        return DELETE_FAILED
    report.leftovers_removed.append(item.name)
    return DELETED


def run_prune_source(source: SourceSpec, keyring: Keyring | None, policy: RetentionPolicy, *, dry_run: bool = False,
                     allow_plaintext: bool = False) -> PruneReport:
    """Prune a source: here, or (a volume in the cluster) in a Job with the backup's own access and key."""
    with open_source(source) as src:
        if src.store is not None:
            report = run_prune(PruneOptions(src.store, keyring, policy, dry_run=dry_run,
                                            allow_plaintext=allow_plaintext))
        else:
            out = src.remote(["prune", *policy.to_args(), "-o", "json", *(["--dry-run"] if dry_run else [])],
                             write=not dry_run)
            rows = extract_json(out, "[")
            if not isinstance(rows, list):
                raise StoreError("unexpected output of `kubectl-etcdbackup prune` in the cluster")
            report = PruneReport(rows=[PruneRow(str(r["id"]), str(r["kind"]), str(r["action"]), list(r["reasons"]))
                                       for r in rows])
        report.notes += src.notes
        return report
