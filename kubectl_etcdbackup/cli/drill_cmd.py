"""`agent drill`: restore the newest trusted snapshot into a throwaway etcd and check it (a restore drill)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..errors import EtcdBackupError
from . import render
from .common import AgentStoreOptions, KeyOptions, grouped, seconds


def register(agent: typer.Typer) -> None:
    agent.command("drill")(drill_cmd)


@grouped
def drill_cmd(
    store: AgentStoreOptions, key: KeyOptions,
    snapshot: Annotated[str, typer.Option(envvar="ETCDBACKUP_DRILL_SNAPSHOT",
                                          help="snapshot id, or latest (the newest trusted, verified one)")]
    = "latest",
    work_dir: Annotated[str | None, typer.Option(envvar="ETCDBACKUP_WORK_DIR",
                                                 help="scratch space: about twice the db size")] = None,
    port: Annotated[int | None, typer.Option(envvar="ETCDBACKUP_DRILL_PORT", min=1024, max=65534,
                                             help="client port of the throwaway etcd on 127.0.0.1 (the peer port "
                                                  "is the next one; default: a free pair below 32768)")] = None,
    etcd: Annotated[str | None, typer.Option("--etcd", envvar="ETCDBACKUP_ETCD", help="the etcd binary")] = None,
    start_timeout: Annotated[str, typer.Option(envvar="ETCDBACKUP_DRILL_START_TIMEOUT",
                                               help="the restored etcd must be healthy within this")] = "2m",
    metrics_textfile: Annotated[str | None, typer.Option(envvar="ETCDBACKUP_DRILL_METRICS_TEXTFILE",
                                                         help="its own file (not the backup's)")] = None,
    pushgateway: Annotated[str | None, typer.Option(envvar="ETCDBACKUP_PUSHGATEWAY")] = None,
) -> None:
    """Restore drill: fetch the newest trusted snapshot, restore it, start a throwaway etcd on it (127.0.0.1) and
    check revision, key count and the Kubernetes core objects against the manifest; time each stage (an RTO
    estimate). Records the outcome in the store (etcdbackup.drill) and the metrics. Prints one JSON line; exits 0
    only when the drill passed."""
    from ..usecases.drill import DrillOptions, run_drill

    report = run_drill(DrillOptions(
        store.open(), key.keyring(), snapshot, work_dir, (port, port + 1) if port else None, etcd,
        start_timeout=seconds(start_timeout, "--start-timeout") or 120.0, metrics_textfile=metrics_textfile,
        pushgateway=pushgateway))
    render.warn(report.warnings)
    render.out(json.dumps({"ok": report.ok, "id": report.snapshot_id, "error": report.error or None,
                           "stages_seconds": report.stages, "estimated_restore_seconds":
                           report.estimated_restore_seconds, "revision": report.revision, "keys": report.key_count,
                           "prefixes": report.prefix_counts, "checks": report.checks}))
    if not report.ok:
        raise EtcdBackupError(f"restore drill failed: {report.error}")
