"""`snapshot import FILE...`: adopt snapshot files made elsewhere into a store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import EtcdBackupError, UsageError
from . import render
from .common import KeyOptions, OutputFormat, OutputOpt, ProgressOpt, S3EndpointOpt, S3RegionOpt, StoreOpt, grouped

if TYPE_CHECKING:
    from ..usecases.import_snapshot import ImportedFile

COLUMNS = [("file", "FILE"), ("status", "STATUS"), ("id", "ID"), ("kind", "KIND"), ("created", "CREATED"),
           ("revision", "REVISION"), ("raw_size", "SIZE")]


def register(app: typer.Typer) -> None:
    app.command("import")(import_cmd)


def _row(f: ImportedFile) -> dict[str, Any]:
    m = f.manifest
    status = "imported" if m else f"already stored as {f.duplicate_of}" if f.duplicate_of else "failed"
    return {"file": f.file, "status": status, "id": m.id if m else None, "kind": "+".join(f.kinds),
            "created": m.created_at if m else None, "revision": m.etcd_revision if m else None,
            "raw_size": m.raw_size if m else None, "etcd_sha256": m.verification["etcd_sha256"] if m else None,
            "error": f.error or None}


@grouped
def import_cmd(
    files: Annotated[list[str], typer.Argument(
        metavar="FILE...", show_default=False,
        help="snapshot files: etcdctl's .db, .db.gz, .db.gz.gpg, k3s/RKE2 etcd-snapshot-<node>-<time>[.zip]")],
    store: StoreOpt, key: KeyOptions,
    passphrase_file: Annotated[str | None, typer.Option(
        "--passphrase-file", envvar="ETCDBACKUP_PASSPHRASE_FILE",
        help="file whose first line is the passphrase of gpg-encrypted files (gpg reads it)")] = None,
    cluster_id: Annotated[str, typer.Option(
        "--cluster-id", help="id (hex) of the cluster the files come from, as its backups record it; bound into "
        "each imported snapshot")] = "",
    allow_no_hash: Annotated[bool, typer.Option(
        "--allow-no-hash", help="accept a db without etcd's appended sha256 (a copied member db; nothing proves "
        "it whole); the sha256 of the db as read is appended")] = False,
    work_dir: Annotated[str | None, typer.Option(help="scratch space (about the db's size)")] = None,
    s3_endpoint_url: S3EndpointOpt = None, s3_region: S3RegionOpt = None,
    output: OutputOpt = OutputFormat.table, progress: ProgressOpt = None,
) -> None:
    """Adopt existing snapshot files: check each (etcd's sha256, `snapshot status`), seal it like a backup and
    store it with a manifest marked as imported. A file that fails stores nothing; exit 1 if any failed."""
    from ..stores import open_store
    from ..usecases.import_snapshot import ImportOptions, import_snapshots

    keyring = key.keyring()
    if keyring is None:
        raise UsageError("import seals the snapshots like backups: give the key with --encryption-key-file or "
                         "--key-env")
    st = open_store(store, s3_endpoint_url=s3_endpoint_url, s3_region=s3_region, create=True)
    report = import_snapshots(ImportOptions(files, st, keyring, passphrase_file, cluster_id.lower(), allow_no_hash,
                                            work_dir, progress=progress))
    render.rows([_row(f) for f in report.files], output, COLUMNS)
    failed = [f"import {f.file}: {f.error}" for f in report.files if f.error]
    if failed:  # one `error:` line per failed file, the last one as the command's error (exit 1)
        render.warn(f"error: {line}" for line in failed[:-1])
        raise EtcdBackupError(failed[-1])
