"""etcd -> store: stream Maintenance.Snapshot, check etcd's hash, zstd, seal frames, upload; then verify
and write the manifest (the commit point). No temporary copy of the snapshot is made while streaming.

Copies (`BackupOptions.copies`): the snapshot is streamed from etcd once and its sealed bytes are written to every
store at the same time (sealing.FanOutWriter); each store's object is then verified (read back from that store)
and committed (its manifest written) on its own, under the same id. A store that fails is reported with its
error and does not stop the others.
"""

from __future__ import annotations

import contextlib
import copy
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from . import __version__
from .catalog import save_manifest
from .defaults import DEFAULT_VERIFY, VERIFY_MODES
from .errors import EtcdBackupError, EtcdUnavailable, IntegrityError, TruncatedError, UsageError
from .etcd._proto.rpc_pb2 import SnapshotResponse
from .etcd.client import EndpointStatus, EtcdClient, TLSFiles
from .format import (
    CIPHER_AES256GCM,
    CIPHER_NAMES,
    CIPHER_NONE,
    DEFAULT_FRAME_SIZE,
    Binding,
)
from .keys import Keyring
from .manifest import SnapshotManifest, format_time, new_snapshot_id, object_name
from .progress import transfer_progress
from .sealing import FanOutWriter, Sealed, SealingStream
from .snapshot_hash import SnapshotHashCheck
from .stores import ObjectWriter, Store, open_store

_BATCH_BYTES = 1 << 20
_QUEUE_DEPTH = 8  # x 1 MiB batches: bounded read-ahead


@dataclass
class BackupOptions:
    endpoints: list[str]
    store: Store
    key: Keyring | None  # the newest key seals; None = unencrypted (must be asked for explicitly)
    tls: TLSFiles | None = None
    compression_level: int = 1  # as small as level 3 on etcd dbs (half-empty pages), twice as fast
    compress: bool = True
    frame_size: int = DEFAULT_FRAME_SIZE
    dial_timeout: float = 5.0
    command_timeout: float = 600.0  # the whole snapshot stream; under the chart's Job deadline (900 s)
    idle_timeout: float = 30.0  # a snapshot stream with no bytes for this long has stalled: next member
    verify: str = DEFAULT_VERIFY  # hash: etcd's stream hash only; status: + the bbolt pages walked while
    #                         streaming; restore: + read back, `snapshot status` and a test restore in work_dir
    work_dir: str | None = None
    id_prefix: str = "etcd"
    progress: bool | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    warn: Callable[[str], None] = field(default=lambda message: None)  # one line per member fallen back from
    copies: list[Store] = field(default_factory=list)  # more stores that get the same snapshot (same id)


@dataclass
class StoreResult:
    """One store's part of a backup: the snapshot stored, verified and committed there, or why not."""

    store: Store
    manifest: SnapshotManifest | None = None
    error: EtcdBackupError | None = None


def open_copy_store(url: str) -> Store:
    """A `--copy-to` URL: a store URL whose S3 settings ride along as query parameters, one copy's settings in one
    argument: `s3://bucket/prefix?endpoint=http://minio:9000&region=eu-west-1&sse=aws:kms&kms_key_id=...`."""
    from urllib.parse import parse_qs, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    known = {"endpoint", "region", "sse", "kms_key_id"}
    if set(query) - known:
        raise UsageError(f"--copy-to {url}: unknown parameter(s) {', '.join(sorted(set(query) - known))} "
                         f"(known: {', '.join(sorted(known))})")
    if query and parts.scheme != "s3":
        raise UsageError(f"--copy-to {url}: parameters are for s3:// stores only")
    return open_store(urlunsplit(parts._replace(query="")), s3_endpoint_url=query.get("endpoint") or None,
                      s3_region=query.get("region") or None, s3_sse=query.get("sse") or None,
                      s3_sse_kms_key_id=query.get("kms_key_id") or None, create=True)


def _batched(stream: Iterator[SnapshotResponse]) -> Iterator[tuple[int, bytes]]:
    """Join etcd's 32 KiB messages into ~1 MiB batches so per-call costs downstream stay small.

    Yields (header revision or 0, bytes).
    """
    parts: list[bytes] = []
    size = revision = 0
    for resp in stream:
        if not revision and resp.header.revision:
            revision = resp.header.revision
        parts.append(resp.blob)
        size += len(resp.blob)
        if size >= _BATCH_BYTES:
            yield revision, b"".join(parts)
            parts, size = [], 0
    if parts:
        yield revision, b"".join(parts)


def _read_ahead(batches: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
    """Receive on a thread so the network overlaps hashing, compression and encryption. Worth it only with
    cores to spare: on two cores etcd itself needs one, and the hand-off costs more than it gains."""
    q: queue.Queue[tuple[str, object]] = queue.Queue(_QUEUE_DEPTH)
    stop = threading.Event()

    def put(item: tuple[str, object]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for batch in batches:
                if not put(("data", batch)):
                    return
            put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(("error", e))

    t = threading.Thread(target=pump, name="etcd-snapshot-reader", daemon=True)
    t.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "data":
                yield item  # type: ignore[misc]
            elif kind == "end":
                return
            else:
                raise item  # type: ignore[misc]
    finally:
        stop.set()


@dataclass
class _Streamed:
    sealed: Sealed
    header_revision: int
    check: SnapshotHashCheck  # etcd's hash and the db's pages, as they streamed by (what --verify status walks)


def _stream_to_store(client: EtcdClient, status: EndpointStatus, opts: BackupOptions, binding: Binding,
                     targets: list[StoreResult]) -> _Streamed:
    """Stream into every target at once; a target whose writer fails gets its error and drops out. Raises (all
    writers aborted) when etcd fails or no target is left."""
    writers: list[tuple[StoreResult, ObjectWriter]] = []
    for t in targets:
        try:
            writers.append((t, t.store.writer(object_name(binding.snapshot_id), private=opts.key is None)))
        except EtcdBackupError as e:
            t.error = e
    if not writers:
        raise targets[0].error  # type: ignore[misc]
    fan = FanOutWriter([w for _, w in writers])
    stream = SealingStream(fan, opts.key.primary if opts.key else None, binding, compress=opts.compress,
                           level=opts.compression_level, frame_size=opts.frame_size)
    revision = 0
    try:
        try:
            with transfer_progress(f"snapshot {client.endpoint}", status.db_size, opts.progress) as advance:
                batches = _batched(client.snapshot(opts.command_timeout, opts.idle_timeout))
                if (os.cpu_count() or 1) > 2:
                    batches = _read_ahead(batches)
                for header_revision, blob in batches:
                    revision = revision or header_revision
                    stream.add(blob)
                    advance(len(blob))
            stream.check.check(f"snapshot stream from {client.endpoint}")
            sealed = stream.finish()
            fan.commit()
        finally:
            for i, failure in fan.failed.items():
                writers[i][0].error = failure
    except BaseException:
        fan.abort()
        raise
    return _Streamed(sealed, revision, stream.check)


def take_backup(opts: BackupOptions) -> SnapshotManifest:
    """Take, store and verify one snapshot from the first member that can give one; return its manifest (already
    saved). When earlier members failed, each is reported through opts.warn with the member used instead. With
    copies, the first store that failed raises (take_backups reports every store)."""
    results = take_backups(opts)
    for result in results:
        if result.error is not None:
            raise result.error
    assert results[0].manifest is not None
    return results[0].manifest


def take_backups(opts: BackupOptions) -> list[StoreResult]:
    """Take one snapshot from the first member that can give one and store it in opts.store and every copy.

    Returns one result per store (opts.store first): the manifest saved there, or the store's error. Raises when
    no store could get it for a reason common to all (etcd gave no snapshot; the one store cannot be written)."""
    if opts.verify not in VERIFY_MODES:
        raise UsageError(f"--verify must be one of {', '.join(VERIFY_MODES)}")
    results = [StoreResult(store) for store in (opts.store, *opts.copies)]
    for r in results:
        try:
            r.store.check_writable()
        except EtcdBackupError as e:
            if len(results) == 1:
                raise
            r.error = e
    live = [r for r in results if r.error is None]
    if not live:
        return results
    started = time.monotonic()
    problems: list[str] = []
    for endpoint in opts.endpoints:
        live = [r for r in live if r.error is None]
        try:
            manifest, check = _snapshot_from(endpoint, opts, live)
        except (EtcdUnavailable, IntegrityError, TruncatedError) as e:
            # A member that is down, dies, stalls or sends a bad stream: try the next one (a partial object was
            # aborted).
            problems.append(str(e))
            continue
        except EtcdBackupError:
            if len(results) > 1 and all(r.error is not None for r in live):
                return results  # every store failed on its own; each says why
            raise
        for problem in problems:
            opts.warn(f"{problem}; fell back to {endpoint}")
        for r in live:
            if r.error is None:
                _commit_in(opts, r, copy.deepcopy(manifest), check, started)
        return results
    raise EtcdUnavailable("no etcd endpoint could take a snapshot: " + "; ".join(problems))


def _commit_in(opts: BackupOptions, result: StoreResult, manifest: SnapshotManifest, check: SnapshotHashCheck,
               started: float) -> None:
    """Verify the object in this store, then write its manifest there (the commit point)."""
    store = result.store
    try:
        _verify_new(opts, store, manifest, check)
    except BaseException as e:
        with contextlib.suppress(EtcdBackupError):
            store.delete(object_name(manifest.id))  # our own uncommitted object, never listed
        if not isinstance(e, EtcdBackupError):
            raise
        result.error = e
        return
    manifest.duration_seconds = round(time.monotonic() - started, 3)
    try:
        save_manifest(store, manifest, opts.key)
    except EtcdBackupError as e:
        result.error = e
        return
    result.manifest = manifest


def _snapshot_from(endpoint: str, opts: BackupOptions, targets: list[StoreResult],
                   ) -> tuple[SnapshotManifest, SnapshotHashCheck]:
    """Stream one member's snapshot into the stores; the manifest describing it (not yet verified nor saved) and
    the checks made while it streamed."""
    client, status = _connect(endpoint, opts)
    with client:
        created = opts.now()
        snapshot_id = new_snapshot_id(created, opts.id_prefix)
        key_count = client.key_count(timeout=max(opts.dial_timeout, 30.0))
        streamed = _stream_to_store(client, status, opts, Binding(snapshot_id, format_time(created),
                                                                  status.cluster_id), targets)
    manifest = SnapshotManifest(
        id=snapshot_id, created_at=format_time(created),
        etcd_revision=streamed.header_revision or status.revision, key_count=key_count,
        etcd_version=status.version, cluster_id=status.cluster_id, member_id=status.member_id,
        member_endpoint=endpoint, raw_size=streamed.sealed.raw_size, stored_size=streamed.sealed.stored_size,
        raw_sha256=streamed.sealed.raw_sha256, stored_sha256=streamed.sealed.stored_sha256,
        codec="zstd" if opts.compress else "none",
        cipher=CIPHER_NAMES[CIPHER_AES256GCM if opts.key else CIPHER_NONE],
        key_id=opts.key.primary_id.hex() if opts.key else "", duration_seconds=0.0, tool_version=__version__)
    return manifest, streamed.check


def _connect(endpoint: str, opts: BackupOptions) -> tuple[EtcdClient, EndpointStatus]:
    """As connect_healthy, except that a NOSPACE alarm does not stop a backup: the db is whole, a snapshot only
    reads it, and a cluster out of space is one that needs a backup before it is compacted and defragmented (the
    pre-flight checks warn about the alarm)."""
    client = EtcdClient(endpoint, opts.tls, opts.dial_timeout)
    try:
        status = client.status()
    except BaseException:
        client.close()
        raise
    blocking = [e for e in status.errors if "alarm:NOSPACE" not in e]
    if blocking or status.leader == "0":
        client.close()
        raise EtcdUnavailable(f"etcd {endpoint}: unhealthy ({', '.join(blocking) or 'no leader'})")
    return client, status


def _verify_new(opts: BackupOptions, store: Store, manifest: SnapshotManifest, streamed: SnapshotHashCheck,
                ) -> None:
    """Check the snapshot as stored before it counts. Fills manifest.verified/verification.

    status: the db's pages were decoded as they streamed by (sealing.SealingStream); walk them: no read back, no
    scratch copy, no etcdutl. restore: read back, `snapshot status` and a test restore into a scratch dir."""
    if opts.verify == "hash":
        manifest.verified = True
        manifest.verification = {"level": "hash", "etcd_sha256": "ok"}
        return
    from .verify import VerifyResult, check_revision, verify_snapshot

    if opts.verify == "status" and streamed.pages is not None:
        started = time.monotonic()
        db = streamed.db_summary(f"snapshot {manifest.id}")
        check_revision(manifest, db.revision)
        result = VerifyResult(manifest.id, "status", db.revision, db.total_keys, db.total_size, "bbolt page walk",
                              round(time.monotonic() - started, 3))
    else:
        result = verify_snapshot(store, manifest, opts.key, test_restore=opts.verify == "restore",
                                 work_dir=opts.work_dir, progress=opts.progress)
    if result.revision and result.revision != manifest.etcd_revision:
        manifest.etcd_revision = result.revision
    manifest.db_total_keys = result.total_keys
    manifest.verified = True
    manifest.verification = result.as_dict()
