"""Store -> verified raw etcd snapshot file: read, check stored sha256, authenticate and decrypt frames,
decompress, check raw sha256 and etcd's appended hash. The object must be the one its manifest describes
(version 2 objects are bound to the snapshot id, time, cluster and raw sha256), and decoding stops as soon as
it would produce more than the manifest's raw size. The output is created 0600 (it is the plaintext of the
cluster's secrets) and appears under its final name only after every check passed; on any failure the partial
file is removed and nothing else is touched.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import zstandard

from .errors import EtcdBackupError, FormatError, IntegrityError
from .format import CODEC_ZSTD, Binding, Expected, FrameOpener
from .keys import Keyring
from .manifest import SnapshotManifest, object_name
from .progress import Advance, transfer_progress
from .snapshot_hash import SnapshotHashCheck
from .stores import Store

_OUT_CHUNK = 1 << 20


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


def decode_object(chunks: Iterator[bytes], keyring: Keyring | None, manifest: SnapshotManifest,
                  advance: Advance | None = None, *, allow_plaintext: bool = False) -> Iterator[bytes]:
    """Yield raw snapshot bytes from stored chunks. Checks run as data flows; the final ones at the end."""
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

    check = SnapshotHashCheck()
    source = payloads()

    def bounded(raw: bytes) -> bytes:
        if check.size + len(raw) > manifest.raw_size:
            raise FormatError(f"snapshot {manifest.id}: decodes to more than the {manifest.raw_size} bytes its "
                              "manifest records; stopped")
        check.update(raw)
        return raw

    if manifest.codec == "zstd":
        try:
            raw_iter: Iterator[bytes] = zstandard.ZstdDecompressor().read_to_iter(
                _PayloadReader(source), read_size=_OUT_CHUNK, write_size=_OUT_CHUNK)
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
    if check.size != manifest.raw_size or check.raw_sha256 != manifest.raw_sha256:
        raise IntegrityError(f"snapshot {manifest.id}: decoded snapshot does not match its manifest sha256")
    check.check(f"snapshot {manifest.id}")


def fetch_to_file(store: Store, manifest: SnapshotManifest, keyring: Keyring | None, dest: str | Path,
                  progress: bool | None = None, durable: bool = True, *, allow_plaintext: bool = False) -> Path:
    """Write the verified raw snapshot to dest (atomically, mode 0600). Returns dest.

    durable=False skips the fsync, for scratch copies that are deleted right after use.
    """
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        tmp.unlink(missing_ok=True)  # a partial file left by a killed run: O_EXCL below must not trip on it
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f, transfer_progress(f"fetch {manifest.id}", manifest.stored_size,
                                                         progress) as advance:
            for raw in decode_object(store.read_chunks(object_name(manifest.id)), keyring, manifest, advance,
                                     allow_plaintext=allow_plaintext):
                f.write(raw)
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
