"""Commands that talk to a Kubernetes cluster: manifests, install, now, list, status, restore --plan, and the
cluster fall-back of `snapshot get`.

Modules that import the `kubernetes` client (k8s.api, k8s.cluster_store, k8s.follow, k8s.probe) are imported
inside the commands: the agent, which runs every few minutes in the cluster, never needs them.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from ..catalog import pick, resolve
from ..durations import format_duration
from ..errors import EtcdBackupError, UsageError
from ..k8s.etcd_status import warnings_for
from ..k8s.jobs import backup_result, create_unique, manual_job
from ..k8s.manifests import ManifestOptions, render_manifests, to_yaml
from ..k8s.runbook import DEFAULT_KEY_FILE, DEFAULT_MANIFESTS_DIR, Runbook, RunbookOptions, build_runbook
from ..k8s.store_catalog import catalog_of
from ..k8s.store_config import ClusterStore
from ..keys import generate_key
from ..manifest import parse_time
from ..monitor import assess
from ..output import human_bytes, render
from ..restore_plan import DEFAULT_BUMP_REVISION
from . import snapshots
from .common import (
    DEFAULT_NAMESPACE,
    AllowPlaintextOpt,
    ContextOpt,
    CronJobOpt,
    InsecureKeyFileOpt,
    KeyEnvOpt,
    KeyFileOpt,
    KubeconfigOpt,
    NamespaceOpt,
    OptionalStoreOpt,
    OutputOpt,
    ProgressOpt,
    S3EndpointOpt,
    S3RegionOpt,
    StoreOpt,
    check_output,
    get_key,
    get_store,
    seconds,
)

if TYPE_CHECKING:
    from ..k8s.api import Kube

ETCD_NAMESPACE = "kube-system"
ETCD_SELECTOR = "component=etcd"
APISERVER_SELECTOR = "component=kube-apiserver"
DEFAULT_MAX_AGE = "1h"

EtcdNamespaceOpt = Annotated[str, typer.Option("--etcd-namespace", help="namespace of the etcd pods",
                                               rich_help_panel="Kubernetes")]
EtcdSelectorOpt = Annotated[str, typer.Option("--etcd-selector", help="label selector of the etcd pods",
                                              rich_help_panel="Kubernetes")]


def _connect(kubeconfig: str | None, context: str | None) -> Kube:
    from ..k8s.api import connect

    return connect(kubeconfig, context)


def _last_error_line(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.lower().startswith("error")]
    last = (errors or lines or [""])[-1][:400]
    return last[len("error:"):].strip() if last.lower().startswith("error:") else last


# ---------------------------------------------------------------------------------------- manifests, install
def manifest_options(values_file: str | None, **flags: Any) -> ManifestOptions:
    """ManifestOptions from a YAML file of its fields (optional) with the flags that were given on top."""
    known = {f.name for f in dataclasses.fields(ManifestOptions)}
    values: dict[str, Any] = {}
    if values_file:
        try:
            loaded = yaml.safe_load(Path(values_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise UsageError(f"--values {values_file}: {getattr(e, 'strerror', None) or e}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--values {values_file}: must be a mapping of option names to values")
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise UsageError(f"--values {values_file}: unknown option(s) {', '.join(unknown)}")
        values.update(loaded)
    values.update({k: v for k, v in flags.items() if v is not None})
    if isinstance(values.get("etcd_endpoints"), str):
        values["etcd_endpoints"] = [e.strip() for e in values["etcd_endpoints"].split(",") if e.strip()]
    values.setdefault("namespace", DEFAULT_NAMESPACE)
    return ManifestOptions(**values)


ValuesOpt = Annotated[str | None, typer.Option("--values", "-f", help="YAML file of ManifestOptions fields "
                                               "(flags override it)")]
MNamespaceOpt = Annotated[str | None, typer.Option("--namespace", "-n", help="namespace to install into "
                                                   "[default: etcd-backup]")]
MNameOpt = Annotated[str | None, typer.Option("--name", help="base name of every object [default: etcd-backup]")]
MStoreOpt = Annotated[str | None, typer.Option("--store", help="file:///dir (a PVC) or s3://bucket/prefix "
                                               "[default: file:///backups]")]
ScheduleOpt = Annotated[str | None, typer.Option("--schedule", help="cron schedule [default: */15 * * * *]")]
ImageOpt = Annotated[str | None, typer.Option("--image", help="agent image (repo:tag or @digest)")]
EndpointsOpt = Annotated[str | None, typer.Option("--etcd-endpoints", help="comma-separated etcd client URLs "
                                                  "[default: https://127.0.0.1:2379]")]
PkiOpt = Annotated[str | None, typer.Option("--etcd-pki-dir", help="node dir of the etcd client certs "
                                            "[default: /etc/kubernetes/pki/etcd]")]
S3SecretOpt = Annotated[str | None, typer.Option("--s3-secret", help="existing Secret with AWS_ACCESS_KEY_ID/"
                                                 "AWS_SECRET_ACCESS_KEY")]
KeySecretOpt = Annotated[str | None, typer.Option("--key-secret", help="Secret holding the encryption key "
                                                  "[default: etcd-backup-key]")]
KeepLastOpt = Annotated[int | None, typer.Option("--keep-last", min=1, help="keep the newest N")]
KeepWithinOpt = Annotated[str | None, typer.Option("--keep-within", help="keep everything younger than this "
                                                   "[default: 24h]")]
KeepHourlyOpt = Annotated[int | None, typer.Option("--keep-hourly", min=1, help="keep the newest of each of the "
                                                   "last N hours")]
KeepDailyOpt = Annotated[int | None, typer.Option("--keep-daily", min=1, help="keep the newest of each of the last "
                                                  "N days [default: 7]")]
KeepWeeklyOpt = Annotated[int | None, typer.Option("--keep-weekly", min=1, help="keep the newest of each of the "
                                                   "last N weeks")]
KeepMonthlyOpt = Annotated[int | None, typer.Option("--keep-monthly", min=1, help="keep the newest of each of the "
                                                    "last N months")]
MaxAgeOpt = Annotated[str | None, typer.Option("--max-age", help="alert when the newest backup is older "
                                               "[default: 1h]")]
VerifyOpt = Annotated[str | None, typer.Option("--verify", help="hash | status | restore [default: status]")]
PvcSizeOpt = Annotated[str | None, typer.Option("--pvc-size", help="size of the backups PVC [default: 20Gi]")]
StorageClassOpt = Annotated[str | None, typer.Option("--storage-class", help="StorageClass of the backups PVC")]
ExporterOpt = Annotated[bool | None, typer.Option("--exporter/--no-exporter", help="metrics exporter Deployment")]
CreateNsOpt = Annotated[bool | None, typer.Option("--create-namespace/--no-create-namespace")]
OperatorRoleOpt = Annotated[bool | None, typer.Option("--operator-role/--no-operator-role",
                                                      help="a Role with what `now`/`status` need")]


def manifests_cmd(values: ValuesOpt = None, namespace: MNamespaceOpt = None, name: MNameOpt = None,
                  store: MStoreOpt = None, schedule: ScheduleOpt = None, image: ImageOpt = None,
                  etcd_endpoints: EndpointsOpt = None, etcd_pki_dir: PkiOpt = None,
                  s3_endpoint_url: Annotated[str | None, typer.Option("--s3-endpoint-url")] = None,
                  s3_region: Annotated[str | None, typer.Option("--s3-region")] = None,
                  s3_secret: S3SecretOpt = None, key_secret: KeySecretOpt = None, keep_last: KeepLastOpt = None,
                  keep_within: KeepWithinOpt = None, keep_hourly: KeepHourlyOpt = None,
                  keep_daily: KeepDailyOpt = None, keep_weekly: KeepWeeklyOpt = None,
                  keep_monthly: KeepMonthlyOpt = None, max_age: MaxAgeOpt = None, verify: VerifyOpt = None,
                  pvc_size: PvcSizeOpt = None, storage_class: StorageClassOpt = None, exporter: ExporterOpt = None,
                  create_namespace: CreateNsOpt = None, operator_role: OperatorRoleOpt = None) -> None:
    """Print the objects that run scheduled backups in a cluster, as YAML (for kubectl apply / GitOps)."""
    opts = manifest_options(values, **_option_flags(locals()))
    print(to_yaml(render_manifests(opts)), end="")


def _option_flags(params: dict[str, Any]) -> dict[str, Any]:
    """Command parameters -> ManifestOptions field names (values still None when not given)."""
    rename = {"s3_secret": "s3_existing_secret", "storage_class": "pvc_storage_class",
              "exporter": "exporter_enabled"}
    skip = {"values", "kubeconfig", "context", "generate_key"}
    return {rename.get(k, k): v for k, v in params.items() if k not in skip}


def install_cmd(values: ValuesOpt = None, namespace: MNamespaceOpt = None, name: MNameOpt = None,
                store: MStoreOpt = None, schedule: ScheduleOpt = None, image: ImageOpt = None,
                etcd_endpoints: EndpointsOpt = None, etcd_pki_dir: PkiOpt = None,
                s3_endpoint_url: Annotated[str | None, typer.Option("--s3-endpoint-url")] = None,
                s3_region: Annotated[str | None, typer.Option("--s3-region")] = None,
                s3_secret: S3SecretOpt = None, key_secret: KeySecretOpt = None, keep_last: KeepLastOpt = None,
                keep_within: KeepWithinOpt = None, keep_hourly: KeepHourlyOpt = None,
                keep_daily: KeepDailyOpt = None, keep_weekly: KeepWeeklyOpt = None,
                keep_monthly: KeepMonthlyOpt = None, max_age: MaxAgeOpt = None, verify: VerifyOpt = None,
                pvc_size: PvcSizeOpt = None, storage_class: StorageClassOpt = None, exporter: ExporterOpt = None,
                create_namespace: CreateNsOpt = None, operator_role: OperatorRoleOpt = None,
                generate_key: Annotated[bool, typer.Option(
                    "--generate-key", help="create the key Secret with a new random key if it does not exist "
                    "(never replaced)")] = False,
                kubeconfig: KubeconfigOpt = None, context: ContextOpt = None) -> None:
    """Apply the manifests to the cluster (server-side apply, field manager kubectl-etcdbackup); idempotent."""
    opts = manifest_options(values, **_option_flags(locals()))
    from ..k8s.api import NotFound

    objs = render_manifests(opts)
    kube = _connect(kubeconfig, context)
    try:
        for obj in objs:
            md = obj["metadata"]
            try:
                before = kube.get_object(obj)
                after = kube.apply(obj)
            except NotFound:
                raise UsageError(f"namespace {opts.namespace} does not exist (install creates it unless "
                                 "--no-create-namespace)") from None
            action = "created" if before is None else (
                "unchanged" if before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]
                else "configured")
            print(f"{obj['kind'].lower()}/{md['name']} {action}")
        _ensure_key_secret(kube, opts, generate_key)
    finally:
        kube.close()


def key_secret(opts: ManifestOptions, key: str) -> dict[str, Any]:
    """The encryption key Secret `install --generate-key` creates."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": opts.key_secret, "namespace": opts.namespace,
                         "labels": {"app.kubernetes.io/part-of": "kubectl-etcdbackup"}},
            "stringData": {opts.key_secret_key: key}}


