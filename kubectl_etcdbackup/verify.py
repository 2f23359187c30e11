"""Verify a stored snapshot end to end: read back, authenticate, decompress, check every hash and walk the db's
bbolt pages, in one streaming pass that writes nothing (level status); level restore also writes a scratch copy
(in the same pass), runs `snapshot status` on it and a test restore into a scratch directory.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .bbolt import BboltScanner
from .errors import IntegrityError
from .etcd.tools import EtcdTool, RestoreArgs
from .fetch import fetch_to_file, scan_object
from .keys import Keyring
from .manifest import SnapshotManifest
from .stores import Store


@dataclass
class VerifyResult:
    id: str
    level: str
    revision: int
    total_keys: int
    total_size: int
    tool: str
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def check_revision(manifest: SnapshotManifest, db_revision: int) -> None:
    """The db cannot be older than the revision recorded when the snapshot started.

    A never-written etcd is at revision 1 with no revision in its db, which `snapshot status` reports as 0.
    """
    if db_revision < manifest.etcd_revision and not (db_revision == 0 and manifest.etcd_revision <= 1):
        raise IntegrityError(f"snapshot {manifest.id}: db revision {db_revision} is below the recorded "
                             f"revision {manifest.etcd_revision}")


def verify_snapshot(store: Store, manifest: SnapshotManifest, keyring: Keyring | None, *,
                    test_restore: bool = False, work_dir: str | None = None, progress: bool | None = None,
                    tool: EtcdTool | None = None, allow_plaintext: bool = False) -> VerifyResult:
    started = time.monotonic()
    if not test_restore:
        db = scan_object(store, manifest, keyring, progress, allow_plaintext=allow_plaintext)
        check_revision(manifest, db.revision)
        return VerifyResult(manifest.id, "status", db.revision, db.total_keys, db.total_size, "bbolt page walk",
                            round(time.monotonic() - started, 3))
    tool = tool or EtcdTool()
    scratch = Path(tempfile.mkdtemp(prefix="etcdbackup-verify-", dir=work_dir))
    try:
        pages = BboltScanner()
        db_file = fetch_to_file(store, manifest, keyring, scratch / "snapshot.db", progress, durable=False,
                                allow_plaintext=allow_plaintext, pages=pages)
        try:
            db = pages.finish()
        except IntegrityError as e:
            raise IntegrityError(f"snapshot {manifest.id}: {e}") from None
        check_revision(manifest, db.revision)
        st = tool.snapshot_status(str(db_file))
        check_revision(manifest, st.revision)
        if (st.revision, st.total_key) != (db.revision, db.total_keys):
            raise IntegrityError(f"snapshot {manifest.id}: {tool.kind} snapshot status (revision {st.revision}, "
                                 f"{st.total_key} keys) disagrees with the page walk (revision {db.revision}, "
                                 f"{db.total_keys} keys)")
        data_dir = scratch / "restore.etcd"
        tool.restore(RestoreArgs(str(db_file), str(data_dir), "verify", "verify=http://127.0.0.1:2380",
                                 "etcdbackup-verify", "http://127.0.0.1:2380"))
        if not (data_dir / "member" / "snap" / "db").is_file():
            raise IntegrityError(f"snapshot {manifest.id}: test restore produced no member db")
        return VerifyResult(manifest.id, "restore", st.revision, st.total_key, st.total_size,
                            f"{tool.kind} {tool.version}", round(time.monotonic() - started, 3))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
