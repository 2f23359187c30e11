"""`status`: the health of each etcd member (and its server certificate) and of the backups (and the last restore
drill); exit 3 when either is not fine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import Degraded
from . import render
from .common import EtcdPodsOptions, KubeOptions, OutputFormat, OutputOpt, StoreOptions, grouped, seconds

if TYPE_CHECKING:
    from ..usecases.status import BackupSummary, CertStatus, DrillSummary

COLUMNS = [("member", "MEMBER"), ("node", "NODE"), ("leader", "LEADER"), ("db_size", "DB SIZE"),
           ("db_size_in_use", "IN USE"), ("raft_index", "RAFT INDEX"), ("healthy", "HEALTH"), ("version", "VERSION")]


def register(app: typer.Typer) -> None:
    app.command("status")(status_cmd)


@grouped
def status_cmd(store: StoreOptions, kube: KubeOptions, etcd: EtcdPodsOptions,
               max_age: Annotated[str | None, typer.Option(
                   "--max-age", help="backups older than this are stale (default: the installed exporter's)")]
               = None,
               drill_max_age: Annotated[str | None, typer.Option(
                   "--drill-max-age", help="restore drills older than this are stale (default: the installed "
                   "drill's, else 62d)")] = None, output: OutputOpt = OutputFormat.table) -> None:
    """Health of each etcd member (and when its server certificate ends) and of the backups (and the last restore
    drill); exit 3 if a member is unhealthy, the backups are stale or unknown, or the last restore drill failed
    or is stale; 1 if the cluster cannot be asked."""
    from ..output import render as table
    from ..usecases.status import StatusOptions, run_status

    report = run_status(StatusOptions(store.spec(kube), etcd.etcd_namespace, etcd.etcd_selector,
                                      seconds(max_age, "--max-age"), seconds(drill_max_age, "--drill-max-age")))
    render.warn(f"note: {n}" for n in report.notes)
    if output == "table":
        render.out(table([m.as_dict() for m in report.members], "table", COLUMNS, _cell))
        _certificates(report.certificates)
        render.out("")
        _summary(report.backups)
        render.warn(report.warnings)
    else:
        render.document(report.as_dict(), output)
    if report.problems:
        raise Degraded("; ".join(report.problems))


def _cell(key: str, value: Any) -> str:
    if key in ("db_size", "db_size_in_use"):
        return render.cell(key, value)
    if key == "leader":
        return "?" if value is None else ("yes" if value else "no")
    if key == "healthy":
        return "healthy" if value else "UNHEALTHY"
    return ("" if key == "version" else "?") if value is None else str(value)


def _summary(b: BackupSummary) -> None:
    from ..durations import format_duration

    if b.error:
        render.out(f"Backups: unknown: {b.error}")
        return
    render.out(f"Backups: {b.store} ({b.source}, {b.snapshots} snapshots)")
    if b.last_backup is not None:
        render.out(f"  last backup:  {b.last_backup.id}, {format_duration(b.last_backup_age_seconds or 0)} ago "
                   f"(revision {b.last_backup.etcd_revision})")
    render.out(f"  freshness:    {b.freshness}")
    if b.last_failure_time:
        age = f"{format_duration(b.last_failure_age_seconds)} ago" if b.last_failure_age_seconds is not None \
            else b.last_failure_time
        render.out(f"  last failure: {age}: {b.last_failure_message} ({b.failures_total} failed runs in total)")
    else:
        render.out("  last failure: none recorded")
    if b.drill is not None:
        render.out(f"  last drill:   {_drill(b.drill)}")


def _drill(d: DrillSummary) -> str:
    from ..durations import format_duration

    r = d.record
    if not r.last_time:
        return "none recorded"
    ago = f"{format_duration(d.age_seconds)} ago" if d.age_seconds is not None else r.last_time
    if not r.last_ok:
        line = f"FAILED {ago} ({r.last_time}): {r.last_message}"
        return line + (f"; last passed {r.last_success_time}" if r.last_success_time else "; none passed yet")
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in r.stages_seconds.items())
    return (f"passed {ago} ({r.last_time}) on {r.last_snapshot_id}, RTO estimate {r.estimated_restore_seconds:.1f}s "
            f"({stages})" + (f"; STALE (limit {format_duration(d.max_age_seconds)})" if d.problem else ""))


def _certificates(certs: list[CertStatus]) -> None:
    shown = [c for c in certs if c.not_after is not None]
    if not shown:
        return
    render.out("")
    render.out("Server certificates (as presented at each member's advertised client URL):")
    for c in shown:
        assert c.not_after is not None
        render.out(f"  {c.member:<12} {c.endpoint}  expires {c.not_after:%Y-%m-%d %H:%M} UTC "
                   f"(in {c.days_left or 0:.0f} days)")
