"""Carry out a RestorePlan on this machine: lock the data dir, fetch + verify and `snapshot restore` inside a
private staging dir, check again that no etcd runs on the data dir, swap the new one in (the old one is moved
aside, never deleted).

Crash safety: until the swap, only the staging dir (and the lock file) exist besides the data dir. The swap
is one atomic exchange of two directories (renameat2 RENAME_EXCHANGE), so a kill -9 at any point leaves a
complete old or new data dir at the final path. Killed between its two renames, the restored data sits under
the move-aside name while the old data is still in place.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .bbolt import BboltScanner
from .errors import EtcdBackupError, IntegrityError, RestoreRefused
from .etcd.tools import EtcdTool, RestoreArgs
from .fetch import fetch_to_file
from .keys import Keyring
from .leftovers import find_stale_staging, remove_local
from .manifest import SnapshotManifest
from .restore_plan import RestorePlan
from .stores import Store
from .stores.file_store import fsync_dir
from .verify import check_revision

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@dataclass
class RestoreReport:
    """What the restore did besides the swap, for the operator."""

    notes: list[str] = field(default_factory=list)


def _locked(path: Path, how: int) -> bool:
    """True when another process holds a conflicting lock of kind `how` (flock or lockf) on the file."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False  # gone or unreadable: not evidence of a running etcd
    try:
        if how == 0:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)  # releases whichever lock we took
    return False


def data_dir_in_use(data_dir: Path, wal_dir: Path | None = None) -> bool:
    """True when a running etcd holds its bbolt flock on the member db, or its lock on a WAL file
    (etcd 3.5 takes open-file-description record locks there; lockf conflicts with them)."""
    if _locked(data_dir / "member" / "snap" / "db", 0):
        return True
    wal = wal_dir or data_dir / "member" / "wal"
    return any(_locked(p, 1) for p in sorted(wal.glob("*.wal")))


def data_dir_exists(path: str) -> bool:
    p = Path(path)
    return p.exists() and (not p.is_dir() or any(p.iterdir()))


def lock_file_for(data_dir: Path) -> Path:
    """The restore lock of a data dir: a hidden file beside it (never inside: the dir itself is swapped)."""
    return data_dir.with_name(f".{data_dir.name}.restore.lock")


@contextlib.contextmanager
def restore_lock(data_dir: Path) -> Iterator[None]:
    """Hold the exclusive restore lock of data_dir; RestoreRefused when another restore holds it."""
    path = lock_file_for(data_dir)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RestoreRefused(f"another restore is running on {data_dir} (it holds {path}); wait for it to "
                                 "finish. Nothing was changed") from None
        yield
    finally:
        os.close(fd)


def execute_restore(plan: RestorePlan, store: Store, manifest: SnapshotManifest, keyring: Keyring | None,
                    tool: EtcdTool, progress: bool | None = None, *, allow_plaintext: bool = False,
                    ) -> RestoreReport:
    """Restore per the plan. Raises RestoreRefused (nothing changed) when etcd runs on the data dir, before
    or right before the swap, or another restore holds the lock; on any failure before the swap, only our
    own staging dir is removed."""
    final = Path(plan.final_dir)
    tool.check_restore_flags(plan.member.bump_revision, plan.member.mark_compacted)
    final.parent.mkdir(parents=True, exist_ok=True)
    report = RestoreReport()
    with restore_lock(final):
        _refuse_if_running(plan, final)
        report.notes += _remove_stale_staging(final)
        staging = _make_staging(Path(plan.staging_dir))
        try:
            _restore_into_staging(plan, store, manifest, keyring, tool, progress, allow_plaintext)
            _refuse_if_running(plan, final)
            if plan.aside_dir is None and data_dir_exists(plan.final_dir):
                raise RestoreRefused(f"{final} appeared during the restore; nothing was changed")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # our own staging dir only
            raise
        _swap_in(Path(plan.restored_dir), final, Path(plan.aside_dir) if plan.aside_dir else None)
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _refuse_if_running(plan: RestorePlan, final: Path) -> None:
    wal = Path(plan.member.wal_dir) if plan.member.wal_dir else None
    if data_dir_in_use(final, wal):
        raise RestoreRefused(f"etcd is running on {final} (its db or WAL is locked); stop it first. "
                             "Nothing was changed")


def _remove_stale_staging(final: Path) -> list[str]:
    stale = find_stale_staging(final, datetime.now(UTC))
    problems = remove_local(stale)
    return [f"removed {s.name}, left by a restore killed {s.age_seconds / 3600:.1f} h ago" for s in stale] + problems


def _make_staging(staging: Path) -> Path:
    try:
        os.mkdir(staging, 0o700)
    except FileExistsError:
        raise RestoreRefused(f"staging dir {staging} already exists; remove it or retry. Nothing was changed"
                             ) from None
    return staging


def _restore_into_staging(plan: RestorePlan, store: Store, manifest: SnapshotManifest,
                          keyring: Keyring | None, tool: EtcdTool, progress: bool | None,
                          allow_plaintext: bool) -> None:
    snap = Path(plan.snapshot_file)
    # One pass: fetch, decrypt, decompress, every hash and the bbolt page walk (in place of `snapshot status`,
    # which maps the whole db). No fsync: this copy is only etcdutl's input, and the member db it writes is
    # synced by etcdutl (bbolt commit) before the swap.
    pages = BboltScanner()
    fetch_to_file(store, manifest, keyring, snap, progress, durable=False, allow_plaintext=allow_plaintext,
                  pages=pages)
    try:
        db = pages.finish()
    except IntegrityError as e:
        raise IntegrityError(f"snapshot {manifest.id}: {e}") from None
    check_revision(manifest, db.revision)
    m = plan.member
    # The fetch pass checked etcd's sha256 of the db as it wrote it: etcdutl need not read it all again for that.
    tool.restore(RestoreArgs(str(snap), plan.restored_dir, m.name, m.initial_cluster, plan.token,
                             m.initial_advertise_peer_urls, m.bump_revision, m.mark_compacted, m.wal_dir,
                             skip_hash_check=True))
    snap.unlink()


def _exchange(a: Path, b: Path) -> None:
    """Atomically swap two paths on one filesystem (Linux renameat2 RENAME_EXCHANGE); raises OSError."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _swap_in(restored: Path, final: Path, aside: Path | None) -> None:
    """restored -> final; with `aside`, the old final ends up there. Fsyncs the parent dir."""
    if aside is None:
        try:
            os.rename(restored, final)
        except OSError as e:
            raise EtcdBackupError(f"cannot move {restored} to {final}: {e.strerror}") from None
        fsync_dir(final.parent)
        return
    try:
        os.rename(restored, aside)
        fsync_dir(final.parent)
    except OSError as e:
        raise EtcdBackupError(f"cannot move {restored} to {aside}: {e.strerror}; old data left in place") from None
    try:
        _exchange(aside, final)
    except OSError as e:
        raise EtcdBackupError(f"cannot swap {aside} (the restored data) with {final}: {e.strerror}; old data "
                              "left in place") from None
    fsync_dir(final.parent)
