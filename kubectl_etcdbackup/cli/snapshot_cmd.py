"""`snapshot download` (alias `get`): a verified, decrypted etcd snapshot file."""

from __future__ import annotations

from typing import Annotated

import typer

from ..output import human_bytes
from . import render
from .common import AllowPlaintextOpt, KeyOptions, KubeOptions, ProgressOpt, SnapshotArg, StoreOptions, grouped


def register(app: typer.Typer) -> None:
    app.command("download")(download_cmd)
    app.command("get", hidden=True, help="old name of `snapshot download`")(download_cmd)


@grouped
def download_cmd(snapshot: SnapshotArg,
                 file: Annotated[str, typer.Option("--file", "-f", help="where to write the etcd snapshot .db")],
                 store: StoreOptions, key: KeyOptions, kube: KubeOptions, progress: ProgressOpt = None,
                 allow_plaintext: AllowPlaintextOpt = False) -> None:
    """Write a verified, decrypted etcd snapshot .db (mode 0600), as `etcdctl snapshot save` would have.
    Default store: the cluster's, when it is S3."""
    from ..usecases.download import DownloadOptions, run_download

    report = run_download(DownloadOptions(store.spec(kube), snapshot, file, key.keyring(), allow_plaintext,
                                          progress))
    render.warn(report.notes)
    m = report.manifest
    render.out(f"{m.id} -> {report.path} ({human_bytes(m.raw_size)}, revision {m.etcd_revision}, "
               f"sha256 {m.raw_sha256})")
