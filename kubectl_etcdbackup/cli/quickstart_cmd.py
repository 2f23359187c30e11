"""`quickstart`: the embedded default, end to end on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

from ..output import human_bytes
from . import render


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart_cmd)


def quickstart_cmd(
    store_dir: Annotated[str, typer.Option(help="local directory for the backups")] = "./etcd-backups",
    keys: Annotated[int, typer.Option(help="demo keys to write")] = 1000,
) -> None:
    """Start a throwaway local etcd, back it up (zstd + AES-256-GCM) to a local directory, verify it by a test
    restore, and list the backups."""
    from ..quickstart import run_quickstart

    r = run_quickstart(store_dir, keys)
    m = r.manifest
    render.out(f"backed up local etcd {r.etcd_url}: snapshot {m.id}, revision {m.etcd_revision}, {m.key_count} keys, "
               f"{human_bytes(m.raw_size)} -> {human_bytes(m.stored_size)} (zstd + AES-256-GCM, key {r.key_file}), "
               "verified by a test restore")
    render.snapshots(r.snapshots, "table")
