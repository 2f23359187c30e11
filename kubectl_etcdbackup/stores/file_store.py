"""Local directory store (what a PVC is): write to a temp file, fsync, rename, fsync the directory."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from ..errors import SnapshotNotFound, StoreError
from .base import ObjectInfo, ObjectWriter, PendingWrite, Store

_TMP_PREFIX = ".tmp-"


def _os_error(action: str, path: Path, e: OSError) -> StoreError:
    if e.errno == errno.ENOSPC:
        return StoreError(f"{action} {path}: no space left on device")
    return StoreError(f"{action} {path}: {e.strerror or e}")


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileObjectWriter(ObjectWriter):
    def __init__(self, directory: Path, name: str, mode: int):
        self._final = directory / name
        self._tmp = directory / f"{_TMP_PREFIX}{name}.{secrets.token_hex(4)}"
        try:
            self._f = os.fdopen(os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb")
        except OSError as e:
            raise _os_error("cannot create", self._tmp, e) from None
        self._done = False

    def write(self, data: bytes) -> None:
        try:
            self._f.write(data)
        except OSError as e:
            self.abort()
            raise _os_error("cannot write", self._tmp, e) from None

    def commit(self) -> None:
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            os.replace(self._tmp, self._final)
            fsync_dir(self._final.parent)
        except OSError as e:
            self.abort()
            raise _os_error("cannot store", self._final, e) from None
        self._done = True

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):  # closing flushes, which fails again on a full disk
            self._f.close()
        self._tmp.unlink(missing_ok=True)


class FileStore(Store):
    def __init__(self, directory: str | Path, create: bool = True):
        self.root = Path(directory)
        self.url = f"file://{self.root}"
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise _os_error("cannot create store directory", self.root, e) from None
        elif not self.root.is_dir():
            raise StoreError(f"store directory {self.root} does not exist")

    def _path(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise StoreError(f"invalid object name {name!r}")
        return self.root / name

    def writer(self, name: str, *, private: bool = False) -> ObjectWriter:
        # Sealed objects and manifests stay readable by the exporter, which runs as another user.
        return FileObjectWriter(self.root, self._path(name).name, 0o600 if private else 0o644)

    def read_chunks(self, name: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        path = self._path(name)
        try:
            f = open(path, "rb")  # noqa: SIM115 - generator closes it
        except FileNotFoundError:
            raise SnapshotNotFound(f"object {name} not found in {self.url}") from None
        except OSError as e:
            raise _os_error("cannot read", path, e) from None
        with f:
            while chunk := f.read(chunk_size):
                yield chunk

    def put_bytes(self, name: str, data: bytes) -> None:
        w = self.writer(name)
        w.write(data)
        w.commit()

    def get_bytes(self, name: str) -> bytes:
        path = self._path(name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise SnapshotNotFound(f"object {name} not found in {self.url}") from None
        except OSError as e:
            raise _os_error("cannot read", path, e) from None

    def list_names(self) -> list[str]:
        try:
            return sorted(p.name for p in self.root.iterdir() if not p.name.startswith(".") and p.is_file())
        except FileNotFoundError:
            raise StoreError(f"store directory {self.root} does not exist") from None
        except OSError as e:
            raise _os_error("cannot list", self.root, e) from None

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def size(self, name: str) -> int:
        try:
            return self._path(name).stat().st_size
        except FileNotFoundError:
            raise SnapshotNotFound(f"object {name} not found in {self.url}") from None

    def modified_at(self, name: str) -> datetime:
        try:
            return datetime.fromtimestamp(self._path(name).stat().st_mtime, UTC)
        except FileNotFoundError:
            raise SnapshotNotFound(f"object {name} not found in {self.url}") from None

    def check_writable(self) -> None:
        probe = self.root / f"{_TMP_PREFIX}probe-{secrets.token_hex(4)}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise _os_error("store is not writable:", self.root, e) from None

    def pending_writes(self) -> list[PendingWrite]:
        """The writers' temp files (`.tmp-*`) in the store directory, with their modification time."""
        found = []
        try:
            for p in self.root.iterdir():
                if p.name.startswith(_TMP_PREFIX):
                    with contextlib.suppress(FileNotFoundError):  # committed or aborted meanwhile
                        mtime = datetime.fromtimestamp(p.lstat().st_mtime, UTC)
                        found.append(PendingWrite(p.name, "temp-file", mtime))
        except OSError as e:
            raise _os_error("cannot list", self.root, e) from None
        return sorted(found, key=lambda w: w.name)

    def discard_pending(self, pending: PendingWrite) -> None:
        """Delete one temp file; one already gone is fine."""
        if not pending.name.startswith(_TMP_PREFIX) or "/" in pending.name:
            raise StoreError(f"not a temp file of {self.url}: {pending.name!r}")
        path = self.root / pending.name
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            raise _os_error("cannot delete", path, e) from None

    def free_bytes(self) -> int | None:
        """Bytes available to this (unprivileged) process on the store's filesystem."""
        st = self._statvfs()
        return st.f_bavail * st.f_frsize

    def capacity_bytes(self) -> int | None:
        """Size of the store's filesystem (a PVC: its capacity)."""
        st = self._statvfs()
        return st.f_blocks * st.f_frsize

    def _statvfs(self) -> os.statvfs_result:
        try:
            return os.statvfs(self.root)
        except OSError as e:
            raise _os_error("cannot stat filesystem of", self.root, e) from None

    def list_objects(self) -> list[ObjectInfo]:
        """Every object (as list_names) with its size; the etag is size, mtime (ns) and inode: a commit
        renames a new file into place, so any rewrite changes it."""
        found = []
        try:
            for entry in os.scandir(self.root):
                if entry.name.startswith("."):
                    continue
                with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                    st = entry.stat(follow_symlinks=True)
                    if entry.is_file():
                        found.append(ObjectInfo(entry.name, st.st_size,
                                                f"{st.st_size}-{st.st_mtime_ns}-{st.st_ino}"))
        except FileNotFoundError:
            raise StoreError(f"store directory {self.root} does not exist") from None
        except OSError as e:
            raise _os_error("cannot list", self.root, e) from None
        return sorted(found, key=lambda o: o.name)
