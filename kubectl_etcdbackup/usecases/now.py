"""`now` and `drill`: run a backup (or a restore drill) now, as a Job made from the installed CronJob (`kubectl create
job --from=cronjob/...`; the drill's is `<backup cronjob>-drill`), follow it to its end and read the agent's result
line from its pod's log."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..errors import EtcdBackupError
from ..k8s.jobs import backup_result, create_unique, manual_job
from ..textutil import last_line
from .cluster import Target, connected, target_of
from .source import KubeTarget

LOG_TAIL_LINES = 20


class JobFailed(EtcdBackupError):
    """The manual backup or drill Job failed. `log_tail`: the last lines of its pod's log when they were not
    streamed."""

    def __init__(self, message: str, pod: str | None = None, log_tail: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.pod, self.log_tail = pod, list(log_tail)


@dataclass(frozen=True)
class NowOptions:
    kube: KubeTarget  # the cluster, the namespace and (None: the only one installed there) the CronJob
    wait: bool = True  # follow the Job to its end
    timeout: float = 600.0  # seconds to wait (the Job keeps running after)
    drill: bool = False  # run the restore drill CronJob instead of the backup


@dataclass(frozen=True)
class NowStarted:
    target: Target
    namespace: str
    job: str


@dataclass
class NowReport:
    target: Target
    namespace: str
    job: str
    result: dict[str, Any] | None = None  # the agent's result (id, revision, keys, sizes...); None: not waited


def run_now(opts: NowOptions, on_created: Callable[[NowStarted], None] = lambda _s: None,
            log_sink: Callable[[bytes], None] | None = None) -> NowReport:
    """Create the Job (`on_created` is told which cluster and Job), then, with `wait`, follow it; its pods' log
    goes to `log_sink` as it comes. Raises JobFailed, or JobTimeout when it does not finish in time."""
    from ..k8s.api import AlreadyExists
    from ..k8s.cluster_store import find_cronjob, find_drill_cronjob
    from ..k8s.follow import follow_job

    ns, what = opts.kube.namespace, "drill" if opts.drill else "backup"
    find = find_drill_cronjob if opts.drill else find_cronjob
    with connected(opts.kube.kubeconfig, opts.kube.context) as kube:
        cj, now = find(kube, ns, opts.kube.cronjob), datetime.now(UTC)
        job = create_unique(lambda j: kube.create_job(ns, j), lambda u: manual_job(cj, now, u), AlreadyExists)
        report = NowReport(target_of(kube), ns, job["metadata"]["name"])
        on_created(NowStarted(report.target, ns, report.job))
        if not opts.wait:
            return report
        end = follow_job(kube, ns, report.job, time.monotonic() + opts.timeout, log_sink)
        pod = end.pods[-1]["metadata"]["name"] if end.pods else None
        log = kube.pod_log(ns, pod) if pod else ""
    if not end.succeeded:
        tail = log.rstrip("\n").splitlines()[-LOG_TAIL_LINES:] if log_sink is None else []
        raise JobFailed(f"{what} job {ns}/{report.job} failed ({end.detail or 'no reason given'})"
                              + (f": {_error_line(log)}" if log.strip() else ""), pod, tail)
    report.result = backup_result(log)
    if report.result is None:
        raise JobFailed(f"{what} job {ns}/{report.job} succeeded but pod {pod} printed no result line")
    report.result["job"] = report.job
    return report


def _error_line(log: str) -> str:
    """The agent's error (its last `error:` line, else its last line), without the `error:`."""
    line = last_line(log, prefer="error")[:400]
    return line[len("error:"):].strip() if line.lower().startswith("error:") else line
