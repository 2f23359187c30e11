"""A kubelet + job-controller simulator: runs each new Job of the fake API server as local processes.

For every Job (not suspended, not yet finished) it creates a Pod (labels ``job-name``, ``controller-uid``,
an ownerReference to the Job), runs the pod template's init containers and then its containers one after
another as local subprocesses (``command`` + ``args`` with ``$(VAR)`` expansion, ``env``/``envFrom`` resolved
from literal values, Secrets, ConfigMaps and the downward API), streams their combined output into the pod
log, and then sets the Pod phase (Succeeded/Failed) and the Job status (succeeded/failed, conditions
Complete/Failed, startTime/completionTime), as the real controllers do.

Volumes: ``secret`` / ``configMap`` volumes are written to a per-pod directory with the kubelet's file modes
(the item's ``mode``, else ``defaultMode``, else 0644; with a pod ``fsGroup``: group fsGroup and g+r, as the
kubelet does, which needs the simulator to run as root), ``emptyDir`` is a per-pod directory,
``persistentVolumeClaim`` is a directory per claim (kept across Jobs, see :meth:`claim_dir`), ``hostPath`` is
the host path itself, checked against its ``type`` (File, Directory, ...OrCreate, Socket); container paths
under a mount are rewritten to the local directory in the argv, env values and workingDir. ``path_map``
entries (container path -> local path) are applied last and win. Containers run as the simulator's user
(runAsUser/runAsGroup are not applied). Not simulated: images (the command must exist locally), resource
limits, probes, CronJob schedules (use :meth:`run_cronjob`), activeDeadlineSeconds, parallelism > 1,
in-cluster API access.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import os
import random
import re
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .localrun import resolve_argv, rewrite_paths
from .server import FakeKubeServer
from .store import GENERATE_CHARS, Obj, now_rfc3339

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_vars(s: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known variables are replaced, unknown ones kept, ``$$`` -> ``$``."""
    return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), s)


class PodStartError(Exception):
    """The container could not be started (missing Secret, PVC, command...)."""


def _set_file_mode(f: Path, mode: int, fs_group: int | None) -> None:
    """A Secret/ConfigMap volume file's mode as the kubelet leaves it: ``mode``; with an fsGroup the kubelet
    also gives the file that group and adds group read (its read-only mask, 0440)."""
    if fs_group is not None:
        try:
            os.chown(f, -1, int(fs_group))
        except PermissionError:
            raise PodStartError(f"fsGroup {fs_group}: the simulator must run as root to give files that group") \
                from None
        mode |= 0o440
    f.chmod(mode)


_HOST_PATH_TYPES = {"File": stat.S_ISREG, "Directory": stat.S_ISDIR, "Socket": stat.S_ISSOCK,
                    "CharDevice": stat.S_ISCHR, "BlockDevice": stat.S_ISBLK}


def _check_host_path(path: str, kind: str) -> None:
    """The kubelet's hostPath ``type`` check (symlinks followed); the ...OrCreate types create what is missing."""
    if kind == "DirectoryOrCreate":
        os.makedirs(path, mode=0o755, exist_ok=True)
        kind = "Directory"
    elif kind == "FileOrCreate":
        Path(path).touch(mode=0o644, exist_ok=True)
        kind = "File"
    check = _HOST_PATH_TYPES.get(kind)
    if check is None:  # "" (no check)
        return
    try:
        ok = check(os.stat(path).st_mode)
    except OSError:
        ok = False
    if not ok:
        raise PodStartError(f"hostPath type check failed: {path} is not a {kind.lower()}")


@dataclass
class JobRun:
    """One simulated container run (for assertions)."""

    namespace: str
    job: str
    pod: str
    container: str
    argv: list[str]
    env: dict[str, str]
    exit_code: int | None = None
    output: bytes = b""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None


