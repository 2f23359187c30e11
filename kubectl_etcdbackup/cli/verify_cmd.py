"""`verify`: re-read a stored snapshot and check everything (here, or next to the cluster's volume)."""

from __future__ import annotations

from typing import Annotated

import typer

from . import render
from .common import (
    AllowPlaintextOpt,
    KeyOptions,
    KubeOptions,
    OutputOpt,
    ProgressOpt,
    SnapshotArg,
    StoreOptions,
    grouped,
)

COLUMNS = [("id", "ID"), ("status", "STATUS"), ("level", "LEVEL"), ("revision", "REVISION"),
           ("total_keys", "DB KEYS"), ("tool", "TOOL")]


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_cmd)


@grouped
def verify_cmd(snapshot: SnapshotArg, store: StoreOptions, key: KeyOptions, kube: KubeOptions,
               test_restore: Annotated[bool, typer.Option(help="also restore into a scratch dir")] = False,
               output: OutputOpt = "table", progress: ProgressOpt = None,
               allow_plaintext: AllowPlaintextOpt = False) -> None:
    """Re-read a snapshot: authenticate, check every hash, decrypt, decompress, run `snapshot status`.
    Default store: the cluster's (a volume in the cluster is verified next to it, with the cluster's key)."""
    from ..usecases.verify import VerifyOptions, run_verify

    report = run_verify(VerifyOptions(store.spec(kube), snapshot, key.keyring(), test_restore, allow_plaintext,
                                      progress))
    render.warn(report.notes)
    render.rows([report.result], output, COLUMNS)