def _ensure_key_secret(kube: Kube, opts: ManifestOptions, generate: bool) -> None:
    if kube.secret_exists(opts.namespace, opts.key_secret):
        return
    if not generate:
        print(f"warning: Secret {opts.key_secret} (the encryption key) does not exist yet; backups fail until it "
              f"does: kubectl -n {opts.namespace} create secret generic {opts.key_secret} "
              f"--from-literal={opts.key_secret_key}=\"$(kubectl etcdbackup keygen)\" (or install --generate-key)",
              file=sys.stderr)
        return
    kube.create_secret(opts.namespace, key_secret(opts, generate_key()))
    print(f"secret/{opts.key_secret} created with a new key; keep a copy outside the cluster (restores need it): "
          f"kubectl -n {opts.namespace} get secret {opts.key_secret} -o jsonpath='{{.data.{opts.key_secret_key}}}'"
          " | base64 -d", file=sys.stderr)


# ---------------------------------------------------------------------------------------- now
NOW_COLUMNS = [("id", "ID"), ("revision", "REVISION"), ("keys", "KEYS"), ("raw_size", "SIZE"),
               ("stored_size", "STORED"), ("verified", "VERIFIED"), ("member", "MEMBER")]


class BackupJobFailed(EtcdBackupError):
    """The manual backup Job failed."""


