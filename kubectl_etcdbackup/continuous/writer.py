"""Writing the delta stream: buffer whole revisions, seal them as a segment (object first, authenticated
manifest last: the commit point), record coverage and gaps, and hold the store's writer lock.

Memory is bounded by the buffer (`max_bytes` of records, plus one revision): the caller flushes when it is full
and does not read more events meanwhile, so etcd's stream waits (gRPC flow control) instead of memory growing.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import datetime

import zstandard

from ..errors import EtcdBackupError, SnapshotNotFound
from ..format import CIPHER_AES256GCM, CIPHER_NAMES, Binding, FrameSealer
from ..keys import Keyring
from ..manifest import format_time, parse_time
from ..stores import Store
from .segment import (
    COVERAGE_NAME,
    LOCK_NAME,
    Coverage,
    Gap,
    RevisionRecord,
    SegmentManifest,
    WriterLock,
    encode_record,
    gap_name,
    segment_id,
    segment_manifest_name,
    segment_object_name,
)


class StreamLocked(EtcdBackupError):
    """Another stream agent writes to this store."""


class SegmentWriter:
    """Buffers revisions of one chain and writes them as segments. Revisions must come in increasing order."""

    def __init__(self, store: Store, keyring: Keyring, chain: str, cluster_id: str, prev_segment: str,
                 now: Callable[[], datetime]):
        self._store = store
        self._keyring = keyring
        self.chain = chain
        self.cluster_id = cluster_id
        self.prev_segment = prev_segment
        self._now = now
        self._buf = bytearray()
        self._first: RevisionRecord | None = None
        self._last: RevisionRecord | None = None
        self._revisions = 0
        self._events = 0
        self.last_stored_revision = 0

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    def add(self, rec: RevisionRecord) -> None:
        if self._last is not None and rec.revision <= self._last.revision:
            raise EtcdBackupError(f"watch sent revision {rec.revision} after {self._last.revision}")
        self._buf += encode_record(rec)
        self._first = self._first or rec
        self._last = rec
        self._revisions += 1
        self._events += len(rec.events)

    def flush(self) -> SegmentManifest | None:
        """Store the buffered revisions as one segment (None when there are none)."""
        if self._first is None or self._last is None:
            return None
        created = self._now()
        seg_id = segment_id(self.chain, self._first.revision)
        raw = bytes(self._buf)
        raw_sha = hashlib.sha256(raw).hexdigest()
        sealer = FrameSealer(self._keyring.primary, Binding(seg_id, format_time(created), self.cluster_id))
        sealed = sealer.add(zstandard.ZstdCompressor(level=1).compress(raw)) + sealer.finish(len(raw), raw_sha)
        m = SegmentManifest(
            id=seg_id, chain=self.chain, cluster_id=self.cluster_id, created_at=format_time(created),
            first_revision=self._first.revision, last_revision=self._last.revision,
            revision_count=self._revisions, event_count=self._events,
            first_event_time=format_time(self._first.time), last_event_time=format_time(self._last.time),
            raw_size=len(raw), raw_sha256=raw_sha, stored_size=len(sealed),
            stored_sha256=hashlib.sha256(sealed).hexdigest(), codec="zstd",
            cipher=CIPHER_NAMES[CIPHER_AES256GCM], prev_segment=self.prev_segment)
        with self._store.writer(segment_object_name(seg_id)) as w:
            w.write(sealed)
            w.commit()
        self._store.put_bytes(segment_manifest_name(seg_id), m.seal(self._keyring))
        self.prev_segment = seg_id
        self.last_stored_revision = m.last_revision
        self._buf.clear()
        self._first = self._last = None
        self._revisions = self._events = 0
        return m


def write_coverage(store: Store, keyring: Keyring, coverage: Coverage) -> None:
    store.put_bytes(COVERAGE_NAME, coverage.seal(keyring))


def write_gap(store: Store, keyring: Keyring, gap: Gap) -> None:
    store.put_bytes(gap_name(gap.from_revision), gap.seal(keyring))


class StoreLock:
    """The store's writer lock: one record naming the writing agent, renewed at every flush. While another
    agent renews it, acquire() waits (a standby replica); a record not renewed for `stale_after` seconds is
    taken over. Two agents taking it at once both write theirs and read it back after `settle` seconds: only
    the last writer finds its own and goes on, the other waits again. Before each renewal the owner checks it
    still holds the lock, so a replica that lost it stops instead of interleaving segments."""

    def __init__(self, store: Store, owner: str, stale_after: float, now: Callable[[], datetime],
                 settle: float = 1.0):
        self._store = store
        self.owner = owner
        self._stale_after = stale_after
        self._now = now
        self._settle = settle

    def _read(self) -> WriterLock | None:
        try:
            return WriterLock.from_json(self._store.get_bytes(LOCK_NAME))
        except SnapshotNotFound:
            return None

    def _write(self) -> None:
        self._store.put_bytes(LOCK_NAME, WriterLock(self.owner, format_time(self._now())).to_json())

    def _held_by_other(self) -> WriterLock | None:
        held = self._read()
        if held is None or held.owner == self.owner:
            return None
        age = (self._now() - parse_time(held.heartbeat)).total_seconds()
        return held if age < self._stale_after else None

    def acquire(self, stop: threading.Event, waiting: Callable[[str], None]) -> bool:
        """Take the lock; False when `stop` was set first. `waiting` hears once per holder that we wait."""
        announced = ""
        while not stop.is_set():
            held = self._held_by_other()
            if held is None:
                self._write()
                stop.wait(self._settle)
                held = self._read()
                if held is not None and held.owner == self.owner:
                    return True
            elif held.owner != announced:
                waiting(f"another stream agent ({held.owner}) writes to {self._store.url}; waiting until it stops "
                        f"renewing its lock for {self._stale_after:g}s")
                announced = held.owner
            stop.wait(1.0)
        return False

    def renew(self) -> None:
        held = self._read()
        if held is None or held.owner != self.owner:
            raise StreamLocked(f"lost the writer lock of {self._store.url} to "
                               f"{held.owner if held else 'nobody (it was deleted)'}; stopping")
        self._write()

    def release(self) -> None:
        held = self._read()
        if held is not None and held.owner == self.owner:
            self._store.delete(LOCK_NAME)
