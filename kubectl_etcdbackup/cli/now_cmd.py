"""`now`: run a backup now (a Job from the installed CronJob), follow it, print the new snapshot."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from . import render
from .common import KubeOptions, OutputFormat, OutputOpt, grouped, seconds

COLUMNS = [("id", "ID"), ("revision", "REVISION"), ("keys", "KEYS"), ("raw_size", "SIZE"),
           ("stored_size", "STORED"), ("verified", "VERIFIED"), ("member", "MEMBER")]


def register(app: typer.Typer) -> None:
    app.command("now")(now_cmd)


def _stderr_sink(chunk: bytes) -> None:
    sys.stderr.buffer.write(chunk)
    sys.stderr.buffer.flush()


@grouped
def now_cmd(kube: KubeOptions,
            wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow the Job to its end")] = True,
            timeout: Annotated[str, typer.Option("--timeout", help="give up waiting after this long")] = "10m",
            logs: Annotated[bool, typer.Option("--logs/--no-logs", help="stream the backup's log to stderr")] = True,
            output: OutputOpt = OutputFormat.table) -> None:
    """Run a backup now: a Job from the installed CronJob; prints the new snapshot's id, size and revision."""
    from ..usecases.now import BackupJobFailed, NowOptions, NowStarted, run_now
    from ..usecases.source import KubeTarget

    limit = seconds(timeout, "--timeout") or 600.0

    def created(s: NowStarted) -> None:
        render.note(str(s.target))
        render.note(f"job {s.namespace}/{s.job} created")

    opts = NowOptions(KubeTarget(kube.kubeconfig, kube.context, kube.namespace, kube.cronjob), wait, limit)
    try:
        report = run_now(opts, created, _stderr_sink if logs else None)
    except BackupJobFailed as e:
        if e.log_tail:
            render.note("\n".join([f"--- last log lines of pod {e.pod}:", *e.log_tail]))
        raise
    if report.result is None:
        render.out(report.job)
        return
    render.rows([report.result], output, COLUMNS, doc=None if output == "table" else report.result)