def _stderr_sink(chunk: bytes) -> None:
    sys.stderr.buffer.write(chunk)
    sys.stderr.buffer.flush()


def now_cmd(wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow the Job to its end")] = True,
            timeout: Annotated[str, typer.Option("--timeout", help="give up waiting after this long")] = "10m",
            logs: Annotated[bool, typer.Option("--logs/--no-logs", help="stream the backup's log to stderr")] = True,
            output: OutputOpt = "table", namespace: NamespaceOpt = DEFAULT_NAMESPACE, cronjob: CronJobOpt = None,
            kubeconfig: KubeconfigOpt = None, context: ContextOpt = None) -> None:
    """Run a backup now: a Job from the installed CronJob; prints the new snapshot's id, size and revision."""
    from ..k8s.api import AlreadyExists
    from ..k8s.cluster_store import find_cronjob
    from ..k8s.follow import follow_job

    check_output(output)
    limit = seconds(timeout, "--timeout") or 600.0
    kube = _connect(kubeconfig, context)
    try:
        cj, now = find_cronjob(kube, namespace, cronjob), datetime.now(UTC)
        job = create_unique(lambda j: kube.create_job(namespace, j), lambda u: manual_job(cj, now, u), AlreadyExists)
        name = job["metadata"]["name"]
        print(f"job {namespace}/{name} created", file=sys.stderr)
        if not wait:
            print(name)
            return
        end = follow_job(kube, namespace, name, time.monotonic() + limit, _stderr_sink if logs else None)
        pod = end.pods[-1]["metadata"]["name"] if end.pods else None
        log = kube.pod_log(namespace, pod) if pod else ""
        if not end.succeeded:
            if log and not logs:
                tail = log.rstrip("\n").splitlines()[-20:]
                print(f"--- last log lines of pod {pod}:", *tail, sep="\n", file=sys.stderr)
            raise BackupJobFailed(f"backup job {namespace}/{name} failed ({end.detail or 'no reason given'})"
                                  + (f": {_last_error_line(log)}" if log.strip() else ""))
        result = backup_result(log)
        if result is None:
            raise BackupJobFailed(f"backup job {namespace}/{name} succeeded but pod {pod} printed no result line")
    finally:
        kube.close()
    result["job"] = name
    print(render([result], output, NOW_COLUMNS, _now_cell, doc=None if output == "table" else result))


