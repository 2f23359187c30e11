"""Read the store the installed CronJob writes to, from outside the cluster.

S3 is read directly (credentials from the local AWS environment, else from the Secret the CronJob uses).
A file store lives on a PVC: a `kubectl-etcdbackup` command runs in the exporter pod that mounts it (exec,
argv only: the image has no shell), or, when none runs or exec is forbidden, in a short-lived reader Job.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from ..defaults import AWS_CREDENTIAL_KEYS
from ..errors import EtcdBackupError, StoreError, UsageError
from ..manifest import SnapshotManifest
from ..stores import Store
from ..textutil import extract_json, last_line
from .api import AlreadyExists, Forbidden, Kube, KubeError, NotFound, NotInstalled
from .follow import follow_job
from .jobs import command_job, create_unique, reader_job
from .manifests import KEY_FILE, drill_name_of
from .store_catalog import Catalog, catalog_of, manifests_from_json
from .store_config import ClusterStore, store_from_cronjob

CRONJOB_SELECTOR = "app.kubernetes.io/name=etcd-backup,app.kubernetes.io/component=backup"
EXPORTER_SELECTOR = "app.kubernetes.io/name=etcd-backup,app.kubernetes.io/component=exporter"
READ_TIMEOUT = 120.0


# ---------------------------------------------------------------------------------------- the CronJob
def find_cronjob(kube: Kube, namespace: str, name: str | None = None) -> dict[str, Any]:
    """The backup CronJob: by name, else the only one labelled as ours in the namespace."""
    hint = f"run kubectl etcdbackup install -n {namespace}"
    if name:
        try:
            return kube.get_cronjob(namespace, name)
        except NotFound:
            raise NotInstalled(f"no backup CronJob {name} in namespace {namespace}: {hint}") from None
    found = kube.list_cronjobs(namespace, CRONJOB_SELECTOR)
    if not found:
        raise NotInstalled(f"no backup CronJob in namespace {namespace}: {hint}")
    if len(found) > 1:
        names = ", ".join(sorted(c["metadata"]["name"] for c in found))
        raise UsageError(f"several backup CronJobs in namespace {namespace} ({names}): pass --cronjob")
    cj = found[0]
    cj.setdefault("apiVersion", "batch/v1")
    cj.setdefault("kind", "CronJob")
    return cj


def find_drill_cronjob(kube: Kube, namespace: str, name: str | None = None) -> dict[str, Any]:
    """The restore drill CronJob that goes with the backup CronJob (by its name, else the only one)."""
    backup = find_cronjob(kube, namespace, name)["metadata"]["name"]
    try:
        cj = kube.get_cronjob(namespace, drill_name_of(backup))
    except NotFound:
        raise NotInstalled(f"no restore drill CronJob {drill_name_of(backup)} in namespace {namespace}: install "
                           "with --drill (chart: drill.enabled=true)") from None
    cj.setdefault("apiVersion", "batch/v1")
    cj.setdefault("kind", "CronJob")
    return cj


def cluster_store(kube: Kube, namespace: str, name: str | None = None) -> tuple[dict[str, Any], ClusterStore]:
    cj = find_cronjob(kube, namespace, name)
    return cj, store_from_cronjob(cj)


# ---------------------------------------------------------------------------------------- S3, directly
def _secret_credentials(kube: Kube, cfg: ClusterStore) -> dict[str, str]:
    creds: dict[str, str] = {}
    for secret in cfg.aws_env_from:
        data = kube.read_secret(cfg.namespace, secret)
        creds.update({k: v.decode() for k, v in data.items() if k in AWS_CREDENTIAL_KEYS})
    cache: dict[str, dict[str, bytes]] = {}
    for var, ref in cfg.aws_secret_env.items():
        if ref.name not in cache:
            try:
                cache[ref.name] = kube.read_secret(cfg.namespace, ref.name)
            except NotFound:
                cache[ref.name] = {}
        if ref.key in cache[ref.name]:
            creds[var] = cache[ref.name][ref.key].decode()
    return creds


def open_s3(kube: Kube, cfg: ClusterStore) -> Store:
    """The CronJob's S3 store, opened from here."""
    import boto3

    from ..stores.s3_store import S3Store, s3_client

    session = boto3.session.Session()
    if session.get_credentials() is None:
        creds = _secret_credentials(kube, cfg)
        if "AWS_ACCESS_KEY_ID" in creds:
            session = boto3.session.Session(aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                                            aws_secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY"),
                                            aws_session_token=creds.get("AWS_SESSION_TOKEN"))
    u = urlparse(cfg.url)
    return S3Store(u.netloc, u.path, client=s3_client(cfg.s3_endpoint_url, cfg.s3_region, session))


