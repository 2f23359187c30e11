"""Follow a Job to its end: watch it (bounded), stream its pods' logs as they run, return the outcome."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .api import Kube, KubeError
from .jobs import job_outcome, pod_waiting_reason

LOG_DRAIN_SECONDS = 10.0  # after the Job ends, how long its log streams may take to finish
WATCH_SLICE_SECONDS = 1  # re-check pods at least this often (a pod can start without the Job changing)


class JobTimeout(KubeError):
    """The Job did not finish in time (it keeps running)."""


@dataclass
class JobEnd:
    job: dict[str, Any]
    succeeded: bool
    detail: str  # reason: message of the final condition
    pods: list[dict[str, Any]] = field(default_factory=list)  # oldest first


class _LogStream(threading.Thread):
    """Copies one pod's followed log to `sink` until the pod ends or stop() is called."""

    def __init__(self, kube: Kube, namespace: str, pod: str, sink: Callable[[bytes], None], read_timeout: float):
        super().__init__(name=f"log-{pod}", daemon=True)
        self.kube, self.namespace, self.pod, self.sink, self.read_timeout = kube, namespace, pod, sink, read_timeout
        self.failed = False  # could not start (pod not ready for logs yet): may be retried
        self._resp: Any = None
        self._stopping = threading.Event()

    def run(self) -> None:
        try:
            self._resp = self.kube.follow_log(self.namespace, self.pod, None, self.read_timeout)
        except Exception:  # noqa: BLE001 - e.g. the container is still being created
            self.failed = not self._stopping.is_set()
            return
        try:
            for chunk in self._resp.stream(None):
                if self._stopping.is_set():  # also covers a stop() that came before _resp was set
                    break
                self.sink(chunk)
        except Exception:  # noqa: BLE001 - stopped or timed out; callers re-read the final log anyway
            pass
        finally:
            if self._resp is not None:
                self._resp.release_conn()

    def stop(self) -> None:
        self._stopping.set()
        resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):
                resp.shutdown()  # unblocks the read in run()


def follow_job(kube: Kube, namespace: str, name: str, deadline: float,
               sink: Callable[[bytes], None] | None = None) -> JobEnd:
    """Wait (until the monotonic `deadline`) for Job `name` to complete or fail, streaming each of its pods'
    logs to `sink` once the pod has started. Raises JobTimeout (with why it waits) at the deadline."""
    streams: dict[str, _LogStream] = {}
    selector = f"job-name={name}"
    try:
        while True:
            job = kube.get_job(namespace, name)
            pods = sorted(kube.list_pods(namespace, selector),
                          key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
            if sink is not None:
                for p in pods:
                    pname = p["metadata"]["name"]
                    started = (p.get("status") or {}).get("phase", "Pending") != "Pending"
                    if started and (pname not in streams or streams[pname].failed):
                        streams[pname] = _LogStream(kube, namespace, pname, sink, max(1.0, deadline - time.monotonic()))
                        streams[pname].start()
            outcome, detail = job_outcome(job)
            if outcome is not None:
                _drain(streams.values(), min(deadline, time.monotonic() + LOG_DRAIN_SECONDS))
                return JobEnd(job, outcome == "Complete", detail, pods)
            left = deadline - time.monotonic()
            if left <= 0:
                waiting = [f"pod {p['metadata']['name']}: {r}" for p in pods if (r := pod_waiting_reason(p))]
                raise JobTimeout(f"job {namespace}/{name} did not finish in time; it keeps running "
                                 f"(kubectl -n {namespace} logs -f job/{name})"
                                 + (f"; {'; '.join(waiting)}" if waiting else ""))
            kube.wait_job_change(namespace, name, job["metadata"]["resourceVersion"],
                                 int(min(WATCH_SLICE_SECONDS, max(1.0, left))))
    finally:
        for s in streams.values():
            s.stop()
        for s in streams.values():
            s.join(2.0)


def _drain(streams: Any, until: float) -> None:
    for s in streams:
        s.join(max(0.0, until - time.monotonic()))
