"""One scheduled backup run, as the CronJob's agent does it: clean up, check, make room, back up, prune, record.

Order: remove what killed runs left behind; pre-flight checks (members' health and alarms, certificates: warnings,
never a failure); when a file store has less room than the next snapshot needs,
prune first as if that snapshot already existed; take the backup; prune after a success AND after a failure,
on a file store again as if the next snapshot existed (a run that failed for lack of room, with a snapshot
larger than expected, thus frees room for the next run: a full disk heals itself). The outcome is
recorded exactly once on every exit path, an interruption (SIGTERM from the Job's deadline: SystemExit)
included: the run record in the store and the metrics.

With copies (`BackupOptions.copies`) every store is a peer: each is cleaned, made room in, pruned by the same
policy on its own snapshots, and gets its own run record and metrics (label `store`); the run succeeds only when
every store got the snapshot, and its error names the stores that did not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..backup import BackupOptions, take_backups
from ..catalog import list_snapshots
from ..durations import format_duration
from ..errors import EtcdBackupError
from ..leftovers import LEFTOVER_MIN_AGE_SECONDS, find_leftovers, find_local_scratch, remove_leftovers, remove_local
from ..manifest import SnapshotManifest, format_time
from ..output import human_bytes
from ..retention import RetentionFit, RetentionPolicy, assess_fit
from ..run_status import load_status, save_status
from ..stores import Store
from .prune import PruneOptions, run_prune

if TYPE_CHECKING:
    from ..preflight import PreflightReport

ROOM_MARGIN = 1.2  # the next snapshot is expected to be up to this much larger than the newest one


@dataclass
class BackupRunOptions:
    backup: BackupOptions  # its store is the store pruned and recorded to, its key the keyring
    policy: RetentionPolicy  # an empty policy prunes nothing
    metrics_textfile: str | None = None
    pushgateway: str | None = None
    leftover_min_age: float = LEFTOVER_MIN_AGE_SECONDS
    room_margin: float = ROOM_MARGIN
    preflight: bool = True  # check members, alarms and certificates first (warnings only)

    @property
    def stores(self) -> list[Store]:
        return [self.backup.store, *self.backup.copies]


@dataclass
class StoreOutcome:
    """One store's result in the run."""

    url: str
    manifest: SnapshotManifest | None = None  # the snapshot, stored, verified and committed there
    error: str = ""  # why not
    fit: RetentionFit | None = None


@dataclass
class BackupRunReport:
    manifest: SnapshotManifest | None = None  # the new snapshot, stored and verified (in the main store)
    error: str = ""  # why the run failed: no snapshot, or the stores that did not get it (named)
    pruned: list[str] = field(default_factory=list)  # snapshot ids and orphan objects deleted
    leftovers_removed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # one line each, for stderr
    fit: RetentionFit | None = None  # the policy's steady state against the store, when it can be told
    duration_seconds: float = 0.0
    stores: list[StoreOutcome] = field(default_factory=list)  # the main store first, then each copy
    preflight: PreflightReport | None = None

    @property
    def ok(self) -> bool:
        return self.manifest is not None and not self.error


