"""Adopt snapshot files made elsewhere (`etcdctl snapshot save`, `.db.gz`, `.db.gz.gpg`, k3s/RKE2
`etcd-snapshot-<node>-<unix time>[.zip]`): open each as the raw etcd snapshot it holds, check it, seal it like any
backup (zstd + AES-256-GCM under the keyring's newest key), verify it as stored, then write its HMAC'd manifest.
From then on `list`, `verify`, retention and `restore` treat it like any other snapshot.

Checks, as a backup's: etcd's appended sha256 (a file without one is refused unless allow_no_hash: nothing would
prove it whole, and etcdutl itself refuses it unless told to skip the check; when allowed, the sha256 of the db as
read is appended, so that restore works unchanged), then `verify_snapshot` (read back, every hash, `snapshot
status` on a scratch copy in an `etcdbackup-verify-*` dir) before the manifest counts. A file that fails stores
nothing: its object is aborted or deleted. A file whose snapshot is already in the store is skipped.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .. import __version__
from ..catalog import list_snapshots, save_manifest
from ..errors import EtcdBackupError, IntegrityError, TruncatedError, UsageError
from ..format import CIPHER_AES256GCM, CIPHER_NAMES, Binding
from ..import_detect import etcd_hash_present, original_time
from ..import_source import ForeignSnapshot
from ..keys import Keyring
from ..leftovers import VERIFY_SCRATCH_PREFIX
from ..manifest import SnapshotManifest, format_time, new_snapshot_id, object_name
from ..progress import transfer_progress
from ..sealing import Sealed, SealingStream
from ..snapshot_hash import SnapshotHashCheck
from ..stores import ObjectWriter, Store
from ..verify import verify_snapshot

HASH_OK = "ok"
HASH_APPENDED = "none in the file; appended at import"
_CLUSTER_ID = re.compile(r"^[0-9a-f]{0,32}$")


@dataclass
class ImportOptions:
    files: list[str]
    store: Store
    keyring: Keyring  # the newest key seals
    passphrase_file: str | None = None  # for gpg files; gpg reads it, the passphrase never reaches argv
    cluster_id: str = ""  # hex, as `etcdctl endpoint status` shows it; "" = unknown
    allow_no_hash: bool = False  # accept a db without etcd's appended sha256 (a copied member db)
    work_dir: str | None = None  # scratch: gpg's home, the verify copy (about the db's size)
    id_prefix: str = "etcd"
    compression_level: int = 1  # as a backup's
    progress: bool | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


@dataclass
class ImportedFile:
    file: str
    kinds: list[str] = field(default_factory=list)  # layers, outermost first: ["gpg", "gzip", "db"]
    manifest: SnapshotManifest | None = None  # stored and verified
    duplicate_of: str = ""  # the snapshot already in the store with the same data: nothing stored
    error: str = ""  # why nothing was stored


@dataclass
class ImportReport:
    files: list[ImportedFile] = field(default_factory=list)  # in the order given

    @property
    def ok(self) -> bool:
        return not any(f.error for f in self.files)


def import_snapshots(opts: ImportOptions) -> ImportReport:
    """Import each file on its own: one that fails is reported (`error`) and stores nothing; the others go on.

    Raises UsageError for a bad cluster id and StoreError when the store cannot be written or listed."""
    if not _CLUSTER_ID.match(opts.cluster_id):
        raise UsageError(f"--cluster-id must be up to 32 lowercase hex digits, got {opts.cluster_id!r}")
    opts.store.check_writable()
    stored = {m.raw_sha256: m.id for m in list_snapshots(opts.store, opts.keyring).trusted}
    report = ImportReport()
    for path in opts.files:
        item = ImportedFile(path)
        try:
            _import_one(opts, Path(path), item, stored)
        except EtcdBackupError as e:
            item.error = str(e)
        report.files.append(item)
    return report


@dataclass
class _Sealed:
    sizes: Sealed
    etcd_sha256: str  # HASH_OK or HASH_APPENDED


def _import_one(opts: ImportOptions, path: Path, item: ImportedFile, stored: dict[str, str]) -> None:
    """Store, verify and record one file (fills `item`); `stored` maps raw sha256 -> id of what the store holds."""
    started = time.monotonic()
    try:
        mtime = path.stat().st_mtime
    except OSError as e:
        raise EtcdBackupError(f"cannot read {path}: {e.strerror}") from None
    created, time_from = original_time(path.name, mtime, opts.now())
    snapshot_id = new_snapshot_id(created, opts.id_prefix)
    binding = Binding(snapshot_id, format_time(created), opts.cluster_id)
    scratch = Path(tempfile.mkdtemp(prefix=VERIFY_SCRATCH_PREFIX, dir=opts.work_dir))  # gpg's home
    try:
        with ForeignSnapshot(path, opts.passphrase_file, scratch / "gnupg") as source:
            item.kinds = source.kinds
            writer = opts.store.writer(object_name(snapshot_id))
            try:
                sealed = _seal(source, writer, opts, binding)
                item.duplicate_of = stored.get(sealed.sizes.raw_sha256, "")
                if item.duplicate_of:
                    writer.abort()
                    return
                writer.commit()
            except BaseException:
                writer.abort()
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    manifest = _manifest(opts, binding, path.name, sealed)
    try:
        result = verify_snapshot(opts.store, manifest, opts.keyring, work_dir=opts.work_dir, progress=opts.progress)
    except BaseException:
        opts.store.delete(object_name(snapshot_id))  # our own uncommitted object, never listed
        raise
    manifest.etcd_revision = result.revision
    manifest.key_count = manifest.db_total_keys = result.total_keys  # no etcd to count live keys: the db's
    manifest.verified = True
    manifest.verification = result.as_dict() | {
        "level": "imported", "source": path.name, "source_kind": "+".join(source.kinds),
        "original_time": binding.created_at, "original_time_from": time_from, "etcd_sha256": sealed.etcd_sha256}
    manifest.duration_seconds = round(time.monotonic() - started, 3)
    save_manifest(opts.store, manifest, opts.keyring)
    stored[manifest.raw_sha256] = manifest.id
    item.manifest = manifest


def _seal(source: ForeignSnapshot, writer: ObjectWriter, opts: ImportOptions, binding: Binding) -> _Sealed:
    """Compress and seal the raw snapshot into `writer` (not committed), checking etcd's appended sha256."""
    stream = SealingStream(writer, opts.keyring.primary, binding, level=opts.compression_level)
    with transfer_progress(f"import {source.path.name}", None, opts.progress) as advance:
        for raw in source.chunks():
            stream.add(raw)
            advance(len(raw))
    etcd_sha256 = _settle_hash(stream.check, opts.allow_no_hash, stream.add)
    return _Sealed(stream.finish(), etcd_sha256)


