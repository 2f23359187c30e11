"""Continuous backup: follow etcd's whole keyspace and store every revision as delta segments beside the full
snapshots, until stopped.

Where it starts: after the newest stored point (the newest segment, or the coverage record when it is ahead:
a chain that has no segment yet), so a restarted agent leaves no gap and repeats nothing; with no stream yet,
after the newest verified full snapshot (the chain's base), taking one first when the store has none. When
etcd has compacted a needed revision, it takes a full snapshot at once, records the gap and starts a new chain
after that snapshot.

Every `flush_interval` seconds (and whenever `segment_max_bytes` of records are buffered) it stores the buffered
revisions as one segment, then the coverage record (every revision up to R is stored, as of time T; progress
reports advance it even when nothing changes) and renews the store's writer lock. The loop wakes on every watch
response; progress reports, asked for four times per flush interval, wake it when nothing changes, so a flush is
at most a quarter interval late. The RPO is thus about 1.25 x flush interval plus the watch's own delay.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..backup import BackupOptions, take_backup
from ..catalog import list_snapshots, pick
from ..continuous.segment import Coverage, Gap, RevisionRecord
from ..continuous.stored import read_stream
from ..continuous.watcher import Progress, Revision, WatchCompacted, Watcher
from ..continuous.writer import SegmentWriter, StoreLock, write_coverage, write_gap
from ..errors import EtcdBackupError, SnapshotNotFound
from ..etcd.client import TLSFiles
from ..keys import Keyring
from ..manifest import format_time
from ..stores import Store

DEFAULT_FLUSH_INTERVAL = 5.0
DEFAULT_SEGMENT_MAX_BYTES = 16 << 20


def _default_owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class StreamOptions:
    endpoints: list[str]
    store: Store
    keyring: Keyring
    tls: TLSFiles | None = None
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    segment_max_bytes: int = DEFAULT_SEGMENT_MAX_BYTES
    dial_timeout: float = 5.0
    idle_timeout: float = 30.0  # a watch answering nothing (not even progress reports) this long: next member
    lock_stale_after: float = 30.0  # another agent's writer lock not renewed this long (>= 6 flushes) is taken over
    stop: threading.Event = field(default_factory=threading.Event)  # set it to end run_stream (after a flush)
    owner: str = field(default_factory=_default_owner)  # who holds the writer lock
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    warn: Callable[[str], None] = field(default=lambda message: None)  # one line per reconnect, gap, ...
    on_segment: Callable[[str, int, int], None] = field(default=lambda seg_id, first, last: None)


@dataclass
class StreamReport:
    started_at_revision: int = 0
    chains: list[str] = field(default_factory=list)  # base snapshot ids, oldest first
    segments: int = 0
    revisions: int = 0
    events: int = 0
    covered_revision: int = 0
    gaps: list[Gap] = field(default_factory=list)


@dataclass
class _Position:
    chain: str
    cluster_id: str
    next_revision: int
    prev_segment: str = ""


def run_stream(opts: StreamOptions) -> StreamReport:
    """Follow etcd until opts.stop is set (or SIGTERM: SystemExit), storing what was received before returning.
    While another agent holds the store's writer lock, waits for it (a standby). Raises StreamLocked when the
    lock is lost while writing, and store errors as they come."""
    opts.store.check_writable()
    lock = StoreLock(opts.store, opts.owner, stale_after=max(opts.lock_stale_after, 6 * opts.flush_interval),
                     now=opts.now)
    report = StreamReport()
    if not lock.acquire(opts.stop, opts.warn):
        return report
    try:
        pos = _resume(opts)
        report.started_at_revision = pos.next_revision
        while not opts.stop.is_set():
            report.chains.append(pos.chain)
            try:
                _follow(opts, pos, lock, report)
            except WatchCompacted as e:
                pos = _new_chain(opts, e, report)
    finally:
        with contextlib.suppress(EtcdBackupError):
            lock.release()
    return report


def _resume(opts: StreamOptions) -> _Position:
    stream = read_stream(opts.store, opts.keyring)
    newest = max(stream.segments, key=lambda s: s.last_revision, default=None)
    cov = stream.coverage
    if cov is not None and (newest is None or cov.revision > newest.last_revision):
        return _Position(cov.chain, cov.cluster_id, cov.revision + 1, newest.id if newest else "")
    if newest is not None:
        return _Position(newest.chain, newest.cluster_id, newest.last_revision + 1, newest.id)
    try:
        base = pick(list_snapshots(opts.store, opts.keyring).snapshots, "latest", opts.store.url)
    except SnapshotNotFound:
        base = take_backup(_backup_options(opts))
    return _Position(base.id, base.cluster_id, base.etcd_revision + 1)


def _backup_options(opts: StreamOptions) -> BackupOptions:
    return BackupOptions(endpoints=opts.endpoints, store=opts.store, key=opts.keyring, tls=opts.tls,
                         dial_timeout=opts.dial_timeout, verify="status", progress=False, warn=opts.warn)


def _new_chain(opts: StreamOptions, e: WatchCompacted, report: StreamReport) -> _Position:
    """After a compaction: a full snapshot now, the gap recorded, a new chain from the snapshot on."""
    opts.warn(f"{e}: taking a full snapshot and starting a new chain")
    base = take_backup(_backup_options(opts))
    gap = Gap(from_revision=e.needed, to_revision=base.etcd_revision, new_chain=base.id,
              recorded_at=format_time(opts.now()),
              reason=f"etcd had compacted them (up to revision {e.compact_revision}) before the stream read them")
    write_gap(opts.store, opts.keyring, gap)
    write_coverage(opts.store, opts.keyring, Coverage(base.id, base.cluster_id, base.etcd_revision,
                                                      format_time(opts.now())))
    report.gaps.append(gap)
    return _Position(base.id, base.cluster_id, base.etcd_revision + 1)


class _Follower:
    """One chain's loop state: the segment buffer, the lease TTLs already asked for, the complete point."""

    def __init__(self, opts: StreamOptions, pos: _Position, lock: StoreLock, report: StreamReport,
                 watcher: Watcher):
        self.opts = opts
        self.lock = lock
        self.report = report
        self.watcher = watcher
        self.writer = SegmentWriter(opts.store, opts.keyring, pos.chain, pos.cluster_id, pos.prev_segment, opts.now)
        self.leases: set[int] = set()
        self.complete = (pos.next_revision - 1, opts.now())  # every revision up to here received, as of then
        self.next_flush = time.monotonic() + opts.flush_interval

    def on_revision(self, item: Revision) -> None:
        if self.watcher.cluster_id != self.writer.cluster_id:
            raise EtcdBackupError(f"etcd cluster {self.watcher.cluster_id} is not the cluster {self.writer.cluster_id} "
                                  f"whose stream {self.opts.store.url} holds (chain {self.writer.chain})")
        now = self.opts.now()
        ttls = {}
        for ev in item.events:
            lease = ev.kv.lease
            if lease and lease not in self.leases:
                ttls[lease] = self.watcher.lease_ttl(lease)
                self.leases.add(lease)
        self.writer.add(RevisionRecord(item.revision, int(now.timestamp() * 1000), item.events, ttls))
        self.complete = (item.revision, now)
        self.report.revisions += 1
        self.report.events += len(item.events)
        if self.writer.pending_bytes >= self.opts.segment_max_bytes:
            self.flush()

    def on_progress(self, item: Progress) -> None:
        if item.complete:
            self.complete = (item.revision, self.opts.now())

    def tick(self) -> None:
        if time.monotonic() >= self.next_flush:
            self.flush()
            self.lock.renew()
            revision, at = self.complete
            write_coverage(self.opts.store, self.opts.keyring,
                           Coverage(self.writer.chain, self.writer.cluster_id, revision, format_time(at)))
            self.report.covered_revision = revision
            self.next_flush = time.monotonic() + self.opts.flush_interval

    def flush(self) -> None:
        m = self.writer.flush()
        if m is not None:
            self.report.segments += 1
            self.opts.on_segment(m.id, m.first_revision, m.last_revision)


def _follow(opts: StreamOptions, pos: _Position, lock: StoreLock, report: StreamReport) -> None:
    """Watch from pos until stopped; what was received is stored before returning or raising."""
    watcher = Watcher(opts.endpoints, opts.tls, dial_timeout=opts.dial_timeout,
                      progress_interval=max(0.1, opts.flush_interval / 4), idle_timeout=opts.idle_timeout)
    f = _Follower(opts, pos, lock, report, watcher)
    try:
        for item in watcher.watch(pos.next_revision, opts.stop):
            if isinstance(item, Revision):
                f.on_revision(item)
            elif isinstance(item, Progress):
                f.on_progress(item)
            else:
                opts.warn(item.reason)
                f.flush()  # etcd may be gone for good: keep what was received
            f.tick()
    except BaseException:
        with contextlib.suppress(EtcdBackupError):
            f.flush()
        raise
    f.next_flush = 0.0
    f.tick()