def run_backup(opts: BackupRunOptions) -> BackupRunReport:
    """Run once. A failed backup is reported (`error`), not raised; cleanup, prune, run record and metrics
    problems become warnings. SystemExit/KeyboardInterrupt propagate after the outcome is recorded."""
    stores = opts.stores
    report = BackupRunReport(stores=[StoreOutcome(store.url) for store in stores])
    started = time.monotonic()
    try:
        for store in stores:
            _remove_leftovers(opts, store, report)
        _preflight(opts, report)
        for store in stores:
            if _short_of_room(opts, store, report):
                _prune(opts, store, report, reserve_next=True)
        _take(opts, report)
        for store, outcome in zip(stores, report.stores, strict=True):
            # After a failure a store that can fill up makes room for the next run: the failure may have been for
            # lack of room, with a snapshot larger than expected (this never deletes more than one slot's worth).
            _prune(opts, store, report,
                   reserve_next=outcome.manifest is None and _has_free_space(store, report))
            outcome.fit = _assess_fit(opts, store, report)
        report.fit = report.stores[0].fit
    except BaseException as e:  # SIGTERM (SystemExit), Ctrl-C, or a bug: still recorded, then re-raised
        interrupted = f"interrupted ({type(e).__name__}{f' {e}' if str(e) else ''})"
        for outcome in report.stores:
            if outcome.manifest is None and not outcome.error:
                outcome.error = interrupted
        if not report.error and not all(o.manifest for o in report.stores):
            report.error = interrupted if report.manifest is None else _run_error(report)
        raise
    finally:
        report.duration_seconds = time.monotonic() - started
        _record(opts, report)
    return report


def _take(opts: BackupRunOptions, report: BackupRunReport) -> None:
    try:
        results = take_backups(replace(opts.backup, warn=report.warnings.append))
    except EtcdBackupError as e:  # no store got a snapshot, for one reason
        for outcome in report.stores:
            outcome.error = str(e)
    else:
        for outcome, result in zip(report.stores, results, strict=True):
            outcome.manifest = result.manifest
            outcome.error = str(result.error) if result.error is not None else ""
    report.manifest = report.stores[0].manifest
    report.error = _run_error(report)


def _run_error(report: BackupRunReport) -> str:
    """One line: the error of a single store; with copies, each store that failed, named."""
    failed = [o for o in report.stores if o.manifest is None]
    if not failed:
        return ""
    if len(report.stores) == 1:
        return failed[0].error
    if len(failed) == len(report.stores) and len({o.error for o in failed}) == 1:
        return failed[0].error  # one cause for all (etcd gave no snapshot)
    ok = [o.url for o in report.stores if o.manifest is not None]
    stored = f" (snapshot {next(o.manifest.id for o in report.stores if o.manifest)} is in {', '.join(ok)})" \
        if ok else ""
    return "; ".join(f"store {o.url} failed: {o.error}" for o in failed) + stored


def _preflight(opts: BackupRunOptions, report: BackupRunReport) -> None:
    if not opts.preflight:
        return
    from ..preflight import run_preflight  # cryptography and the TLS checks only when they run

    b = opts.backup
    report.preflight = run_preflight(b.endpoints, b.tls, b.dial_timeout)
    report.warnings += [f"pre-flight: {w}" for w in report.preflight.warnings]


def _remove_leftovers(opts: BackupRunOptions, store: Store, report: BackupRunReport) -> None:
    """Temp files and uploads of killed runs in the store, and their verify scratch dirs in the work dir."""
    now = datetime.now(UTC)
    try:
        found = find_leftovers(store, now, opts.leftover_min_age)
    except EtcdBackupError as e:
        report.warnings.append(f"cannot look for leftovers: {e}")
        found = []
    scratch = find_local_scratch(opts.backup.work_dir, now, opts.leftover_min_age) \
        if store is opts.backup.store else []
    report.warnings += remove_leftovers(store, found) + remove_local(scratch)
    report.leftovers_removed += [_in(store, opts, item.name) for item in found + scratch]


def _in(store: Store, opts: BackupRunOptions, name: str) -> str:
    """A name deleted from a store: as it is for the main store, with the store for a copy."""
    return name if store is opts.backup.store else f"{name} (in {store.url})"


def _has_free_space(store: Store, report: BackupRunReport) -> bool:
    """Whether the store has a free space that can run out (a file store), as opposed to an object store."""
    try:
        return store.free_bytes() is not None
    except EtcdBackupError as e:
        report.warnings.append(f"cannot check the room left in the store: {e}")
        return False


def _short_of_room(opts: BackupRunOptions, store: Store, report: BackupRunReport) -> bool:
    """Whether the store (one with a known free space) has less room than the next snapshot is expected to
    take: the newest trusted snapshot's stored size, with a margin. Unknown counts as enough."""
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


