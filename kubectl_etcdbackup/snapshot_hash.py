"""etcd's snapshot integrity hash (pure): the stream is the bbolt db followed by sha256(db), 32 bytes."""

from __future__ import annotations

import hashlib

from .bbolt import BboltScanner, DbSummary
from .errors import IntegrityError, TruncatedError

ETCD_HASH_SIZE = 32


class SnapshotHashCheck:
    """Feed the raw snapshot bytes in order; check() confirms the appended sha256.

    Also keeps the sha256 and size of the whole raw stream (db + appended hash), which is what
    `etcdctl snapshot save` writes and what `snapshot restore` expects.

    With `pages`, the db bytes also go through the streaming bbolt check; db_summary() gives its result.
    """

    def __init__(self, pages: BboltScanner | None = None) -> None:
        self._db = hashlib.sha256()
        self._tail = b""
        self.size = 0
        self.pages = pages

    def update(self, data: bytes) -> None:
        self.size += len(data)
        if len(data) <= ETCD_HASH_SIZE:  # rare: join with the held-back tail
            buf = self._tail + bytes(data)
            self._tail = buf[-ETCD_HASH_SIZE:]
            self._db_part(buf[:-ETCD_HASH_SIZE])
            return
        # The last 32 bytes seen may be etcd's hash: held back until more data shows they are not (no copy of data).
        self._db_part(self._tail)
        self._db_part(memoryview(data)[:-ETCD_HASH_SIZE])
        self._tail = bytes(data[-ETCD_HASH_SIZE:])

    def _db_part(self, db: bytes | memoryview) -> None:
        if db:
            self._db.update(db)
            if self.pages is not None:
                self.pages.feed(db)

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

    def db_summary(self, source: str = "snapshot") -> DbSummary:
        """After check(): walk the db's pages (IntegrityError when it is inconsistent). Needs `pages`."""
        if self.pages is None:
            raise ValueError("this hash check was made without a page scanner")
        try:
            return self.pages.finish()
        except IntegrityError as e:
            raise IntegrityError(f"{source}: {e}") from None
