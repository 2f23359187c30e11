"""etcd's snapshot integrity hash (pure): the stream is the bbolt db followed by sha256(db), 32 bytes."""

from __future__ import annotations

import hashlib

from .errors import IntegrityError, TruncatedError

ETCD_HASH_SIZE = 32


class SnapshotHashCheck:
    """Feed the raw snapshot bytes in order; check() confirms the appended sha256.

    Also keeps the sha256 and size of the whole raw stream (db + appended hash), which is what
    `etcdctl snapshot save` writes and what `snapshot restore` expects.
    """

    def __init__(self) -> None:
        self._db = hashlib.sha256()
        self._tail = b""
        self.size = 0

    def update(self, data: bytes) -> None:
        self.size += len(data)
        buf = self._tail + data if self._tail else data
        if len(buf) <= ETCD_HASH_SIZE:
            self._tail = bytes(buf)
            return
        self._db.update(memoryview(buf)[:-ETCD_HASH_SIZE])
        self._tail = bytes(buf[-ETCD_HASH_SIZE:])

    @property
    def raw_sha256(self) -> str:
        # One hashing pass: sha256(db || tail) continues from sha256's state over db.
        whole = self._db.copy()
        whole.update(self._tail)
        return whole.hexdigest()

    def check(self, source: str = "snapshot") -> None:
        if self.size <= ETCD_HASH_SIZE:
            raise TruncatedError(f"{source} is empty or truncated ({self.size} bytes)")
        if self._db.digest() != self._tail:
            raise IntegrityError(f"{source} does not match etcd's appended sha256 (corrupt or truncated)")
