"""The store interface: a flat namespace of named objects (a directory, or an S3 bucket prefix)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from ..errors import StoreError


class ObjectWriter(ABC):
    """Streams one object. Nothing is visible under the final name until commit() returns."""

    @abstractmethod
    def write(self, data: bytes) -> None: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def abort(self) -> None:
        """Drop everything written; safe to call after a failure, and more than once."""

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()


@dataclass(frozen=True)
class PendingWrite:
    """An unfinished write a killed writer left behind: a temp file, an incomplete multipart upload."""

    name: str  # the temp file name, or the S3 key of the upload
    kind: str  # "temp-file" or "multipart-upload"
    started: datetime  # timezone-aware
    handle: str = ""  # what discard_pending() needs besides the name (the S3 upload id)


class Store(ABC):
    url: str

    @abstractmethod
    def writer(self, name: str, *, private: bool = False) -> ObjectWriter:
        """Stream a new object; private: its content is plaintext of the cluster (readable by its owner only,
        where the store has owners)."""

    @abstractmethod
    def read_chunks(self, name: str, chunk_size: int = 1 << 20) -> Iterator[bytes]: ...

    @abstractmethod
    def put_bytes(self, name: str, data: bytes) -> None:
        """Write a small object atomically."""

    @abstractmethod
    def get_bytes(self, name: str) -> bytes: ...

    @abstractmethod
    def list_names(self) -> list[str]: ...

    @abstractmethod
    def delete(self, name: str) -> None: ...

    @abstractmethod
    def size(self, name: str) -> int: ...

    @abstractmethod
    def check_writable(self) -> None:
        """Fail early (before talking to etcd) when the store cannot be written."""

    def pending_writes(self) -> list[PendingWrite]:
        """Unfinished writes this store's writers may have left behind (none for stores without any)."""
        return []

    def discard_pending(self, pending: PendingWrite) -> None:
        """Remove one unfinished write found by pending_writes(); raise StoreError when that fails."""
        raise StoreError(f"{self.url} has no unfinished writes to discard ({pending.name})")

    @abstractmethod
    def modified_at(self, name: str) -> datetime:
        """When the object was last written (UTC); SnapshotNotFound when it does not exist."""

    def free_bytes(self) -> int | None:
        """Bytes a new object may still use, or None when the store cannot tell (an object store)."""
        return None

    def capacity_bytes(self) -> int | None:
        """Total size of the store's space, or None when it has no fixed size (an object store)."""
        return None

    def list_objects(self) -> list[ObjectInfo]:
        """Every object with what tells a changed one apart, from one listing where the store can. This
        fallback knows names only (`etag` ""): a reader must treat such an object as changed every time."""
        return [ObjectInfo(name, None, "") for name in self.list_names()]


@dataclass(frozen=True)
class ObjectInfo:
    """One object as a listing shows it. `etag` changes whenever the content may have changed (S3's ETag,
    or a file's size, mtime and inode); "" when the store cannot tell."""

    name: str
    size: int | None
    etag: str
