"""What killed runs leave behind, and its removal: store temp files and incomplete multipart uploads, the
agent's verify scratch dirs, the restore's staging dirs.

Only things older than a threshold are touched: a younger one may belong to a run still in progress. Objects
without a manifest are not leftovers here (prune deletes those). Removal never raises for one bad item: it
returns one problem line per item it could not remove.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .errors import EtcdBackupError
from .stores.base import PendingWrite, Store

# A run older than this is dead: the backup Job's deadline is 15 min, a restore takes minutes.
LEFTOVER_MIN_AGE_SECONDS = 3600.0

VERIFY_SCRATCH_PREFIX = "etcdbackup-verify-"  # verify.py's tempfile.mkdtemp prefix
STAGING_INFIX = ".restoring-"  # restore_plan.py's staging dir: <data-dir>.restoring-<stamp>


@dataclass(frozen=True)
class Leftover:
    """One leftover: a store object name (or S3 key), or a local path for local scratch."""

    name: str
    kind: str  # "temp-file", "multipart-upload", "scratch-dir", "staging-dir"
    age_seconds: float
    handle: str = ""  # what the store needs besides the name to remove it (the S3 upload id)


def _age(now: datetime, then: datetime) -> float:
    return (now - then).total_seconds()


def find_leftovers(store: Store, now: datetime, min_age_seconds: float = LEFTOVER_MIN_AGE_SECONDS,
                   ) -> list[Leftover]:
    """The store's unfinished writes at least min_age_seconds old at `now` (aware), oldest first.

    Raises StoreError when the store cannot be listed."""
    found = [Leftover(p.name, p.kind, _age(now, p.started), p.handle) for p in store.pending_writes()]
    return sorted((f for f in found if f.age_seconds >= min_age_seconds), key=lambda f: -f.age_seconds)


def remove_leftovers(store: Store, leftovers: list[Leftover]) -> list[str]:
    """Remove each store leftover; returns one line per item that could not be removed (never raises for one)."""
    problems = []
    for item in leftovers:
        try:
            store.discard_pending(PendingWrite(item.name, item.kind, datetime.now(UTC), item.handle))
        except EtcdBackupError as e:
            problems.append(f"cannot remove {item.kind} {item.name}: {e}")
    return problems


def _old_dirs(parent: Path, prefix: str, kind: str, now: datetime, min_age_seconds: float) -> list[Leftover]:
    found = []
    try:
        entries = list(parent.iterdir())
    except FileNotFoundError:
        return []
    for p in entries:
        if not p.name.startswith(prefix):
            continue
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        age = _age(now, datetime.fromtimestamp(st.st_mtime, UTC))
        if os.path.isdir(p) and not p.is_symlink() and age >= min_age_seconds:
            found.append(Leftover(str(p), kind, age))
    return sorted(found, key=lambda f: -f.age_seconds)


def find_local_scratch(work_dir: str | Path | None, now: datetime,
                       min_age_seconds: float = LEFTOVER_MIN_AGE_SECONDS) -> list[Leftover]:
    """The verify scratch dirs (`etcdbackup-verify-*`) directly under work_dir (None: the system temp dir)
    untouched for at least min_age_seconds, oldest first. A missing work_dir has none."""
    parent = Path(work_dir) if work_dir else Path(tempfile.gettempdir())
    return _old_dirs(parent, VERIFY_SCRATCH_PREFIX, "scratch-dir", now, min_age_seconds)


def find_stale_staging(data_dir: str | Path, now: datetime,
                       min_age_seconds: float = LEFTOVER_MIN_AGE_SECONDS) -> list[Leftover]:
    """The restore staging dirs of data_dir (`<data-dir>.restoring-*`, beside it) at least min_age_seconds old.

    The caller must hold the data dir's restore lock, so that none of them is in use."""
    final = Path(data_dir)
    return _old_dirs(final.parent, final.name + STAGING_INFIX, "staging-dir", now, min_age_seconds)


def remove_local(leftovers: list[Leftover]) -> list[str]:
    """Delete each local leftover dir (scratch or staging) with everything in it; returns one line per
    failure (never raises for one). Refuses a path whose name is not one of ours."""
    problems = []
    for item in leftovers:
        name = Path(item.name).name
        if not (name.startswith(VERIFY_SCRATCH_PREFIX) or STAGING_INFIX in name):
            problems.append(f"not removing {item.name}: not a scratch or staging dir")
            continue
        try:
            shutil.rmtree(item.name)
        except FileNotFoundError:
            pass
        except OSError as e:
            problems.append(f"cannot remove {item.kind} {item.name}: {e.strerror or e}")
    return problems
