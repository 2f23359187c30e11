"""Raw etcd snapshot bytes -> zstd -> sealed frames -> an object being written (or several: FanOutWriter), in one
pass, hashing both the raw and the stored bytes on the way. Shared by backups (a gRPC stream) and imports (a file)."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import zstandard

from .bbolt import BboltScanner
from .errors import EtcdBackupError
from .format import CODEC_NONE, CODEC_ZSTD, DEFAULT_FRAME_SIZE, Binding, FrameSealer
from .snapshot_hash import SnapshotHashCheck
from .stores import ObjectWriter


@dataclass(frozen=True)
class Sealed:
    raw_size: int
    raw_sha256: str
    stored_size: int
    stored_sha256: str


class SealingStream:
    """Feed raw bytes with add(); finish() seals the end (bound to the raw size and sha256). The caller checks
    etcd's appended hash with `.check` before finishing, and commits or aborts the writer."""

    def __init__(self, writer: ObjectWriter, key: bytes | None, binding: Binding, *, compress: bool = True,
                 level: int = 1, frame_size: int = DEFAULT_FRAME_SIZE):
        self._writer = writer
        self._sealer = FrameSealer(key, binding, CODEC_ZSTD if compress else CODEC_NONE, frame_size)
        self._compressor = zstandard.ZstdCompressor(level=level).compressobj() if compress else None
        self.check = SnapshotHashCheck(BboltScanner())  # etcd's hash, and the db's pages decoded on the way
        self._stored = hashlib.sha256()
        self._stored_size = 0

    def _put(self, data: bytes) -> None:
        if data:
            self._stored.update(data)
            self._stored_size += len(data)
            self._writer.write(data)

    def add(self, raw: bytes) -> None:
        self.check.update(raw)
        self._put(self._sealer.add(self._compressor.compress(raw) if self._compressor else raw))

    def finish(self) -> Sealed:
        self._put(self._sealer.add(self._compressor.flush() if self._compressor else b""))
        self._put(self._sealer.finish(self.check.size, self.check.raw_sha256))
        return Sealed(self.check.size, self.check.raw_sha256, self._stored_size, self._stored.hexdigest())


class FanOutWriter(ObjectWriter):
    """One stream of sealed bytes written to several objects (a snapshot and its copies in other stores), each
    committed or failed on its own: a target whose write or commit fails is aborted and recorded in `failed`
    (by its index) while the others go on. Raises only when no target is left. Commits run in parallel (an fsync
    or the last multipart part of each store), writes in turn: each store's writer buffers or uploads in the
    background already (S3 parts go up on the writer's own threads)."""

    def __init__(self, writers: list[ObjectWriter]):
        self._writers = list(writers)
        self.failed: dict[int, EtcdBackupError] = {}

    def _live(self) -> list[tuple[int, ObjectWriter]]:
        live = [(i, w) for i, w in enumerate(self._writers) if i not in self.failed]
        if not live:
            raise next(iter(self.failed.values()))
        return live

    def write(self, data: bytes) -> None:
        for i, w in self._live():
            try:
                w.write(data)
            except EtcdBackupError as e:  # the writer aborted itself
                self.failed[i] = e
        self._live()

    def commit(self) -> None:
        live = self._live()

        def commit_one(item: tuple[int, ObjectWriter]) -> None:
            i, w = item
            try:
                w.commit()
            except EtcdBackupError as e:
                self.failed[i] = e

        if len(live) == 1:
            commit_one(live[0])
        else:
            with ThreadPoolExecutor(len(live), thread_name_prefix="commit") as pool:
                list(pool.map(commit_one, live))
        self._live()

    def abort(self) -> None:
        for w in self._writers:
            w.abort()