def _now_cell(key: str, value: Any) -> str:
    if key in ("raw_size", "stored_size"):
        return human_bytes(value)
    return "" if value is None else str(value)


# ---------------------------------------------------------------------------------------- list, snapshot get
def list_cmd(store: OptionalStoreOpt = None, output: OutputOpt = "table", s3_endpoint_url: S3EndpointOpt = None,
             s3_region: S3RegionOpt = None, namespace: NamespaceOpt = DEFAULT_NAMESPACE, cronjob: CronJobOpt = None,
             kubeconfig: KubeconfigOpt = None, context: ContextOpt = None, key_file: KeyFileOpt = None,
             key_env: KeyEnvOpt = None, allow_plaintext: AllowPlaintextOpt = False,
             allow_insecure_key_file: InsecureKeyFileOpt = False) -> None:
    """List the snapshots, newest first: of --store, else of the store the cluster's backup CronJob uses. With
    the key, each manifest is authenticated; without it, none can be."""
    if store:
        snapshots.list_store(store, output, s3_endpoint_url, s3_region,
                             get_key(key_file, key_env, allow_insecure_key_file), allow_plaintext)
        return
    from ..k8s.cluster_store import cluster_store, read_snapshots

    check_output(output)
    kube = _connect(kubeconfig, context)
    try:
        cj, cfg = cluster_store(kube, namespace, cronjob)
        found = read_snapshots(kube, cj, cfg)
    finally:
        kube.close()
    if output == "table":
        print(f"store {cfg.url} (CronJob {namespace}/{cfg.cronjob})", file=sys.stderr)
    snapshots.print_snapshots(found, output)


