"""One scheduled backup run, as the CronJob's agent does it: clean up, make room, back up, prune, record.

Order: remove what killed runs left behind; when a file store has less room than the next snapshot needs,
prune first as if that snapshot already existed; take the backup; prune after a success AND after a failure,
on a file store again as if the next snapshot existed (a run that failed for lack of room, with a snapshot
larger than expected, thus frees room for the next run: a full disk heals itself). The outcome is
recorded exactly once on every exit path, an interruption (SIGTERM from the Job's deadline: SystemExit)
included: the run record in the store and the metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from ..backup import BackupOptions, take_backup
from ..catalog import list_snapshots
from ..durations import format_duration
from ..errors import EtcdBackupError
from ..leftovers import LEFTOVER_MIN_AGE_SECONDS, find_leftovers, find_local_scratch, remove_leftovers, remove_local
from ..manifest import SnapshotManifest, format_time
from ..output import human_bytes
from ..retention import RetentionFit, RetentionPolicy, assess_fit
from ..run_status import load_status, save_status
from .prune import PruneOptions, run_prune

ROOM_MARGIN = 1.2  # the next snapshot is expected to be up to this much larger than the newest one


@dataclass
class BackupRunOptions:
    backup: BackupOptions  # its store is the store pruned and recorded to, its key the keyring
    policy: RetentionPolicy  # an empty policy prunes nothing
    metrics_textfile: str | None = None
    pushgateway: str | None = None
    leftover_min_age: float = LEFTOVER_MIN_AGE_SECONDS
    room_margin: float = ROOM_MARGIN


@dataclass
class BackupRunReport:
    manifest: SnapshotManifest | None = None  # the new snapshot, stored and verified
    error: str = ""  # why there is none
    pruned: list[str] = field(default_factory=list)  # snapshot ids and orphan objects deleted
    leftovers_removed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # one line each, for stderr
    fit: RetentionFit | None = None  # the policy's steady state against the store, when it can be told
    duration_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.manifest is not None


def run_backup(opts: BackupRunOptions) -> BackupRunReport:
    """Run once. A failed backup is reported (`error`), not raised; cleanup, prune, run record and metrics
    problems become warnings. SystemExit/KeyboardInterrupt propagate after the outcome is recorded."""
    report = BackupRunReport()
    started = time.monotonic()
    try:
        _remove_leftovers(opts, report)
        if _short_of_room(opts, report):
            _prune(opts, report, reserve_next=True)
        try:
            report.manifest = take_backup(replace(opts.backup, warn=report.warnings.append))
        except EtcdBackupError as e:
            report.error = str(e)
        # After a failure a store that can fill up makes room for the next run: the failure may have been for
        # lack of room, with a snapshot larger than expected (this never deletes more than one slot's worth).
        _prune(opts, report, reserve_next=report.manifest is None and _has_free_space(opts, report))
        _assess_fit(opts, report)
    except BaseException as e:  # SIGTERM (SystemExit), Ctrl-C, or a bug: still recorded, then re-raised
        if report.manifest is None and not report.error:
            report.error = f"interrupted ({type(e).__name__}{f' {e}' if str(e) else ''})"
        raise
    finally:
        report.duration_seconds = time.monotonic() - started
        _record(opts, report)
    return report


def _remove_leftovers(opts: BackupRunOptions, report: BackupRunReport) -> None:
    """Temp files and uploads of killed runs in the store, and their verify scratch dirs in the work dir."""
    now = datetime.now(UTC)
    store = opts.backup.store
    try:
        found = find_leftovers(store, now, opts.leftover_min_age)
    except EtcdBackupError as e:
        report.warnings.append(f"cannot look for leftovers: {e}")
        found = []
    scratch = find_local_scratch(opts.backup.work_dir, now, opts.leftover_min_age)
    report.warnings += remove_leftovers(store, found) + remove_local(scratch)
    report.leftovers_removed += [item.name for item in found + scratch]


def _has_free_space(opts: BackupRunOptions, report: BackupRunReport) -> bool:
    """Whether the store has a free space that can run out (a file store), as opposed to an object store."""
    try:
        return opts.backup.store.free_bytes() is not None
    except EtcdBackupError as e:
        report.warnings.append(f"cannot check the room left in the store: {e}")
        return False


def _short_of_room(opts: BackupRunOptions, report: BackupRunReport) -> bool:
    """Whether the store (one with a known free space) has less room than the next snapshot is expected to
    take: the newest trusted snapshot's stored size, with a margin. Unknown counts as enough."""
    store = opts.backup.store
    try:
        free = store.free_bytes()
        if free is None or opts.policy.empty:
            return False
        trusted = list_snapshots(store, opts.backup.key).trusted
    except EtcdBackupError as e:
        report.warnings.append(f"cannot check the room left in the store: {e}")
        return False
    if not trusted:
        return False
    expected = int(trusted[0].stored_size * opts.room_margin)
    if free >= expected:
        return False
    report.warnings.append(f"store {store.url} has {human_bytes(free)} free, the next snapshot needs about "
                           f"{human_bytes(expected)}: pruning first, as if it already existed")
    return True


