"""Store -> verified raw etcd snapshot file: read, check stored sha256, authenticate and decrypt frames, decompress,
check raw sha256 and etcd's appended hash (and, when asked, decode the db's bbolt pages), in one pass: reading,
decryption and decompression on the calling thread, hashing and writing on a second one. The object must be the
one its manifest describes (version 2 objects are bound to the snapshot id, time, cluster and raw sha256), and
decoding stops as soon as it would produce more than the manifest's raw size. The output is created 0600 (it is
the plaintext of the cluster's secrets) and appears under its final name only after every check passed; on any
failure the partial file is removed and nothing else is touched.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

import zstandard

from .bbolt import BboltScanner, DbSummary
from .errors import EtcdBackupError, FormatError, IntegrityError
from .format import CODEC_ZSTD, Binding, Expected, FrameOpener
from .keys import Keyring
from .manifest import SnapshotManifest, object_name
from .progress import Advance, transfer_progress
from .snapshot_hash import ETCD_HASH_SIZE, SnapshotHashCheck
from .stores import Store

_OUT_CHUNK = 1 << 20
_SINK_DEPTH = 4  # x ~1 MiB raw chunks between the decoding thread and the hashing/writing one
_SINK_WAIT = 30.0


class _PayloadReader:
    """File-like read() over an iterator of byte strings, for zstandard's streaming decompressor."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while not self._buf:
            nxt = next(self._chunks, None)
            if nxt is None:
                return b""
            self._buf = nxt
        if n < 0 or n >= len(self._buf):
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


def expected(manifest: SnapshotManifest) -> Expected:
    """What the manifest says its object must be."""
    return Expected(manifest.cipher, Binding(manifest.id, manifest.created_at, manifest.cluster_id),
                    manifest.raw_size, manifest.raw_sha256)


def _decoded(chunks: Iterator[bytes], keyring: Keyring | None, manifest: SnapshotManifest,
             advance: Advance | None, allow_plaintext: bool) -> Iterator[bytes]:
    """Raw snapshot bytes from stored chunks: frames authenticated and decrypted, zstd undone, never more than the
    manifest's raw size; at the end the container and the stored bytes are checked against the manifest. The
    raw bytes' own checks (sha256, etcd's hash) are the caller's: see _check_raw."""
    stored_hash = hashlib.sha256()
    stored_size = 0
    opener = FrameOpener(keyring, expected(manifest), allow_plaintext=allow_plaintext)

    def payloads() -> Iterator[bytes]:
        nonlocal stored_size
        for chunk in chunks:
            stored_hash.update(chunk)
            stored_size += len(chunk)
            if advance is not None:
                advance(len(chunk))
            yield from opener.feed(chunk)
        opener.close()

    source = payloads()
    raw_size = 0

    def bounded(raw: bytes) -> bytes:
        nonlocal raw_size
        raw_size += len(raw)
        if raw_size > manifest.raw_size:
            raise FormatError(f"snapshot {manifest.id}: decodes to more than the {manifest.raw_size} bytes its "
                              "manifest records; stopped")
        return raw

    if manifest.codec == "zstd":
        try:
            raw_iter: Iterator[bytes] = zstandard.ZstdDecompressor().read_to_iter(
                cast(BinaryIO, _PayloadReader(source)), read_size=_OUT_CHUNK, write_size=_OUT_CHUNK)
            for raw in raw_iter:
                yield bounded(raw)
        except zstandard.ZstdError as e:
            raise FormatError(f"snapshot {manifest.id}: zstd stream is corrupt: {e}") from None
    else:
        for raw in source:
            yield bounded(raw)
    # Drain in case the decompressor stopped at the end of its frame before the container ended.
    for extra in source:
        if extra:
            raise FormatError(f"snapshot {manifest.id}: data after the end of the compressed stream")
    if opener.header is not None and opener.header.codec != (CODEC_ZSTD if manifest.codec == "zstd" else 0):
        raise IntegrityError(f"snapshot {manifest.id}: object codec does not match its manifest")
    if stored_size != manifest.stored_size or stored_hash.hexdigest() != manifest.stored_sha256:
        raise IntegrityError(f"snapshot {manifest.id}: stored object does not match its manifest "
                             f"(size {stored_size} vs {manifest.stored_size}, or sha256 differs)")


def _check_raw(manifest: SnapshotManifest, check: SnapshotHashCheck) -> None:
    if check.size != manifest.raw_size or check.raw_sha256 != manifest.raw_sha256:
        raise IntegrityError(f"snapshot {manifest.id}: decoded snapshot does not match its manifest sha256")
    check.check(f"snapshot {manifest.id}")