def get_cmd(snapshot: Annotated[str, typer.Argument(help="snapshot id or 'latest'")],
            file: Annotated[str, typer.Option("--file", "-f", help="where to write the etcd snapshot .db")],
            store: OptionalStoreOpt = None, key_file: KeyFileOpt = None, key_env: KeyEnvOpt = None,
            s3_endpoint_url: S3EndpointOpt = None, s3_region: S3RegionOpt = None, progress: ProgressOpt = None,
            namespace: NamespaceOpt = DEFAULT_NAMESPACE, cronjob: CronJobOpt = None,
            kubeconfig: KubeconfigOpt = None, context: ContextOpt = None, allow_plaintext: AllowPlaintextOpt = False,
            allow_insecure_key_file: InsecureKeyFileOpt = False) -> None:
    """Download a verified, decrypted etcd snapshot .db (default store: the cluster's, if it is S3)."""
    if store:
        st = get_store(store, s3_endpoint_url, s3_region)
    else:
        from ..k8s.cluster_store import cluster_store, open_s3

        kube = _connect(kubeconfig, context)
        try:
            _, cfg = cluster_store(kube, namespace, cronjob)
            if not cfg.is_s3:
                raise UsageError(f"the cluster's store {cfg.url} is a volume inside the cluster; only S3 stores "
                                 "are read from here: pass --store with a copy of it")
            st = open_s3(kube, cfg)
        finally:
            kube.close()
    snapshots.download(st, snapshot, get_key(key_file, key_env, allow_insecure_key_file), file, progress,
                       allow_plaintext)


def catalog_cmd(store: StoreOpt, s3_endpoint_url: S3EndpointOpt = None, s3_region: S3RegionOpt = None,
                key_file: KeyFileOpt = None, key_env: KeyEnvOpt = None,
                allow_insecure_key_file: InsecureKeyFileOpt = False) -> None:
    """Print the store's snapshots and the agent's run record as one JSON line (`status` reads it in-cluster)."""
    print(catalog_of(get_store(store, s3_endpoint_url, s3_region),
                     get_key(key_file, key_env, allow_insecure_key_file)).to_json())


# ---------------------------------------------------------------------------------------- status
STATUS_COLUMNS = [("member", "MEMBER"), ("node", "NODE"), ("leader", "LEADER"), ("db_size", "DB SIZE"),
                  ("db_size_in_use", "IN USE"), ("raft_index", "RAFT INDEX"), ("healthy", "HEALTH"),
                  ("version", "VERSION")]


def _status_cell(key: str, value: Any) -> str:
    if key in ("db_size", "db_size_in_use"):
        return human_bytes(value) if value is not None else "?"
    if key == "leader":
        return "?" if value is None else ("yes" if value else "no")
    if key == "healthy":
        return "healthy" if value else "UNHEALTHY"
    return ("" if key == "version" else "?") if value is None else str(value)


