"""etcd -> store: stream Maintenance.Snapshot, check etcd's hash, zstd, seal frames, upload; then verify
and write the manifest (the commit point). No temporary copy of the snapshot is made while streaming.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import zstandard

from . import __version__
from .catalog import save_manifest
from .errors import EtcdUnavailable, IntegrityError, TruncatedError, UsageError
from .etcd._proto.rpc_pb2 import SnapshotResponse
from .etcd.client import EndpointStatus, EtcdClient, TLSFiles, connect_healthy
from .format import (
    CIPHER_AES256GCM,
    CIPHER_NAMES,
    CIPHER_NONE,
    CODEC_NONE,
    CODEC_ZSTD,
    DEFAULT_FRAME_SIZE,
    Binding,
    FrameSealer,
)
from .keys import Keyring
from .manifest import SnapshotManifest, format_time, new_snapshot_id, object_name
from .progress import transfer_progress
from .snapshot_hash import SnapshotHashCheck
from .stores import Store

VERIFY_MODES = ("hash", "status", "restore")
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
    verify: str = "status"  # hash: etcd's stream hash only; status: + read back and `snapshot status`;
    #                         restore: + a test restore into a scratch dir
    work_dir: str | None = None
    id_prefix: str = "etcd"
    progress: bool | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    warn: Callable[[str], None] = field(default=lambda message: None)  # one line per member fallen back from


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
    raw_size: int
    raw_sha256: str
    stored_size: int
    stored_sha256: str
    header_revision: int


def _stream_to_store(client: EtcdClient, status: EndpointStatus, opts: BackupOptions, binding: Binding,
                     ) -> _Streamed:
    sealer = FrameSealer(opts.key.primary if opts.key else None, binding,
                         CODEC_ZSTD if opts.compress else CODEC_NONE, opts.frame_size)
    compressor = zstandard.ZstdCompressor(level=opts.compression_level).compressobj() if opts.compress else None
    check = SnapshotHashCheck()
    stored = hashlib.sha256()
    stored_size = 0
    revision = 0
    writer = opts.store.writer(object_name(binding.snapshot_id), private=opts.key is None)

    def put(data: bytes) -> None:
        nonlocal stored_size
        if data:
            stored.update(data)
            stored_size += len(data)
            writer.write(data)

    try:
        with transfer_progress(f"snapshot {client.endpoint}", status.db_size, opts.progress) as advance:
            batches = _batched(client.snapshot(opts.command_timeout, opts.idle_timeout))
            if (os.cpu_count() or 1) > 2:
                batches = _read_ahead(batches)
            for header_revision, blob in batches:
                revision = revision or header_revision
                check.update(blob)
                advance(len(blob))
                put(sealer.add(compressor.compress(blob) if compressor else blob))
        check.check(f"snapshot stream from {client.endpoint}")
        put(sealer.add(compressor.flush() if compressor else b""))
        put(sealer.finish(check.size, check.raw_sha256))
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return _Streamed(check.size, check.raw_sha256, stored_size, stored.hexdigest(), revision)


def take_backup(opts: BackupOptions) -> SnapshotManifest:
    """Take, store and verify one snapshot from the first member that can give one; return its manifest (already
    saved). When earlier members failed, each is reported through opts.warn with the member used instead."""
    if opts.verify not in VERIFY_MODES:
        raise UsageError(f"--verify must be one of {', '.join(VERIFY_MODES)}")
    opts.store.check_writable()
    started = time.monotonic()
    problems: list[str] = []
    for endpoint in opts.endpoints:
        try:
            manifest = _snapshot_from(endpoint, opts)
        except (EtcdUnavailable, IntegrityError, TruncatedError) as e:
            # A member that is down, dies, stalls or sends a bad stream: try the next one (a partial object was
            # aborted).
            problems.append(str(e))
            continue
        for problem in problems:
            opts.warn(f"{problem}; fell back to {endpoint}")
        try:
            _verify_new(opts, manifest)
        except BaseException:
            opts.store.delete(object_name(manifest.id))  # our own uncommitted object, never listed
            raise
        manifest.duration_seconds = round(time.monotonic() - started, 3)
        save_manifest(opts.store, manifest, opts.key)
        return manifest
    raise EtcdUnavailable("no etcd endpoint could take a snapshot: " + "; ".join(problems))


def _snapshot_from(endpoint: str, opts: BackupOptions) -> SnapshotManifest:
    """Stream one member's snapshot into the store; the manifest describing it, not yet verified nor saved."""
    client, status = connect_healthy(endpoint, opts.tls, opts.dial_timeout)
    with client:
        created = opts.now()
        snapshot_id = new_snapshot_id(created, opts.id_prefix)
        key_count = client.key_count(timeout=max(opts.dial_timeout, 30.0))
        streamed = _stream_to_store(client, status, opts, Binding(snapshot_id, format_time(created),
                                                                  status.cluster_id))
    return SnapshotManifest(
        id=snapshot_id, created_at=format_time(created),
        etcd_revision=streamed.header_revision or status.revision, key_count=key_count,
        etcd_version=status.version, cluster_id=status.cluster_id, member_id=status.member_id,
        member_endpoint=endpoint, raw_size=streamed.raw_size, stored_size=streamed.stored_size,
        raw_sha256=streamed.raw_sha256, stored_sha256=streamed.stored_sha256,
        codec="zstd" if opts.compress else "none",
        cipher=CIPHER_NAMES[CIPHER_AES256GCM if opts.key else CIPHER_NONE],
        key_id=opts.key.primary_id.hex() if opts.key else "", duration_seconds=0.0, tool_version=__version__)


def _verify_new(opts: BackupOptions, manifest: SnapshotManifest) -> None:
    """Check the snapshot as stored before it counts. Fills manifest.verified/verification."""
    if opts.verify == "hash":
        manifest.verified = True
        manifest.verification = {"level": "hash", "etcd_sha256": "ok"}
        return
    from .verify import verify_snapshot  # read back, decode, `snapshot status`, optional test restore

    result = verify_snapshot(opts.store, manifest, opts.key, test_restore=opts.verify == "restore",
                             work_dir=opts.work_dir, progress=opts.progress)
    if result.revision and result.revision != manifest.etcd_revision:
        manifest.etcd_revision = result.revision
    manifest.db_total_keys = result.total_keys
    manifest.verified = True
    manifest.verification = result.as_dict()
