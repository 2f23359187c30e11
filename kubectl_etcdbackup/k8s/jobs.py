"""Jobs the plugin creates (pure): a manual run of the backup CronJob, a short-lived store reader, a command run
with the backup's own access, and how to read their state and output.

The reader is a Job rather than a bare Pod so that the operator RBAC needed for `now` (create/delete jobs)
covers it too, and so that `ttlSecondsAfterFinished` removes it even if the plugin dies.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..defaults import NONROOT_ID
from .manifests import KEY_DIR, KEY_MODE_FS_GROUP
from .store_config import ClusterStore

INSTANTIATE_ANNOTATION = "cronjob.kubernetes.io/instantiate"
MAX_NAME = 63  # a Job's name is also its pods' job-name label value
READER_DEADLINE_SECONDS = 300
READER_TTL_SECONDS = 600


def _name(base: str, kind: str, now: datetime, unique: str = "") -> str:
    suffix = f"-{kind}-{now:%Y%m%d%H%M%S}" + (f"-{unique}" if unique else "")
    return base[: MAX_NAME - len(suffix)].rstrip("-.") + suffix


def manual_job(cronjob: dict[str, Any], now: datetime, unique: str = "") -> dict[str, Any]:
    """A Job from the CronJob's jobTemplate, as `kubectl create job --from=cronjob/NAME` makes it, named
    `<cronjob>-manual-<time>` (plus `-<unique>` when that name is taken)."""
    md = cronjob["metadata"]
    tmpl = cronjob["spec"]["jobTemplate"]
    tmd = tmpl.get("metadata") or {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": _name(md["name"], "manual", now, unique),
            "namespace": md["namespace"],
            "labels": dict(tmd.get("labels") or {}),
            "annotations": {**(tmd.get("annotations") or {}), INSTANTIATE_ANNOTATION: "manual"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": md["name"], "uid": md["uid"],
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": copy.deepcopy(tmpl["spec"]),
    }


def reader_job(cronjob: dict[str, Any], store: ClusterStore, argv: list[str], now: datetime,
               unique: str = "") -> dict[str, Any]:
    """A one-shot Job running `argv` (a kubectl-etcdbackup command) in the agent image with the file store's
    PVC mounted read-only where the backup container mounts it, and the encryption key readable through the
    pod's fsGroup (to authenticate manifests); unprivileged, scheduled like the backups."""
    if not store.claim or not store.mount_path:
        raise ValueError("reader_job needs a file store on a PVC")
    md = cronjob["metadata"]
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    backup = next(c for c in pod["containers"] if c.get("image"))
    labels = {k: v for k, v in (md.get("labels") or {}).items() if k.startswith("app.kubernetes.io/")}
    labels["app.kubernetes.io/component"] = "reader"
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": NONROOT_ID, "runAsGroup": NONROOT_ID,
                            "fsGroup": NONROOT_ID, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    for k in ("serviceAccountName", "imagePullSecrets", "nodeSelector", "tolerations", "affinity",
              "priorityClassName"):
        if pod.get(k):
            spec[k] = copy.deepcopy(pod[k])
    spec["containers"] = [{
        "name": "reader",
        "image": backup["image"],
        "imagePullPolicy": backup.get("imagePullPolicy", "IfNotPresent"),
        "command": ["kubectl-etcdbackup", *argv],
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "backups", "mountPath": store.mount_path, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }]
    spec["volumes"] = [{"name": "backups", "persistentVolumeClaim": {"claimName": store.claim, "readOnly": True}},
                       {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    if store.key_secret is not None:
        spec["containers"][0]["volumeMounts"].append({"name": "encryption-key", "mountPath": KEY_DIR,
                                                      "readOnly": True})
        spec["volumes"].append({"name": "encryption-key", "secret": {
            "secretName": store.key_secret.name, "defaultMode": KEY_MODE_FS_GROUP,
            "items": [{"key": store.key_secret.key, "path": "key"}]}})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": _name(md["name"], "reader", now, unique), "namespace": md["namespace"],
                     "labels": labels},
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": READER_DEADLINE_SECONDS,
                 "ttlSecondsAfterFinished": READER_TTL_SECONDS,
                 "template": {"metadata": {"labels": dict(labels)}, "spec": spec}},
    }


def command_job(cronjob: dict[str, Any], argv: list[str], now: datetime, unique: str = "") -> dict[str, Any]:
    """A Job from the CronJob's jobTemplate whose container runs `kubectl-etcdbackup <argv>` instead of the backup:
    what changes the store (prune, delete) runs with exactly the backup's own access to it, nothing more."""
    job = manual_job(cronjob, now, unique)
    md = job["metadata"]
    md["name"] = _name(cronjob["metadata"]["name"], "run", now, unique)
    md["annotations"].pop(INSTANTIATE_ANNOTATION, None)
    md.pop("ownerReferences", None)  # not a run of the schedule; ttlSecondsAfterFinished removes it
    spec = job["spec"]
    spec.update({"backoffLimit": 0, "activeDeadlineSeconds": READER_DEADLINE_SECONDS,
                 "ttlSecondsAfterFinished": READER_TTL_SECONDS})
    container = next(c for c in spec["template"]["spec"]["containers"] if c.get("image"))
    container["command"] = ["kubectl-etcdbackup", *argv]
    container.pop("args", None)
    return job


def create_unique(create: Callable[[dict[str, Any]], Any], make: Callable[[str], dict[str, Any]],
                  exists: type[Exception]) -> dict[str, Any]:
    """create(make("")); when that name is taken (`exists` raised), once more with a random suffix."""
    job = make("")
    try:
        create(job)
    except exists:
        job = make(secrets.token_hex(2))
        create(job)
    return job


def job_outcome(job: dict[str, Any]) -> tuple[str | None, str]:
    """("Complete" | "Failed" | None while running, "reason: message" of that condition)."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            detail = ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
            return c["type"], detail
    return None, ""


def pod_waiting_reason(pod: dict[str, Any]) -> str:
    """Why a pod is not running yet (ImagePullBackOff, ContainerCreating, Unschedulable...), or ""."""
    st = pod.get("status") or {}
    for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return ": ".join(x for x in (waiting["reason"], waiting.get("message")) if x)
    for c in st.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
    return ""


def backup_result(log: str) -> dict[str, Any] | None:
    """The agent's result line ({"id", "revision", "raw_size", ...}) from a backup pod's log."""
    for line in reversed(log.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and "id" in obj:
                return obj
    return None