def _max_age(kube: Kube, namespace: str, cronjob: str, given: str | None) -> float:
    """--max-age, else the exporter's setting (ConfigMap <cronjob>-monitor), else 1h."""
    if given:
        return seconds(given, "--max-age") or 3600.0
    try:
        data = kube.get_configmap(namespace, f"{cronjob}-monitor").get("data") or {}
        return seconds(data.get("ETCDBACKUP_MAX_AGE") or DEFAULT_MAX_AGE, "ETCDBACKUP_MAX_AGE") or 3600.0
    except EtcdBackupError:
        return seconds(DEFAULT_MAX_AGE, "--max-age") or 3600.0


def _backup_summary(kube: Kube, namespace: str, cronjob: str | None, max_age: str | None,
                    store: str | None, s3_endpoint_url: str | None, s3_region: str | None) -> dict[str, Any]:
    from ..k8s.cluster_store import cluster_store, read_catalog

    try:
        if store:
            cat = catalog_of(get_store(store, s3_endpoint_url, s3_region))
            source, limit = "--store", seconds(max_age or DEFAULT_MAX_AGE, "--max-age") or 3600.0
        else:
            cj, cfg = cluster_store(kube, namespace, cronjob)
            cat = read_catalog(kube, cj, cfg)
            source, limit = f"CronJob {namespace}/{cfg.cronjob}", _max_age(kube, namespace, cfg.cronjob, max_age)
    except EtcdBackupError as e:
        return {"ok": False, "error": str(e)}
    now = datetime.now(UTC)
    fresh = assess(cat.snapshots, limit, now)
    rs = cat.run_status
    out: dict[str, Any] = {"ok": not fresh.stale, "store": cat.store_url, "source": source,
                           "snapshots": len(cat.snapshots), "freshness": fresh.message,
                           "max_age_seconds": limit, "failures_total": rs.failures_total,
                           "last_failure_time": rs.last_failure_time or None,
                           "last_failure_message": rs.last_failure_message or None, "problems": cat.problems}
    if fresh.newest is not None:
        out |= {"last_backup_id": fresh.newest.id, "last_backup_time": fresh.newest.created_at,
                "last_backup_age_seconds": int(fresh.age_seconds or 0),
                "last_backup_revision": fresh.newest.etcd_revision}
    return out


def _print_backup_summary(b: dict[str, Any]) -> None:
    if b.get("error"):
        print(f"Backups: unknown: {b['error']}")
        return
    print(f"Backups: {b['store']} ({b['source']}, {b['snapshots']} snapshots)")
    if "last_backup_id" in b:
        print(f"  last backup:  {b['last_backup_id']}, {format_duration(b['last_backup_age_seconds'])} ago "
              f"(revision {b['last_backup_revision']})")
    print(f"  freshness:    {b['freshness']}")
    if b["last_failure_time"]:
        age = (datetime.now(UTC) - _parse_time(b["last_failure_time"])).total_seconds()
        print(f"  last failure: {format_duration(age)} ago: {b['last_failure_message']} "
              f"({b['failures_total']} failed runs in total)")
    else:
        print("  last failure: none recorded")


def _parse_time(text: str) -> datetime:
    try:
        return parse_time(text)
    except EtcdBackupError:
        return datetime.now(UTC)