def _prune(opts: BackupRunOptions, report: BackupRunReport, *, reserve_next: bool) -> None:
    if opts.policy.empty:
        return
    try:
        pruned = run_prune(PruneOptions(opts.backup.store, opts.backup.key, opts.policy,
                                        leftover_min_age=opts.leftover_min_age, reserve_next=reserve_next))
    except EtcdBackupError as e:
        report.warnings.append(f"prune failed: {e}")
        return
    report.pruned += pruned.deleted
    report.leftovers_removed += pruned.leftovers_removed
    report.warnings += pruned.problems


def _assess_fit(opts: BackupRunOptions, report: BackupRunReport) -> None:
    """Warn when the policy's steady state cannot fit the store (interval from the recent snapshots' gaps)."""
    if opts.policy.empty:
        return
    store = opts.backup.store
    try:
        report.fit = assess_fit(opts.policy, list_snapshots(store, opts.backup.key).trusted, store.capacity_bytes())
    except EtcdBackupError as e:
        report.warnings.append(f"cannot assess the retention policy: {e}")
        return
    fit = report.fit
    if fit is not None and fit.fits is False:
        report.warnings.append(
            f"retention ({opts.policy.describe()}) keeps about {fit.count} snapshots in the long run at one every "
            f"{format_duration(fit.interval_seconds)}: {human_bytes(fit.expected_bytes)} plus one being written, "
            f"more than the store's {human_bytes(fit.capacity_bytes)}; keep fewer or give the store more space "
            f"(meanwhile runs prune early when the store is short of room)")


def record_setup_failure(store_url: str, metrics_textfile: str | None, pushgateway: str | None) -> list[str]:
    """The outcome of a run that could not start (bad options, a store that cannot be opened): a failure in the
    metrics (there is no store to keep a run record in). Returns problems."""
    return _publish(store_url, metrics_textfile, pushgateway, success=False, duration=0.0, size=None, fit=None)


def _record(opts: BackupRunOptions, report: BackupRunReport) -> None:
    """The run record in the store, then the metrics; both best effort (problems become warnings)."""
    store = opts.backup.store
    try:
        status = load_status(store)
        if report.manifest is not None:
            status.record_success(report.manifest.created_at, report.manifest.id)
        else:
            status.record_failure(format_time(datetime.now(UTC)), report.error)
        save_status(store, status)
    except EtcdBackupError as e:
        report.warnings.append(f"cannot update run status: {e}")
    report.warnings += _publish(store.url, opts.metrics_textfile, opts.pushgateway, success=report.ok,
                                duration=report.duration_seconds, fit=report.fit,
                                size=report.manifest.stored_size if report.manifest else None)


def _publish(store_url: str, textfile: str | None, pushgateway: str | None, *, success: bool, duration: float,
             size: int | None, fit: RetentionFit | None) -> list[str]:
    if not (textfile or pushgateway):
        return []
    from ..metrics import publish  # prometheus_client only when metrics are asked for

    return publish(store_url, success=success, duration=duration, size=size, textfile=textfile,
                   pushgateway=pushgateway, retention=fit)

