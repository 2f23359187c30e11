"""`now` and `drill`: run a backup or a restore drill now (a Job from the installed CronJob), follow it, print the
result."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import render
from .common import KubeOptions, OutputFormat, OutputOpt, grouped, seconds

if TYPE_CHECKING:
    from ..usecases.now import NowReport

COLUMNS = [("id", "ID"), ("revision", "REVISION"), ("keys", "KEYS"), ("raw_size", "SIZE"),
           ("stored_size", "STORED"), ("verified", "VERIFIED"), ("member", "MEMBER")]
DRILL_COLUMNS = [("id", "SNAPSHOT"), ("result", "RESULT"), ("rto", "RTO ESTIMATE"), ("revision", "REVISION"),
                 ("keys", "KEYS")]
WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="follow the Job to its end")]
LogsOpt = Annotated[bool, typer.Option("--logs/--no-logs", help="stream the Job's log to stderr")]


def register(app: typer.Typer) -> None:
    app.command("now")(now_cmd)
    app.command("drill")(drill_cmd)


def _stderr_sink(chunk: bytes) -> None:
    sys.stderr.buffer.write(chunk)
    sys.stderr.buffer.flush()


def _run(kube: KubeOptions, wait: bool, timeout: str, default: float, logs: bool, drill: bool) -> NowReport:
    """Create the Job, say where, follow it; a failed Job's log tail goes to stderr before its error."""
    from ..usecases.now import JobFailed, NowOptions, NowStarted, run_now
    from ..usecases.source import KubeTarget

    def created(s: NowStarted) -> None:
        render.note(str(s.target))
        render.note(f"job {s.namespace}/{s.job} created")

    opts = NowOptions(KubeTarget(kube.kubeconfig, kube.context, kube.namespace, kube.cronjob), wait,
                      seconds(timeout, "--timeout") or default, drill)
    try:
        return run_now(opts, created, _stderr_sink if logs else None)
    except JobFailed as e:
        if e.log_tail:
            render.note("\n".join([f"--- last log lines of pod {e.pod}:", *e.log_tail]))
        raise


@grouped
def now_cmd(kube: KubeOptions, wait: WaitOpt = True,
            timeout: Annotated[str, typer.Option("--timeout", help="give up waiting after this long")] = "10m",
            logs: LogsOpt = True, output: OutputOpt = OutputFormat.table) -> None:
    """Run a backup now: a Job from the installed CronJob; prints the new snapshot's id, size and revision."""
    report = _run(kube, wait, timeout, 600.0, logs, drill=False)
    if report.result is None:
        render.out(report.job)
        return
    render.rows([report.result], output, COLUMNS, doc=None if output == "table" else report.result)


@grouped
def drill_cmd(kube: KubeOptions, wait: WaitOpt = True,
              timeout: Annotated[str, typer.Option("--timeout", help="give up waiting after this long")] = "30m",
              logs: LogsOpt = True, output: OutputOpt = OutputFormat.table) -> None:
    """Run a restore drill now: a Job from the installed drill CronJob restores the newest trusted snapshot into a
    throwaway etcd and checks it; prints the snapshot, the result and the RTO estimate (exit 1 when it failed)."""
    report = _run(kube, wait, timeout, 1800.0, logs, drill=True)
    if report.result is None:
        render.out(report.job)
        return
    render.rows([_drill_row(report.result)], output, DRILL_COLUMNS,
                doc=None if output == "table" else report.result)


def _drill_row(result: dict[str, Any]) -> dict[str, Any]:
    rto = result.get("estimated_restore_seconds")
    return {**result, "result": "passed" if result.get("ok") else "FAILED",
            "rto": f"{rto:.1f}s" if isinstance(rto, int | float) else "?"}
