"""The store interface: a flat namespace of named objects (a directory, or an S3 bucket prefix)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator


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


class Store(ABC):
    url: str

    @abstractmethod
    def writer(self, name: str) -> ObjectWriter: ...

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
