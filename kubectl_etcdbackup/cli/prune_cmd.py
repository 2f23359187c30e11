"""`prune`: apply the retention policy (and clean what killed runs left)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from . import render
from .common import (
    AllowPlaintextOpt,
    KeyOptions,
    KubeOptions,
    OutputFormat,
    OutputOpt,
    RetentionOptions,
    StoreOptions,
    grouped,
)

COLUMNS = [("id", "ID"), ("kind", "KIND"), ("action", "ACTION"), ("reasons", "REASONS")]


def register(app: typer.Typer) -> None:
    app.command("prune")(prune_cmd)


@grouped
def prune_cmd(store: StoreOptions, retention: RetentionOptions, key: KeyOptions, kube: KubeOptions,
              dry_run: Annotated[bool, typer.Option("--dry-run", help="only show what would go, and why")] = False,
              output: OutputOpt = OutputFormat.table, allow_plaintext: AllowPlaintextOpt = False) -> None:
    """Delete the snapshots no --keep-* rule keeps (never the newest verified one, never one that cannot be
    authenticated), objects without a manifest over a day old, and what killed runs left behind. Default store:
    the cluster's (a volume in the cluster is pruned by a Job with the backup's own access)."""
    from ..usecases.prune import run_prune_source

    policy = retention.policy()
    if policy.empty:
        raise UsageError("give at least one of --keep-last, --keep-within, --keep-hourly, --keep-daily, "
                         "--keep-weekly, --keep-monthly")
    report = run_prune_source(store.spec(kube), key.keyring(), policy, dry_run=dry_run,
                              allow_plaintext=allow_plaintext)
    render.warn(report.problems)
    render.warn(f"note: {n}" for n in report.notes)
    render.rows([{"id": r.id, "kind": r.kind, "action": r.action, "reasons": r.reasons} for r in report.rows],
                output, COLUMNS)