# ---------------------------------------------------------------------------------------- file store on a PVC
def _exporter_target(kube: Kube, cfg: ClusterStore) -> tuple[str, str, str] | None:
    """(pod, container, store URL as that container sees it) of a running pod of ours mounting the PVC."""
    for pod in kube.list_pods(cfg.namespace, EXPORTER_SELECTOR):
        if (pod.get("status") or {}).get("phase") != "Running" or pod["metadata"].get("deletionTimestamp"):
            continue
        vols = {v["name"] for v in pod["spec"].get("volumes") or []
                if (v.get("persistentVolumeClaim") or {}).get("claimName") == cfg.claim}
        for c in pod["spec"].get("containers") or []:
            for m in c.get("volumeMounts") or []:
                if m["name"] in vols and not m.get("subPath"):
                    rest = cfg.path[len((cfg.mount_path or "").rstrip("/")):]
                    return pod["metadata"]["name"], c["name"], f"file://{m['mountPath'].rstrip('/')}{rest}"
    return None


def run_on_store(kube: Kube, cronjob: dict[str, Any], cfg: ClusterStore, argv: list[str], notes: list[str], *,
                 write: bool = False, timeout: float = READ_TIMEOUT) -> str:
    """Run `kubectl-etcdbackup <argv> --store <file store> --encryption-key-file <key>` next to the PVC; returns
    its stdout (the store URL is the path where the chosen pod mounts the volume). Reads run in the exporter pod
    (exec, argv only) or else in an unprivileged read-only Job; `write` runs it in a Job made from the CronJob's
    own pod (the backup's access to the volume). What the command and the plugin have to say goes into `notes`."""
    if not cfg.claim:
        raise UsageError(f"the store {cfg.url} of CronJob {cfg.cronjob} is not on a PersistentVolumeClaim the "
                         "plugin can find; pass --store")
    target = None if write else _exporter_target(kube, cfg)
    if target is not None:
        pod, container, url = target
        try:
            r = kube.exec(cfg.namespace, pod, container, ["kubectl-etcdbackup", *argv, "--store", url, *_KEY_ARGS],
                          timeout)
        except Forbidden:
            notes.append(f"no RBAC permission to exec in pod {pod}; reading the store with a Job instead")
        else:
            notes += [ln for ln in r.stderr.splitlines() if ln.strip()]
            if r.exit_code != 0:
                raise StoreError(f"`{' '.join(argv[:2])}` on {url} in pod {cfg.namespace}/{pod} failed (exit "
                                 f"{r.exit_code}): " + (last_line(r.stderr) or last_line(r.stdout) or "no output"))
            return r.stdout
    return _run_job(kube, cronjob, cfg, [*argv, "--store", cfg.url, *_KEY_ARGS], notes, write, timeout)


_KEY_ARGS = ["--encryption-key-file", KEY_FILE]  # every pod of ours that mounts the store mounts the key there too


def _run_job(kube: Kube, cronjob: dict[str, Any], cfg: ClusterStore, argv: list[str], notes: list[str],
             write: bool, timeout: float) -> str:
    now = datetime.now(UTC)
    make = (lambda u: command_job(cronjob, argv, now, u)) if write else (lambda u: reader_job(cronjob, cfg, argv,
                                                                                              now, u))
    job = create_unique(lambda j: kube.create_job(cfg.namespace, j), make, AlreadyExists)
    name = job["metadata"]["name"]
    notes.append(f"running `{' '.join(argv[:2])}` next to PVC {cfg.claim} in job {cfg.namespace}/{name} "
                 f"(up to {timeout:.0f}s)")
    try:
        end = follow_job(kube, cfg.namespace, name, time.monotonic() + timeout)
        log = kube.pod_log(cfg.namespace, end.pods[-1]["metadata"]["name"]) if end.pods else ""
        if not end.succeeded:
            raise StoreError(f"job {cfg.namespace}/{name} failed ({end.detail}): " + (last_line(log) or "no output"))
        return log
    finally:
        try:
            kube.delete_job(cfg.namespace, name)
        except (KubeError, EtcdBackupError) as e:  # it expires by itself (ttlSecondsAfterFinished)
            notes.append(f"cannot delete job {name}: {e}")


# ---------------------------------------------------------------------------------------- what commands read
def read_snapshots(kube: Kube, cronjob: dict[str, Any], cfg: ClusterStore, notes: list[str]) -> list[SnapshotManifest]:
    """The snapshots of the cluster's file store (as the agent in the cluster judged them), newest first."""
    out = run_on_store(kube, cronjob, cfg, ["list", "-o", "json"], notes)
    items = extract_json(out, "[")
    if not isinstance(items, list):
        raise StoreError(f"unexpected output of `kubectl-etcdbackup list` in the cluster: {last_line(out)!r}")
    return manifests_from_json(items)


def read_catalog(kube: Kube, cronjob: dict[str, Any], cfg: ClusterStore, notes: list[str]) -> Catalog:
    """Snapshots and the agent's run record of the cluster's store."""
    if cfg.is_s3:
        return catalog_of(open_s3(kube, cfg))
    out = run_on_store(kube, cronjob, cfg, ["agent", "catalog"], notes)
    return Catalog.from_json(extract_json(out, "{"))