def status_cmd(output: OutputOpt = "table", etcd_namespace: EtcdNamespaceOpt = ETCD_NAMESPACE,
               etcd_selector: EtcdSelectorOpt = ETCD_SELECTOR,
               max_age: Annotated[str | None, typer.Option(
                   "--max-age", help="backups older than this are stale (default: the installed exporter's)")]
               = None, store: OptionalStoreOpt = None, s3_endpoint_url: S3EndpointOpt = None,
               s3_region: S3RegionOpt = None, namespace: NamespaceOpt = DEFAULT_NAMESPACE, cronjob: CronJobOpt = None,
               kubeconfig: KubeconfigOpt = None, context: ContextOpt = None) -> None:
    """Health of each etcd member and of the backups; exit 1 if a member is unhealthy or backups are stale."""
    from ..k8s.probe import etcd_members, probe_members

    check_output(output)
    kube = _connect(kubeconfig, context)
    try:
        rows = probe_members(kube, etcd_members(kube, etcd_namespace, etcd_selector))
        backups = _backup_summary(kube, namespace, cronjob, max_age, store, s3_endpoint_url, s3_region)
    finally:
        kube.close()
    warnings = warnings_for(rows)
    if output == "table":
        print(render([r.as_dict() for r in rows], "table", STATUS_COLUMNS, _status_cell))
        print()
        _print_backup_summary(backups)
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
    else:
        print(render([], output, doc={"members": [r.as_dict() for r in rows], "backups": backups,
                                      "warnings": warnings}))
    if not all(r.healthy for r in rows) or not backups["ok"]:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------- restore (--plan)
def restore_cmd(
    snapshot: Annotated[str, typer.Argument(help="snapshot id or 'latest'")],
    store: OptionalStoreOpt = None,
    data_dir: Annotated[str | None, typer.Option(help="this member's etcd --data-dir")] = None,
    name: Annotated[str | None, typer.Option(help="this member's etcd --name")] = None,
    initial_cluster: Annotated[str | None, typer.Option(help="name1=https://ip1:2380,name2=... (all members)")]
    = None,
    initial_advertise_peer_urls: Annotated[str | None, typer.Option(help="this member's peer URL(s)")] = None,
    initial_cluster_token: Annotated[str | None, typer.Option(
        help="new cluster token, the same on every member (default: restore-<snapshot id>)")] = None,
    bump_revision: Annotated[int, typer.Option(
        help="raise the revision by N so watchers notice (0 to skip; needs a recent etcdutl)")]
    = DEFAULT_BUMP_REVISION,
    mark_compacted: Annotated[bool | None, typer.Option(
        "--mark-compacted/--no-mark-compacted", help="default: on when --bump-revision > 0")] = None,
    move_aside: Annotated[bool, typer.Option(help="move an existing data dir aside (never deleted)")] = False,
    wal_dir: Annotated[str | None, typer.Option(help="separate WAL dir, if the member uses one")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan, change nothing")] = False,
    key_file: KeyFileOpt = None, key_env: KeyEnvOpt = None,
    etcdutl: Annotated[str | None, typer.Option(help="path to etcdutl (or etcdctl for etcd 3.4)")] = None,
    output: OutputOpt = "table", s3_endpoint_url: S3EndpointOpt = None, s3_region: S3RegionOpt = None,
    progress: ProgressOpt = None, allow_plaintext: AllowPlaintextOpt = False,
    allow_insecure_key_file: InsecureKeyFileOpt = False,
    plan: Annotated[bool, typer.Option("--plan", help="print the runbook for restoring every member of the "
                                       "cluster's etcd (read from the etcd pods); changes nothing",
                                       rich_help_panel="Kubernetes")] = False,
    write_dir: Annotated[str | None, typer.Option("--write-dir", help="with --plan: write one script per node "
                                                  "and README.txt here", rich_help_panel="Kubernetes")] = None,
    node_key_file: Annotated[str | None, typer.Option(
        "--node-key-file", help="with --plan: where the key file will be on each node", rich_help_panel="Kubernetes")]
    = None,
    manifests_dir: Annotated[str | None, typer.Option(
        "--manifests-dir", help="with --plan: the kubelet's static pod dir", rich_help_panel="Kubernetes")] = None,
    etcd_namespace: EtcdNamespaceOpt = ETCD_NAMESPACE, etcd_selector: EtcdSelectorOpt = ETCD_SELECTOR,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE, cronjob: CronJobOpt = None,
    kubeconfig: KubeconfigOpt = None, context: ContextOpt = None,
) -> None:
    """Restore one member's data dir from a snapshot; --plan: the runbook to restore the whole cluster's etcd."""
    if plan:
        _restore_plan(snapshot, store, s3_endpoint_url, s3_region, initial_cluster_token, output, write_dir,
                      node_key_file, manifests_dir, etcd_namespace, etcd_selector, namespace, cronjob, kubeconfig,
                      context)
        return
    if write_dir:
        raise UsageError("--write-dir needs --plan")
    missing = [flag for flag, v in (("--store", store), ("--data-dir", data_dir), ("--name", name),
                                    ("--initial-cluster", initial_cluster),
                                    ("--initial-advertise-peer-urls", initial_advertise_peer_urls)) if not v]
    if missing:
        raise UsageError(f"missing option(s) {', '.join(missing)} (or use --plan for the whole-cluster runbook)")
    assert store and data_dir and name and initial_cluster and initial_advertise_peer_urls
    snapshots.restore_member(
        snapshot=snapshot, store=store, data_dir=data_dir, name=name, initial_cluster=initial_cluster,
        initial_advertise_peer_urls=initial_advertise_peer_urls, initial_cluster_token=initial_cluster_token,
        bump_revision=bump_revision, mark_compacted=mark_compacted, move_aside=move_aside, wal_dir=wal_dir,
        dry_run=dry_run, key_file=key_file, key_env=key_env, etcdutl=etcdutl, output=output,
        s3_endpoint_url=s3_endpoint_url, s3_region=s3_region, progress=progress, allow_plaintext=allow_plaintext,
        allow_insecure_key_file=allow_insecure_key_file)


def _restore_plan(ref: str, store: str | None, s3_endpoint_url: str | None, s3_region: str | None,
                  token: str | None, output: str, write_dir: str | None, node_key_file: str | None,
                  manifests_dir: str | None, etcd_namespace: str, etcd_selector: str, namespace: str,
                  cronjob: str | None, kubeconfig: str | None, context: str | None) -> None:
    from ..k8s.cluster_store import cluster_store, read_snapshots
    from ..k8s.probe import etcd_members, pod_nodes

    check_output(output)
    kube = _connect(kubeconfig, context)
    try:
        members = etcd_members(kube, etcd_namespace, etcd_selector)
        api_nodes = pod_nodes(kube, etcd_namespace, APISERVER_SELECTOR)
        cfg: ClusterStore | None = None
        if store:
            st = get_store(store, s3_endpoint_url, s3_region)
            snap = resolve(st, ref)
            store_url = st.url
        else:
            cj, cfg = cluster_store(kube, namespace, cronjob)
            snap = pick(read_snapshots(kube, cj, cfg), ref, cfg.url)
            store_url, s3_endpoint_url, s3_region = cfg.url, cfg.s3_endpoint_url, cfg.s3_region
    finally:
        kube.close()
    aws_secret = next(iter({r.name for r in cfg.aws_secret_env.values()} | set(cfg.aws_env_from)), None) \
        if cfg else None
    opts = RunbookOptions(store_url=store_url, s3_endpoint_url=s3_endpoint_url, s3_region=s3_region,
                          namespace=namespace, key_secret=cfg.key_secret if cfg else None, aws_secret=aws_secret,
                          key_file=node_key_file or DEFAULT_KEY_FILE, token=token,
                          manifests_dir=manifests_dir or DEFAULT_MANIFESTS_DIR)
    book = build_runbook(members, snap, api_nodes, opts)
    if write_dir:
        _write_scripts(book, Path(write_dir))
    if output == "table":
        print(book.text())
    else:
        print(render([], output, doc=book.as_dict()))


def _write_scripts(book: Runbook, directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "README.txt").write_text(book.text() + "\n")
        for node, script in book.node_scripts().items():
            path = directory / f"{node}.sh"
            path.write_text(script)
            os.chmod(path, 0o755)
            print(f"wrote {path}", file=sys.stderr)
    except OSError as e:
        raise UsageError(f"--write-dir {directory}: {e.strerror or e}") from None
    print(f"wrote {directory / 'README.txt'}", file=sys.stderr)
