"""`delete`: remove snapshots by id (asks first)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..errors import UsageError
from . import render
from .common import KeyOptions, KubeOptions, StoreOptions, grouped


def register(app: typer.Typer) -> None:
    app.command("delete")(delete_cmd)


@grouped
def delete_cmd(ids: Annotated[list[str], typer.Argument(help="snapshot ids (not 'latest')", metavar="ID...")],
               store: StoreOptions, key: KeyOptions, kube: KubeOptions,
               yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
               force: Annotated[bool, typer.Option(help="also the newest trusted, verified snapshot")] = False,
               ) -> None:
    """Delete snapshots by id, also untrusted ones (planted or broken manifests). Shows what goes and asks first
    unless --yes; never the last good snapshot unless --force. Default store: the cluster's."""
    from ..usecases.delete import DeleteOptions, plan_delete, run_delete

    if "latest" in ids:
        raise UsageError("name snapshots by id: 'latest' moves")
    opts = DeleteOptions(store.spec(kube), tuple(ids), key.keyring(), force)
    if not yes:
        plan = plan_delete(opts)
        for t in plan.targets:
            render.note(f"{t.id}  {t.created or '-'}  {t.trust}")
        if not sys.stdin.isatty():
            raise UsageError("not asking on a non-interactive input: pass --yes to delete")
        typer.confirm(f"delete {len(plan.targets)} snapshot(s) from {plan.url}?", abort=True, err=True)
    report = run_delete(opts)
    render.warn(f"note: {n}" for n in report.notes)
    for t in report.targets:
        render.out(f"deleted {t.id}")