def decode_object(chunks: Iterator[bytes], keyring: Keyring | None, manifest: SnapshotManifest,
                  advance: Advance | None = None, *, allow_plaintext: bool = False,
                  pages: BboltScanner | None = None) -> Iterator[bytes]:
    """Yield raw snapshot bytes from stored chunks. Checks run as data flows; the final ones at the end. With
    `pages`, the db's pages are decoded on the way too (pages.finish() walks them afterwards)."""
    check = SnapshotHashCheck(pages)
    for raw in _decoded(chunks, keyring, manifest, advance, allow_plaintext):
        check.update(raw)
        yield raw
    _check_raw(manifest, check)


class _Sink:
    """The second half of the pass, on its own thread: sha256 of the raw bytes (etcd's hash and the manifest's)
    and the write to the output file. hashlib and write() release the GIL, so this overlaps the decryption and
    decompression on the calling thread; a bounded queue keeps memory at a few chunks."""

    def __init__(self, out: BinaryIO | None):
        self.check = SnapshotHashCheck()
        self._out = out
        self._q: queue.Queue[bytes | None] = queue.Queue(_SINK_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fetch-sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            raw = self._q.get()
            if raw is None:
                return
            if self._error is not None:
                continue  # drain until the producer notices
            try:
                self.check.update(raw)
                if self._out is not None:
                    self._out.write(raw)
            except BaseException as e:  # noqa: BLE001 - re-raised on the calling thread
                self._error = e

    def put(self, raw: bytes) -> None:
        if self._error is not None:
            raise self._error
        while True:
            try:
                self._q.put(raw, timeout=_SINK_WAIT)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    raise RuntimeError("fetch writer thread died") from self._error

    def close(self) -> None:
        """Wait for everything queued; raise what the thread hit."""
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Stop after a failure on the calling thread: the thread drops what is queued and ends."""
        self._error = self._error or RuntimeError("fetch abandoned")
        while self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._q.put(None, timeout=0.1)
                break
        self._thread.join(_SINK_WAIT)


def _one_pass(store: Store, manifest: SnapshotManifest, keyring: Keyring | None, out: BinaryIO | None,
              advance: Advance, pages: BboltScanner | None, allow_plaintext: bool) -> None:
    """Read, check, decrypt, decompress on this thread; hash and write on the sink's; the db's pages decoded
    here too (pure Python, it holds the GIL anyway). Raises on any failed check, after the output is whole."""
    sink = _Sink(out)
    db_left = max(0, manifest.raw_size - ETCD_HASH_SIZE)  # the db part: what the page scanner is fed
    try:
        for raw in _decoded(store.read_chunks(object_name(manifest.id)), keyring, manifest, advance,
                            allow_plaintext):
            sink.put(raw)
            if pages is not None and db_left:
                pages.feed(raw if len(raw) <= db_left else raw[:db_left])
                db_left -= min(len(raw), db_left)
    except BaseException:
        sink.abandon()
        raise
    sink.close()
    _check_raw(manifest, sink.check)


def scan_object(store: Store, manifest: SnapshotManifest, keyring: Keyring | None, progress: bool | None = None,
                *, allow_plaintext: bool = False) -> DbSummary:
    """Every check of fetch_to_file and the bbolt page walk, in one streaming pass that writes nothing."""
    pages = BboltScanner()
    with transfer_progress(f"check {manifest.id}", manifest.stored_size, progress) as advance:
        _one_pass(store, manifest, keyring, None, advance, pages, allow_plaintext)
    try:
        return pages.finish()
    except IntegrityError as e:
        raise IntegrityError(f"snapshot {manifest.id}: {e}") from None


def fetch_to_file(store: Store, manifest: SnapshotManifest, keyring: Keyring | None, dest: str | Path,
                  progress: bool | None = None, durable: bool = True, *, allow_plaintext: bool = False,
                  pages: BboltScanner | None = None) -> Path:
    """Write the verified raw snapshot to dest (atomically, mode 0600). Returns dest.

    durable=False skips the fsync, for scratch copies that are deleted right after use. With `pages`, the db's
    pages are decoded in the same pass (pages.finish() walks them).
    """
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        tmp.unlink(missing_ok=True)  # a partial file left by a killed run: O_EXCL below must not trip on it
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f, transfer_progress(f"fetch {manifest.id}", manifest.stored_size,
                                                         progress) as advance:
            _one_pass(store, manifest, keyring, f, advance, pages, allow_plaintext)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, dest)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise EtcdBackupError(f"cannot write {dest}: no space left on device") from None
        raise EtcdBackupError(f"cannot write {dest}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest
