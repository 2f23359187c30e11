"""`verify`: re-read a stored snapshot and check everything (here, or next to the cluster's volume)."""

from __future__ import annotations

from typing import Annotated

import typer

from . import render
from .common import (
    AllowPlaintextOpt,
    KeyOptions,
    KubeOptions,
    OutputFormat,
    OutputOpt,
    ProgressOpt,
    SnapshotArg,
    StoreOptions,
    grouped,
)

CHAIN_COLUMNS = [("segment", "SEGMENT"), ("revisions", "REVISIONS"), ("events", "EVENTS"), ("status", "STATUS")]
COLUMNS = [("id", "ID"), ("status", "STATUS"), ("level", "LEVEL"), ("revision", "REVISION"),
           ("total_keys", "DB KEYS"), ("tool", "TOOL")]


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_cmd)


@grouped
def verify_cmd(snapshot: SnapshotArg, store: StoreOptions, key: KeyOptions, kube: KubeOptions,
               test_restore: Annotated[bool, typer.Option(help="also restore into a scratch dir")] = False,
               output: OutputOpt = OutputFormat.table, progress: ProgressOpt = None,
               allow_plaintext: AllowPlaintextOpt = False,
               chain: Annotated[bool, typer.Option("--chain", help="the argument names a delta chain (its base "
                                                   "snapshot's id, or latest): check every segment of it "
                                                   "(authenticated, contiguous, hashes) without replaying")] = False,
               ) -> None:
    """Re-read a snapshot: authenticate, check every hash, decrypt, decompress, walk the db's bbolt pages.
    Default store: the cluster's (a volume in the cluster is verified next to it, with the cluster's key)."""
    from ..usecases.verify import VerifyOptions, raise_for_chain, run_verify, run_verify_chain

    opts = VerifyOptions(store.spec(kube), snapshot, key.keyring(), test_restore, allow_plaintext, progress)
    if chain:
        chained = run_verify_chain(opts)
        render.warn(chained.notes)
        render.rows(chained.rows, output, CHAIN_COLUMNS)
        raise_for_chain(chained)
        return
    report = run_verify(opts)
    render.warn(report.notes)
    render.rows([report.result], output, COLUMNS)