def _settle_hash(check: SnapshotHashCheck, allow_no_hash: bool, add: Callable[[bytes], None]) -> str:
    """Check etcd's appended sha256; for a db without one, refuse it or (allowed) append the db's sha256 via
    `add`. Returns what the manifest records about it."""
    present = etcd_hash_present(check.size)
    if present is None:
        raise TruncatedError(f"its {check.size} bytes are neither whole db pages nor pages plus etcd's 32-byte "
                             "sha256: the file is truncated")
    if present:
        check.check("the snapshot")
        return HASH_OK
    if not allow_no_hash:
        raise IntegrityError("it has no etcd sha256 appended (a copied db file, not `etcdctl snapshot save`), so "
                             "nothing proves it is whole; pass --allow-no-hash to import it anyway")
    add(bytes.fromhex(check.raw_sha256))  # sha256 of the whole db: now it ends as etcd's snapshots do
    return HASH_APPENDED


def _manifest(opts: ImportOptions, binding: Binding, name: str, sealed: _Sealed) -> SnapshotManifest:
    """The manifest before verification: what the file cannot tell (etcd version, member) is left unknown."""
    return SnapshotManifest(
        id=binding.snapshot_id, created_at=binding.created_at, etcd_revision=0, key_count=0,
        etcd_version="unknown", cluster_id=opts.cluster_id, member_id="", member_endpoint=f"imported:{name}",
        raw_size=sealed.sizes.raw_size, stored_size=sealed.sizes.stored_size, raw_sha256=sealed.sizes.raw_sha256,
        stored_sha256=sealed.sizes.stored_sha256, codec="zstd", cipher=CIPHER_NAMES[CIPHER_AES256GCM],
        key_id=opts.keyring.primary_id.hex(), duration_seconds=0.0, tool_version=__version__)