class KubeletSimulator:
    """Watches Jobs in ``server`` (all namespaces, or ``namespace``) and runs them locally.

    ``path`` is the children's PATH (default: this process's), ``env`` extra variables for every container,
    ``executables`` maps argv[0] (exact or basename) to a local program, ``path_map`` maps container paths to
    local paths, ``workdir`` holds the volume directories (default: a temp dir removed at :meth:`stop`),
    ``job_timeout`` kills a container after that many seconds (exit 137), ``honor_backoff_limit`` retries a
    failed pod up to ``spec.backoffLimit`` times (off by default: one attempt, then the Job fails).
    """

    def __init__(self, server: FakeKubeServer, *, namespace: str | None = None,
                 path_map: Mapping[str, str] | None = None, executables: Mapping[str, str] | None = None,
                 path: str | None = None, env: Mapping[str, str] | None = None,
                 workdir: str | os.PathLike[str] | None = None, job_timeout: float = 120.0,
                 honor_backoff_limit: bool = False, poll_interval: float = 0.2) -> None:
        self.server, self.namespace = server, namespace
        self.path_map, self.executables = dict(path_map or {}), dict(executables or {})
        self.path, self.env = path, dict(env or {})
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="kubelet-sim-"))
        self.job_timeout, self.honor_backoff_limit, self.poll_interval = job_timeout, honor_backoff_limit, \
            poll_interval
        self.runs: list[JobRun] = []
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []

    # --------------------------------------------------------------------------------------- lifecycle
    def start(self) -> KubeletSimulator:
        if self._thread is not None:
            raise RuntimeError("already started")
        self.server.store.listeners.append(self._wake.set)
        self._thread = threading.Thread(target=self._loop, name="kubelet-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching, kill running containers, wait (bounded) for the workers."""
        self._stop.set()
        self._wake.set()
        with contextlib.suppress(ValueError):
            self.server.store.listeners.remove(self._wake.set)
        deadline = time.monotonic() + timeout
        for t in [self._thread, *self._workers]:
            if t is not None:
                t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in [self._thread, *self._workers] if t is not None and t.is_alive()]
        self._thread = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if alive:
            raise TimeoutError(f"kubelet simulator threads still running after {timeout}s: {alive}")

    def __enter__(self) -> KubeletSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------------- helpers
    def claim_dir(self, claim: str, namespace: str = "default") -> Path:
        """The local directory backing PersistentVolumeClaim ``claim``."""
        return self.workdir / "pvc" / namespace / claim

    def wait_for_job(self, name: str, namespace: str = "default", timeout: float = 30.0) -> Obj:
        """Wait until Job ``name`` has a Complete or Failed condition; returns the Job."""

        def done() -> Obj | None:
            job = self.server.get("jobs", name, namespace)
            conds = ((job or {}).get("status") or {}).get("conditions") or []
            return job if any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conds) \
                else None

        return self.server.wait_for(done, timeout)

    def run_cronjob(self, cronjob: str, namespace: str = "default", job_name: str | None = None) -> Obj:
        """Create a Job from a CronJob's template, like ``kubectl create job --from=cronjob/NAME``."""
        cj = self.server.get("cronjobs", cronjob, namespace)
        if cj is None:
            raise KeyError(f"cronjob {namespace}/{cronjob} not found")
        tmpl = cj["spec"]["jobTemplate"]
        md = tmpl.get("metadata") or {}
        return self.server.create({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": job_name or f"{cronjob}-manual-{''.join(random.choices(GENERATE_CHARS, k=3))}",
                         "namespace": namespace, "labels": dict(md.get("labels") or {}),
                         "annotations": {**(md.get("annotations") or {}),
                                         "cronjob.kubernetes.io/instantiate": "manual"},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": cronjob,
                                              "uid": cj["metadata"]["uid"], "controller": True}]},
            "spec": copy.deepcopy(tmpl["spec"])})

    # ------------------------------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            for job in self.server.list("jobs", self.namespace):
                md, spec, status = job["metadata"], job.get("spec") or {}, job.get("status") or {}
                if md["uid"] in self._seen or spec.get("suspend") or md.get("deletionTimestamp"):
                    continue
                self._seen.add(md["uid"])
                if status.get("succeeded") or status.get("failed") or status.get("conditions"):
                    continue  # created with a final status: nothing to run
                t = threading.Thread(target=self._run_job, args=(job,), name=f"kubelet-sim-{md['name']}",
                                     daemon=True)
                self._workers.append(t)
                t.start()
            self._wake.wait(self.poll_interval)

    def _run_job(self, job: Obj) -> None:
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        attempts = int(job["spec"].get("backoffLimit", 6)) + 1 if self.honor_backoff_limit else 1
        started = now_rfc3339()
        failed = 0
        ok = False
        try:
            self.server.set_status("jobs", name, {"startTime": started, "active": 1}, ns)
            for _ in range(attempts):
                if self._stop.is_set() or self.server.get("jobs", name, ns) is None:
                    return
                ok = self._run_pod(job)
                if self._stop.is_set():
                    return  # killed because the simulator stops: leave the Job unfinished
                if ok:
                    break
                failed += 1
                self.server.set_status("jobs", name, {"failed": failed}, ns)
            now = now_rfc3339()
            cond = {"status": "True", "lastProbeTime": now, "lastTransitionTime": now}
            if ok:
                status = {"active": None, "ready": 0, "succeeded": 1, "completionTime": now, "conditions": [
                    {"type": "SuccessCriteriaMet", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods", **cond},
                    {"type": "Complete", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods", **cond}]}
            else:
                status = {"active": None, "ready": 0, "failed": failed, "conditions": [
                    {"type": "FailureTarget", "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit", **cond},
                    {"type": "Failed", "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit", **cond}]}
            self.server.set_status("jobs", name, status, ns)
        except Exception as e:  # the Job was deleted under us, or the fake is stopping
            if not self._stop.is_set() and self.server.get("jobs", name, ns) is not None:
                raise RuntimeError(f"kubelet simulator failed on job {ns}/{name}") from e

    def _run_pod(self, job: Obj) -> bool:
        ns, jname, juid = job["metadata"]["namespace"], job["metadata"]["name"], job["metadata"]["uid"]
        tmpl = job["spec"].get("template") or {}
        tmd, pspec = tmpl.get("metadata") or {}, copy.deepcopy(tmpl.get("spec") or {})
        labels = {**(tmd.get("labels") or {}), "job-name": jname, "controller-uid": juid,
                  "batch.kubernetes.io/job-name": jname, "batch.kubernetes.io/controller-uid": juid}
        pspec.setdefault("nodeName", "fake-node")
        pod = self.server.create({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": f"{jname}-", "namespace": ns, "labels": labels,
                         "annotations": dict(tmd.get("annotations") or {}),
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": jname, "uid": juid,
                                              "controller": True, "blockOwnerDeletion": True}]},
            "spec": pspec})
        pname = pod["metadata"]["name"]
        containers = list(pspec.get("initContainers") or []) + list(pspec.get("containers") or [])
        statuses: list[Obj] = []
        now = now_rfc3339()
        self.server.set_status("pods", pname, {"phase": "Running", "startTime": now, "podIP": "10.244.0.20",
                                               "hostIP": "10.0.0.1"}, ns)
        ok = True
        for c in containers:
            run = JobRun(ns, jname, pname, c["name"], [], {})
            self.runs.append(run)
            try:
                argv, env, cwd = self._prepare(pod, c)
                run.argv, run.env = argv, env
                run.exit_code = self._exec(run, argv, env, cwd,
                                           (pspec.get("securityContext") or {}).get("fsGroup"))
            except PodStartError as e:
                msg = f"kubelet-sim: Error: {e}\n".encode()
                self.server.append_pod_log(pname, msg, ns, c["name"])
                run.output += msg
                run.exit_code = 128
            run.finished = time.monotonic()
            statuses.append({"name": c["name"], "image": c.get("image", ""), "ready": False, "restartCount": 0,
                             "state": {"terminated": {"exitCode": run.exit_code, "startedAt": now,
                                                      "finishedAt": now_rfc3339(),
                                                      "reason": "Completed" if run.exit_code == 0 else "Error"}}})
            if run.exit_code != 0:
                ok = False
                break
        if self.server.get("pods", pname, ns) is not None:
            self.server.set_status("pods", pname, {"phase": "Succeeded" if ok else "Failed",
                                                   "containerStatuses": statuses}, ns)
        return ok

    # ---------------------------------------------------------------------------------- one container
    def _lookup(self, kind: str, name: str, ns: str, optional: bool) -> Obj | None:
        obj = self.server.get(kind, name, ns)
        if obj is None and not optional:
            raise PodStartError(f'{kind.rstrip("s")} "{name}" not found')
        return obj

    @staticmethod
    def _data(obj: Obj | None) -> dict[str, bytes]:
        if obj is None:
            return {}
        if obj.get("kind") == "Secret":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        out = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return out

    def _volume_dir(self, pod: Obj, vol: Obj) -> str | None:
        ns, pname = pod["metadata"]["namespace"], pod["metadata"]["name"]
        base = self.workdir / "pods" / ns / pname / vol["name"]
        for kind, key, name_key in (("secrets", "secret", "secretName"), ("configmaps", "configMap", "name")):
            if key in vol:
                src = vol[key]
                data = self._data(self._lookup(kind, src[name_key], ns, bool(src.get("optional"))))
                items = src.get("items") or [{"key": k, "path": k} for k in data]
                base.mkdir(parents=True, exist_ok=True)
                fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
                for it in items:
                    if it["key"] not in data:
                        raise PodStartError(f'key "{it["key"]}" not found in {key} "{src[name_key]}"')
                    f = base / it["path"]
                    f.parent.mkdir(parents=True, exist_ok=True)
                    f.write_bytes(data[it["key"]])
                    _set_file_mode(f, int(it.get("mode", src.get("defaultMode", 0o644))), fs_group)
                return str(base)
        if "emptyDir" in vol:
            base.mkdir(parents=True, exist_ok=True)
            return str(base)
        if "persistentVolumeClaim" in vol:
            claim = vol["persistentVolumeClaim"]["claimName"]
            self._lookup("persistentvolumeclaims", claim, ns, False)
            d = self.claim_dir(claim, ns)
            d.mkdir(parents=True, exist_ok=True)
            return str(d)
        if "hostPath" in vol:
            local = rewrite_paths(vol["hostPath"]["path"], self.path_map)
            _check_host_path(local, vol["hostPath"].get("type", ""))
            return local
        return None  # projected / downwardAPI / csi...: not simulated

    def _prepare(self, pod: Obj, c: Obj) -> tuple[list[str], dict[str, str], str]:
        ns, pname = pod["metadata"]["namespace"], pod["metadata"]["name"]
        vols = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mapping: dict[str, str] = {}
        for m in c.get("volumeMounts") or []:
            if m["name"] not in vols:
                raise PodStartError(f'volume "{m["name"]}" not found in the pod spec')
            local = self._volume_dir(pod, vols[m["name"]])
            if local is not None:
                mapping[m["mountPath"]] = os.path.join(local, m["subPath"]) if m.get("subPath") else local
        mapping.update(self.path_map)

        env: dict[str, str] = {"PATH": self.path or os.environ.get("PATH", "/usr/bin:/bin"),
                               "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8", "HOSTNAME": pname,
                               **self.env}
        for ef in c.get("envFrom") or []:
            prefix = ef.get("prefix", "")
            for kind, key in (("secrets", "secretRef"), ("configmaps", "configMapRef")):
                if key in ef:
                    src = ef[key]
                    data = self._data(self._lookup(kind, src["name"], ns, bool(src.get("optional"))))
                    env.update({prefix + k: v.decode() for k, v in data.items()})
        for e in c.get("env") or []:
            if "valueFrom" not in e:
                env[e["name"]] = expand_vars(str(e.get("value", "")), env)
                continue
            vf = e["valueFrom"]
            value: str | None = None
            for kind, key in (("secrets", "secretKeyRef"), ("configmaps", "configMapKeyRef")):
                if key in vf:
                    ref = vf[key]
                    data = self._data(self._lookup(kind, ref["name"], ns, bool(ref.get("optional"))))
                    if ref["key"] in data:
                        value = data[ref["key"]].decode()
                    elif not ref.get("optional"):
                        raise PodStartError(f'couldn\'t find key {ref["key"]} in {kind.rstrip("s")} '
                                            f'{ns}/{ref["name"]}')
            if "fieldRef" in vf:
                value = self._field_ref(pod, vf["fieldRef"]["fieldPath"])
            if value is not None:
                env[e["name"]] = value
        env = {k: rewrite_paths(v, mapping) if k not in ("PATH", "HOME") else v for k, v in env.items()}

        argv = [expand_vars(a, env) for a in (c.get("command") or []) + (c.get("args") or [])]
        if not c.get("command"):
            raise PodStartError(f'container "{c["name"]}" has no command (image entrypoints are not simulated)')
        argv = resolve_argv([rewrite_paths(a, mapping) for a in argv], self.executables)
        if c.get("workingDir"):
            cwd = rewrite_paths(c["workingDir"], mapping)
        else:
            cwd = str(self.workdir / "pods" / ns / pname / "_cwd")
            os.makedirs(cwd, exist_ok=True)
        return argv, env, cwd

    @staticmethod
    def _field_ref(pod: Obj, path: str) -> str:
        md = pod["metadata"]
        if m := re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path):
            return str((md.get(m.group(1)) or {}).get(m.group(2), ""))
        simple: dict[str, Any] = {"metadata.name": md["name"], "metadata.namespace": md["namespace"],
                                  "metadata.uid": md["uid"], "spec.nodeName": pod["spec"].get("nodeName"),
                                  "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
                                  "status.podIP": "10.244.0.20", "status.hostIP": "10.0.0.1"}
        return str(simple.get(path) or "")

    def _exec(self, run: JobRun, argv: list[str], env: dict[str, str], cwd: str, fs_group: int | None = None) -> int:
        # As the kubelet does, the pod's fsGroup is a supplementary group of its processes.
        groups = {"extra_groups": [*os.getgroups(), fs_group]} if fs_group is not None else {}
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True, **groups)
        except (FileNotFoundError, PermissionError, NotADirectoryError) as e:
            raise PodStartError(f'failed to start container "{run.container}": exec: "{argv[0]}": {e}') from None
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + self.job_timeout
        killed = False
        next_check = 0.0
        try:
            while True:
                ready, _, _ = select.select([fd], [], [], 0.2)
                if ready:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    run.output += chunk
                    self.server.append_pod_log(run.pod, chunk, run.namespace, run.container)
                if not killed and time.monotonic() >= next_check:  # stopping, timed out or pod deleted?
                    next_check = time.monotonic() + 0.2
                    if (self._stop.is_set() or time.monotonic() > deadline
                            or self.server.get("pods", run.pod, run.namespace) is None):
                        killed = True
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.stdout.close()
            try:
                code = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait(timeout=5)
        return 137 if killed else (code if code >= 0 else 128 - code)