def _prune(opts: BackupRunOptions, store: Store, report: BackupRunReport, *, reserve_next: bool) -> None:
    if opts.policy.empty:
        return
    try:
        pruned = run_prune(PruneOptions(store, opts.backup.key, opts.policy,
                                        leftover_min_age=opts.leftover_min_age, reserve_next=reserve_next))
    except EtcdBackupError as e:
        report.warnings.append(f"prune of {store.url} failed: {e}" if opts.backup.copies else f"prune failed: {e}")
        return
    report.pruned += [_in(store, opts, name) for name in pruned.deleted]
    report.leftovers_removed += [_in(store, opts, name) for name in pruned.leftovers_removed]
    report.warnings += pruned.problems


def _assess_fit(opts: BackupRunOptions, store: Store, report: BackupRunReport) -> RetentionFit | None:
    """Warn when the policy's steady state cannot fit the store (interval from the recent snapshots' gaps)."""
    if opts.policy.empty:
        return None
    try:
        fit = assess_fit(opts.policy, list_snapshots(store, opts.backup.key).trusted, store.capacity_bytes())
    except EtcdBackupError as e:
        report.warnings.append(f"cannot assess the retention policy: {e}")
        return None
    if fit is not None and fit.fits is False:
        report.warnings.append(
            f"retention ({opts.policy.describe()}) keeps about {fit.count} snapshots in the long run at one every "
            f"{format_duration(fit.interval_seconds)}: {human_bytes(fit.expected_bytes)} plus one being written, "
            f"more than the store's {human_bytes(fit.capacity_bytes)}; keep fewer or give the store more space "
            f"(meanwhile runs prune early when the store is short of room)")
    return fit


def record_setup_failure(store_url: str, metrics_textfile: str | None, pushgateway: str | None) -> list[str]:
    """The outcome of a run that could not start (bad options, a store that cannot be opened): a failure in the
    metrics (there is no store to keep a run record in). Returns problems."""
    return _publish([_StoreMetricsArgs(store_url, False, None, None)], metrics_textfile, pushgateway, 0.0, None)


def _record(opts: BackupRunOptions, report: BackupRunReport) -> None:
    """The run record in each store, then the metrics; both best effort (problems become warnings)."""
    when = format_time(datetime.now(UTC))
    for store, outcome in zip(opts.stores, report.stores, strict=True):
        try:
            status = load_status(store)
            if report.preflight is not None and report.preflight.certs:
                status.cert_expiry = {c.name: c.not_after.timestamp() for c in report.preflight.certs}
            if outcome.manifest is not None:
                status.record_success(outcome.manifest.created_at, outcome.manifest.id)
            else:
                status.record_failure(when, outcome.error or report.error)
            save_status(store, status)
        except EtcdBackupError as e:
            report.warnings.append(f"cannot update run status in {store.url}: {e}" if opts.backup.copies
                                   else f"cannot update run status: {e}")
    report.warnings += _publish(
        [_StoreMetricsArgs(o.url, o.manifest is not None, o.manifest.stored_size if o.manifest else None, o.fit)
         for o in report.stores], opts.metrics_textfile, opts.pushgateway, report.duration_seconds, report.preflight)


@dataclass(frozen=True)
class _StoreMetricsArgs:
    url: str
    success: bool
    size: int | None
    fit: RetentionFit | None


def _publish(stores: list[_StoreMetricsArgs], textfile: str | None, pushgateway: str | None, duration: float,
             preflight: PreflightReport | None) -> list[str]:
    if not (textfile or pushgateway):
        return []
    from ..metrics import StoreMetrics, publish  # prometheus_client only when metrics are asked for

    return publish([StoreMetrics(s.url, s.success, s.size, s.fit) for s in stores], duration=duration,
                   textfile=textfile, pushgateway=pushgateway, preflight=preflight)
