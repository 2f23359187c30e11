"""`list` and `describe`: the snapshots of a store (default: the cluster's) and the delta chains of continuous
backup, and one snapshot or one chain in full.

`list -o json|yaml` stays the array of snapshots that scripts and `status` parse; the chains are printed by
`list --chains` (a table, or an array of chains), and as a second section of the plain `list` table."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from . import render
from .common import (
    AllowPlaintextOpt,
    KeyOptions,
    KubeOptions,
    OutputFormat,
    OutputOpt,
    SnapshotArg,
    StoreOptions,
    grouped,
)

CHAIN_COLUMNS = [("chain", "CHAIN"), ("from_time", "FROM"), ("to_time", "TO"), ("revisions", "REVISIONS"),
                 ("segments", "SEGMENTS"), ("stored_size", "STORED"), ("state", "STATE")]
SEGMENT_COLUMNS = [("segment", "SEGMENT"), ("revisions", "REVISIONS"), ("events", "EVENTS"),
                   ("last_event_time", "LAST EVENT"), ("stored_size", "STORED")]
ChainsOpt = Annotated[bool, typer.Option("--chains", help="list the delta chains of continuous backup (each with "
                                         "the window it can restore) instead of the snapshots")]
ChainFlag = Annotated[bool, typer.Option("--chain", help="the argument names a delta chain (its base snapshot's "
                                         "id, or latest: the chain being written)")]


def register(app: typer.Typer) -> None:
    app.command("list")(list_cmd)
    app.command("describe")(describe_cmd)


def _chain_rows(chains: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c | {"revisions": f"{c['from_revision']}..{c['to_revision']}" if c.get("start") else ""}
            for c in chains]


@grouped
def list_cmd(store: StoreOptions, key: KeyOptions, kube: KubeOptions, output: OutputOpt = OutputFormat.table,
             allow_plaintext: AllowPlaintextOpt = False, chains: ChainsOpt = False) -> None:
    """List the snapshots, newest first, each with how far it is trusted (with the key: authenticated or why
    not), then the delta chains (restorable to any time FROM..TO). Default store: the one the cluster's backup
    CronJob writes to."""
    from ..usecases.listing import ListOptions, run_list

    report = run_list(ListOptions(store.spec(kube), key.keyring(), allow_plaintext, chains))
    render.warn(report.problems)
    render.warn(f"note: {n}" for n in report.notes)
    if output == "table":
        render.note(f"store {report.url} ({report.where})")
    if chains:
        if output == "table" and not report.chains:
            render.note("No delta chains.")
        elif report.chains or output != "table":
            render.rows(_chain_rows(report.chains), output, CHAIN_COLUMNS, doc=report.chains)
        return
    render.snapshots(report.snapshots, output)
    if output == "table" and report.chains:
        render.out("\nDelta chains (continuous backup; restore --to-time/--to-revision within FROM..TO):")
        render.rows(_chain_rows(report.chains), output, CHAIN_COLUMNS)


@grouped
def describe_cmd(snapshot: SnapshotArg, store: StoreOptions, key: KeyOptions, kube: KubeOptions,
                 output: OutputOpt = OutputFormat.table, allow_plaintext: AllowPlaintextOpt = False,
                 chain: ChainFlag = False) -> None:
    """Show one snapshot in full: every manifest field, its trust, its verification, its object as stored now.
    With --chain: one delta chain, its window and its segments."""
    from ..usecases.listing import DescribeOptions, run_describe, run_describe_chain

    opts = DescribeOptions(store.spec(kube), snapshot, key.keyring(), allow_plaintext)
    if chain:
        c = run_describe_chain(opts)
        render.warn(c.notes)
        doc = {"store": c.url, "source": c.where, **c.chain}
        if output != "table":
            render.document(doc, output)
            return
        _fields({k: v for k, v in doc.items() if k != "segment_list"})
        render.out("")
        render.rows([s | {"revisions": f"{s['first_revision']}..{s['last_revision']}"} for s in doc["segment_list"]],
                    output, SEGMENT_COLUMNS)
        return
    report = run_describe(opts)
    render.warn(report.notes)
    m = report.manifest
    doc = {"store": report.url, "source": report.where, **m.to_dict(), "trust": m.trust,
           "object_size_now": report.object_size}
    if output != "table":
        render.document(doc, output)
        return
    _fields(doc)


def _fields(doc: dict[str, Any]) -> None:
    width = max(len(k) for k in doc)
    for k, v in doc.items():
        render.out(f"{k + ':':<{width + 1}} {render.cell(k, v) if not isinstance(v, dict) else v}")
