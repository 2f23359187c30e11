"""Carry out a RestorePlan on this machine: fetch + verify, `snapshot restore` into a staging dir,
move the old data dir aside (never deleting it), swap the new one in."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from .errors import EtcdBackupError, RestoreRefused
from .etcd.tools import EtcdTool, RestoreArgs
from .fetch import fetch_to_file
from .manifest import SnapshotManifest
from .restore_plan import RestorePlan
from .stores import Store
from .verify import check_revision


def data_dir_in_use(data_dir: Path) -> bool:
    """True when a running etcd holds the bbolt lock on the member db."""
    db = data_dir / "member" / "snap" / "db"
    if not db.is_file():
        return False
    with open(db, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def data_dir_exists(path: str) -> bool:
    p = Path(path)
    return p.exists() and (not p.is_dir() or any(p.iterdir()))


def execute_restore(plan: RestorePlan, store: Store, manifest: SnapshotManifest, key: bytes | None,
                    tool: EtcdTool, progress: bool | None = None) -> None:
    final, staging = Path(plan.final_dir), Path(plan.staging_dir)
    if plan.aside_dir and data_dir_in_use(final):
        raise RestoreRefused(f"etcd is running on {final} (its db is locked); stop it first. Nothing was changed")
    if staging.exists():
        raise RestoreRefused(f"staging dir {staging} already exists; remove it or retry. Nothing was changed")
    tool.check_restore_flags(plan.member.bump_revision, plan.member.mark_compacted)
    final.parent.mkdir(parents=True, exist_ok=True)
    snap = Path(plan.snapshot_file)
    try:
        fetch_to_file(store, manifest, key, snap, progress)
        status = tool.snapshot_status(str(snap))
        check_revision(manifest, status.revision)
        tool.restore(RestoreArgs(str(snap), str(staging), plan.member.name, plan.member.initial_cluster,
                                 plan.token, plan.member.initial_advertise_peer_urls,
                                 plan.member.bump_revision, plan.member.mark_compacted, plan.member.wal_dir))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # our own half-made staging dir only
        snap.unlink(missing_ok=True)
        raise
    snap.unlink(missing_ok=True)
    _swap_in(staging, final, Path(plan.aside_dir) if plan.aside_dir else None)


def _swap_in(staging: Path, final: Path, aside: Path | None) -> None:
    try:
        if aside is not None:
            os.rename(final, aside)
    except OSError as e:
        raise EtcdBackupError(f"cannot move {final} aside to {aside}: {e.strerror}; the restored data is "
                              f"in {staging}") from None
    try:
        os.rename(staging, final)
    except OSError as e:
        if aside is not None:
            os.rename(aside, final)  # put the old data back where it was
        raise EtcdBackupError(f"cannot move {staging} to {final}: {e.strerror}; old data left in place") from None
