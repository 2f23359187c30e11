"""Kubernetes objects (plain dicts) that run the backup agent in a cluster.

Pure logic: no I/O, no API calls. The Helm chart in chart/ renders the same objects from its values;
`to_helm_values()` maps options to those values and tests/test_chart.py checks that, for the same input,
`helm template` and `render_manifests()` give identical objects (same labels too: neither side emits
`helm.sh/chart` or `app.kubernetes.io/managed-by`).

The agent needs no Kubernetes API access at all: its ServiceAccount has no Role and mounts no token.
An optional, unbound-by-default "operator" Role lists what a person running the plugin needs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import yaml

from .. import __version__
from ..cron import schedule_error
from ..durations import DurationError, parse_duration
from ..errors import UsageError

APP_NAME = "etcd-backup"  # app.kubernetes.io/name, and the Helm chart's name
PART_OF = "kubectl-etcdbackup"
IMAGE_REPOSITORY = "ghcr.io/kubectl-etcdbackup/agent"
NONROOT_ID = 65532  # the image's default USER; the exporter always runs as this
KEY_DIR = "/etc/etcdbackup/key"
KEY_FILE = f"{KEY_DIR}/key"  # the Secret's key is always projected to this file name
# The agent refuses a key file others can read (keys.check_key_file_permissions): owner-only for a root pod;
# owner root, group = the pod's fsGroup, group-readable for a non-root pod. The chart writes the same modes.
KEY_MODE_OWNER = 0o400
KEY_MODE_FS_GROUP = 0o440
WORK_DIR = "/tmp"  # an emptyDir: the root filesystem is read-only
CONTROL_PLANE = "node-role.kubernetes.io/control-plane"
AWS_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

# The chart's values.schema.json uses the same patterns.
CRON_RE = re.compile(r"^(@(annually|yearly|monthly|weekly|daily|midnight|hourly)"
                     r"|[0-9A-Za-z*/,?-]+( [0-9A-Za-z*/,?-]+){4})$")
DURATION_RE = re.compile(r"^[1-9][0-9]*[smhdw]$")  # one unit, so Helm can turn it into seconds
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,50}[a-z0-9])?$")  # DNS-1035, <= 52 (CronJob limit)
NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
SECRET_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")
S3_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
ENDPOINT_RE = re.compile(r"^https?://[^\s,]+$")
FILE_NAME_RE = re.compile(r"^[^/\s][^\s]*$")
TIME_ZONE_RE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")
ABS_DIR_RE = re.compile(r"^/[^\s]*[^/\s]$")
RESERVED_PATH_RE = re.compile(r"^/(tmp|etc|proc|sys|dev)(/|$)")  # the store mount cannot go there

VERIFY_MODES = ("hash", "status", "restore")
# ManifestOptions field -> agent flag, in argv order; the chart's values are the camelCase names.
RETENTION_FLAGS = (("keep_last", "--keep-last"), ("keep_within", "--keep-within"), ("keep_hourly", "--keep-hourly"),
                   ("keep_daily", "--keep-daily"), ("keep_weekly", "--keep-weekly"),
                   ("keep_monthly", "--keep-monthly"))
# The etcd client files the agent reads, each mounted alone (never the PKI dir, which also holds ca.key and
# the server/peer keys): ManifestOptions field -> volume name (the chart uses the same names).
PKI_FILES = {"etcd_ca_file": "etcd-ca", "etcd_cert_file": "etcd-cert", "etcd_key_file": "etcd-key"}
CONCURRENCY_POLICIES = ("Forbid", "Replace", "Allow")
PULL_POLICIES = ("IfNotPresent", "Always", "Never")
SSE_MODES = ("AES256", "aws:kms")


class ManifestError(UsageError, ValueError):
    """The options cannot give valid manifests; the message names the option (the CLI exits 2)."""


def _default_resources() -> dict[str, Any]:
    """The backup container's; its ephemeral-storage limit covers the /tmp emptyDir (work_dir_size_limit) too."""
    return {"requests": {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "1Gi"},
            "limits": {"memory": "1Gi", "ephemeral-storage": "4Gi"}}


def _default_exporter_resources() -> dict[str, Any]:
    return {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


def _default_tolerations() -> list[dict[str, Any]]:
    return [{"key": CONTROL_PLANE, "operator": "Exists", "effect": "NoSchedule"}]


@dataclass
class ManifestOptions:
    """Everything the in-cluster objects depend on. Defaults fit a kubeadm cluster."""

    namespace: str = "etcd-backup"
    create_namespace: bool = True  # a Namespace labelled for Pod Security "privileged"
    name: str = "etcd-backup"  # base name of every object (and app.kubernetes.io/instance)
    image: str = f"{IMAGE_REPOSITORY}:{__version__}"
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: list[str] = field(default_factory=list)
    service_account_annotations: dict[str, str] = field(default_factory=dict)  # e.g. IRSA role-arn

    # CronJob and Job policy
    schedule: str = "*/15 * * * *"
    time_zone: str | None = None
    suspend: bool = False
    concurrency_policy: str = "Forbid"
    starting_deadline_seconds: int = 300
    successful_jobs_history_limit: int = 3
    failed_jobs_history_limit: int = 3
    backoff_limit: int = 1
    active_deadline_seconds: int = 900
    command_timeout: str = "10m"  # the agent's bound on each etcdutl/etcdctl run; below active_deadline_seconds
    idle_timeout: str = "30s"  # the agent gives up on a snapshot stream that sends nothing for this long

    # Store: file:///dir (a PVC mounted at /dir) or s3://bucket/prefix
    store: str = "file:///backups"
    pvc_create: bool = True  # False: use an existing claim named pvc_name
    pvc_name: str | None = None  # default "<name>-data"
    pvc_size: str = "20Gi"
    pvc_storage_class: str | None = None  # None: the cluster's default class
    pvc_access_modes: list[str] = field(default_factory=lambda: ["ReadWriteOnce"])
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_existing_secret: str | None = None  # keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY[, AWS_SESSION_TOKEN]
    s3_sse: str | None = None  # AES256 | aws:kms
    s3_sse_kms_key_id: str | None = None

    # Encryption key: a Secret, mounted as a file (never in argv or env)
    key_secret: str = "etcd-backup-key"
    key_secret_key: str = "key"

    # etcd (kubeadm layout)
    etcd_endpoints: list[str] = field(default_factory=lambda: ["https://127.0.0.1:2379"])
    etcd_pki_dir: str = "/etc/kubernetes/pki/etcd"
    etcd_ca_file: str = "ca.crt"
    etcd_cert_file: str = "healthcheck-client.crt"
    etcd_key_file: str = "healthcheck-client.key"

    # What the agent does. Retention rules (None: off) keep the union of what each keeps; the newest verified
    # snapshot is always kept. Default: everything of the last day, then the newest of each day for a week.
    keep_last: int | None = None
    keep_within: str | None = "24h"
    keep_hourly: int | None = None
    keep_daily: int | None = 7
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    verify: str = "status"
    pushgateway_url: str | None = None

    # Monitor (exporter reading the store)
    max_age: str = "1h"
    exporter_enabled: bool = True
    exporter_port: int = 9101

    # Pods
    resources: dict[str, Any] = field(default_factory=_default_resources)
    exporter_resources: dict[str, Any] = field(default_factory=_default_exporter_resources)
    # verify=status|restore needs about the db size in /tmp; etcd's default quota is 2 GiB
    work_dir_size_limit: str = "3Gi"
    node_selector: dict[str, str] = field(default_factory=lambda: {CONTROL_PLANE: ""})
    tolerations: list[dict[str, Any]] = field(default_factory=_default_tolerations)
    priority_class_name: str | None = None
    # kubeadm's etcd client key is root-only (0600): the backup pod runs as uid 0 unless told otherwise.
    run_as_non_root: bool = False
    run_as_user: int = 0
    run_as_group: int = 0

    # Optional Role for the people/groups running the plugin (`now`, `status`, logs). Node-root equivalent: it
    # creates Jobs in a privileged namespace, where a pod may mount any host path as root. Cluster admins only.
    operator_role: bool = False
    operator_subjects: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class StoreSpec:
    url: str  # normalised
    type: str  # "file" | "s3"
    path: str = ""  # file: mount path
    bucket: str = ""
    prefix: str = ""


def parse_store(url: str) -> StoreSpec:
    """Split a store URL; file:///dir gives the PVC mount path, s3://bucket/prefix the bucket and prefix."""
    p = urlparse(url)
    if p.scheme == "file":
        path = p.path.rstrip("/")
        if p.netloc or not path.startswith("/") or p.query or p.fragment:
            raise ManifestError(f"store: file store URL must be file:///absolute/dir, got {url!r}")
        if RESERVED_PATH_RE.match(path):
            raise ManifestError(f"store: {path} is reserved inside the container; use e.g. file:///backups")
        return StoreSpec(url=f"file://{path}", type="file", path=path)
    if p.scheme == "s3":
        if not S3_BUCKET_RE.match(p.netloc or ""):
            raise ManifestError(f"store: S3 URL must be s3://bucket[/prefix] with a valid bucket name, got {url!r}")
        prefix = p.path.strip("/")
        return StoreSpec(url=f"s3://{p.netloc}" + (f"/{prefix}" if prefix else ""), type="s3",
                         bucket=p.netloc, prefix=prefix)
    raise ManifestError(f"store: unsupported URL {url!r} (use file:///dir or s3://bucket/prefix)")


def duration_seconds(text: str) -> float:
    """Seconds of a positive duration such as 90s, 1h30m, 7d (durations.parse_duration)."""
    try:
        secs = parse_duration(text)
    except DurationError as e:
        raise ManifestError(str(e)) from None
    _check(secs > 0, f"invalid duration {text!r}: must be more than 0")
    return secs


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ManifestError(message)


def validate_options(opts: ManifestOptions) -> StoreSpec:
    """Raise ManifestError (one line, naming the option) for anything the cluster would reject later."""
    _check(bool(NAME_RE.match(opts.name)), f"name: {opts.name!r} must be a DNS-1035 label of at most 52 characters")
    _check(bool(NAMESPACE_RE.match(opts.namespace)), f"namespace: {opts.namespace!r} is not a valid namespace")
    _check(bool(opts.image) and not any(c.isspace() for c in opts.image) and _image_parts(opts.image)[1] != "",
           f"image: {opts.image!r} needs an explicit :tag or @digest")
    _check(opts.image_pull_policy in PULL_POLICIES, f"image_pull_policy: use one of {', '.join(PULL_POLICIES)}")
    _check((why := schedule_error(opts.schedule)) is None, f"schedule: {why}")
    _check(not opts.time_zone or bool(TIME_ZONE_RE.match(opts.time_zone)), "time_zone: use an IANA name like Etc/UTC")
    _check(opts.concurrency_policy in CONCURRENCY_POLICIES,
           f"concurrency_policy: use one of {', '.join(CONCURRENCY_POLICIES)}")
    for fld in ("starting_deadline_seconds", "active_deadline_seconds"):
        _check(getattr(opts, fld) >= 1, f"{fld}: must be >= 1")
    for fld in ("successful_jobs_history_limit", "failed_jobs_history_limit", "backoff_limit"):
        _check(getattr(opts, fld) >= 0, f"{fld}: must be >= 0")
    store = parse_store(opts.store)
    if store.type == "file":
        _check(bool(QUANTITY_RE.match(opts.pvc_size)), f"pvc_size: {opts.pvc_size!r} is not a quantity like 20Gi")
        _check(opts.pvc_create or bool(opts.pvc_name), "pvc_name: required when pvc_create is false")
        if opts.pvc_name:
            _check(bool(SUBDOMAIN_RE.match(opts.pvc_name)), f"pvc_name: {opts.pvc_name!r} is not a valid name")
        _check(bool(opts.pvc_access_modes), "pvc_access_modes: at least one")
    else:
        _check(opts.s3_sse in (None, *SSE_MODES), f"s3_sse: use one of {', '.join(SSE_MODES)}")
        _check(not opts.s3_sse_kms_key_id or opts.s3_sse == "aws:kms", "s3_sse_kms_key_id: needs s3_sse=aws:kms")
        if opts.s3_existing_secret:
            _check(bool(SUBDOMAIN_RE.match(opts.s3_existing_secret)), "s3_existing_secret: not a valid Secret name")
        if opts.s3_endpoint_url:
            _check(bool(ENDPOINT_RE.match(opts.s3_endpoint_url)), "s3_endpoint_url: must be an http(s) URL")
    _check(bool(SUBDOMAIN_RE.match(opts.key_secret)), f"key_secret: {opts.key_secret!r} is not a valid Secret name")
    _check(bool(SECRET_KEY_RE.match(opts.key_secret_key)), "key_secret_key: not a valid Secret key")
    _check(bool(opts.etcd_endpoints) and all(ENDPOINT_RE.match(e) for e in opts.etcd_endpoints),
           "etcd_endpoints: give one or more http(s)://host:port URLs")
    _check(bool(ABS_DIR_RE.match(opts.etcd_pki_dir.rstrip("/"))), "etcd_pki_dir: must be an absolute dir")
    for fld in PKI_FILES:
        _check(bool(FILE_NAME_RE.match(getattr(opts, fld))), f"{fld}: must be a path relative to etcd_pki_dir")
    _check(len({getattr(opts, fld) for fld in PKI_FILES}) == len(PKI_FILES),
           f"{', '.join(PKI_FILES)}: must be three different files (each is its own mount)")
    for fld, _ in RETENTION_FLAGS:
        value = getattr(opts, fld)
        if fld == "keep_within" and value is not None:
            duration_seconds(value)
        elif value is not None:
            _check(value >= 1, f"{fld}: must be >= 1 (None: rule off)")
    duration_seconds(opts.idle_timeout)
    _check(duration_seconds(opts.command_timeout) < opts.active_deadline_seconds,
           "command_timeout: must be below active_deadline_seconds")
    duration_seconds(opts.max_age)
    _check(opts.verify in VERIFY_MODES, f"verify: use one of {', '.join(VERIFY_MODES)}")
    _check(1 <= opts.exporter_port <= 65535, "exporter_port: must be 1..65535")
    _check(not opts.run_as_non_root or opts.run_as_user != 0, "run_as_user: must not be 0 with run_as_non_root")
    _check(bool(QUANTITY_RE.match(opts.work_dir_size_limit)), "work_dir_size_limit: not a quantity like 3Gi")
    return store


# --- building blocks ---------------------------------------------------------------------------------------

def labels(opts: ManifestOptions, component: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": opts.name,
        "app.kubernetes.io/version": __version__,
        "app.kubernetes.io/part-of": PART_OF,
    }
    if component:
        out["app.kubernetes.io/component"] = component
    return out


def selector_labels(opts: ManifestOptions, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": opts.name,
            "app.kubernetes.io/component": component}


def _meta(opts: ManifestOptions, name: str, component: str | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": opts.namespace, "labels": labels(opts, component)}


def pvc_name(opts: ManifestOptions) -> str:
    return opts.pvc_name or f"{opts.name}-data"


def monitor_config_name(opts: ManifestOptions) -> str:
    return f"{opts.name}-monitor"


def exporter_name(opts: ManifestOptions) -> str:
    return f"{opts.name}-exporter"


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def _backup_pod_security(opts: ManifestOptions) -> dict[str, Any]:
    sc: dict[str, Any] = {"runAsNonRoot": opts.run_as_non_root, "runAsUser": opts.run_as_user,
                          "runAsGroup": opts.run_as_group}
    if opts.run_as_non_root:  # lets the non-root user read the 0440 key file and write the PVC
        sc["fsGroup"] = opts.run_as_group
        sc["fsGroupChangePolicy"] = "OnRootMismatch"
    sc["seccompProfile"] = {"type": "RuntimeDefault"}
    return sc


def _exporter_pod_security() -> dict[str, Any]:
    """Non-root; fsGroup makes the 0440 key file (owner root) readable through the group."""
    return {"runAsNonRoot": True, "runAsUser": NONROOT_ID, "runAsGroup": NONROOT_ID, "fsGroup": NONROOT_ID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def _scheduling(opts: ManifestOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if opts.image_pull_secrets:
        out["imagePullSecrets"] = [{"name": n} for n in opts.image_pull_secrets]
    if opts.priority_class_name:
        out["priorityClassName"] = opts.priority_class_name
    if opts.node_selector:
        out["nodeSelector"] = dict(opts.node_selector)
    if opts.tolerations:
        out["tolerations"] = [dict(t) for t in opts.tolerations]
    return out


def _aws_env(opts: ManifestOptions, store: StoreSpec) -> list[dict[str, Any]]:
    """S3 credentials from the existing Secret (absent: IRSA / instance profile)."""
    if store.type != "s3" or not opts.s3_existing_secret:
        return []
    out = []
    for k in AWS_SECRET_KEYS:
        ref: dict[str, Any] = {"name": opts.s3_existing_secret, "key": k}
        if k == "AWS_SESSION_TOKEN":
            ref["optional"] = True
        out.append({"name": k, "valueFrom": {"secretKeyRef": ref}})
    return out


def _tmp_volume(opts: ManifestOptions) -> dict[str, Any]:
    """The /tmp scratch emptyDir, size-limited (the kubelet evicts the pod beyond it)."""
    return {"name": "tmp", "emptyDir": {"sizeLimit": opts.work_dir_size_limit}}


def _key_volume(opts: ManifestOptions, mode: int) -> dict[str, Any]:
    """The key Secret as the file KEY_FILE; mode KEY_MODE_OWNER (root pod) or KEY_MODE_FS_GROUP (fsGroup pod)."""
    return {"name": "encryption-key", "secret": {"secretName": opts.key_secret, "defaultMode": mode,
                                                 "items": [{"key": opts.key_secret_key, "path": "key"}]}}


_KEY_MOUNT = {"name": "encryption-key", "mountPath": KEY_DIR, "readOnly": True}


def pki_path(opts: ManifestOptions, fld: str) -> str:
    """Node path (and container path: mounted at the same place) of one of PKI_FILES."""
    return f"{opts.etcd_pki_dir.rstrip('/')}/{getattr(opts, fld)}"


def _pki_volumes(opts: ManifestOptions) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(mounts, volumes): each etcd client file alone, a read-only hostPath of type File at the same path."""
    mounts = [{"name": name, "mountPath": pki_path(opts, fld), "readOnly": True} for fld, name in PKI_FILES.items()]
    volumes = [{"name": name, "hostPath": {"path": pki_path(opts, fld), "type": "File"}}
               for fld, name in PKI_FILES.items()]
    return mounts, volumes


def retention_args(opts: ManifestOptions) -> list[str]:
    """The agent's --keep-* flags for the rules that are on."""
    args: list[str] = []
    for fld, flag in RETENTION_FLAGS:
        value = getattr(opts, fld)
        if value is not None:
            args += [flag, str(value)]
    return args


def backup_args(opts: ManifestOptions, store: StoreSpec | None = None) -> list[str]:
    """Arguments after `kubectl-etcdbackup agent backup` (design.md); no secret ever appears here."""
    store = store or parse_store(opts.store)
    args = ["--store", store.url, "--endpoints", ",".join(opts.etcd_endpoints),
            "--cacert", pki_path(opts, "etcd_ca_file"), "--cert", pki_path(opts, "etcd_cert_file"),
            "--key", pki_path(opts, "etcd_key_file"), "--key-file", KEY_FILE, *retention_args(opts),
            "--verify", opts.verify, "--work-dir", WORK_DIR, "--command-timeout", opts.command_timeout,
            "--idle-timeout", opts.idle_timeout]
    if store.type == "s3":
        for flag, value in (("--s3-endpoint-url", opts.s3_endpoint_url), ("--s3-region", opts.s3_region),
                            ("--s3-sse", opts.s3_sse), ("--s3-sse-kms-key-id", opts.s3_sse_kms_key_id)):
            if value:
                args += [flag, value]
    if opts.pushgateway_url:
        args += ["--pushgateway", opts.pushgateway_url]
    return args


def monitor_config_data(opts: ManifestOptions, store: StoreSpec | None = None) -> dict[str, str]:
    """The exporter's settings, as the ETCDBACKUP_* variables it reads (envFrom)."""
    store = store or parse_store(opts.store)
    data = {"ETCDBACKUP_STORE": store.url, "ETCDBACKUP_MAX_AGE": opts.max_age,
            "ETCDBACKUP_LISTEN": f"0.0.0.0:{opts.exporter_port}"}
    if store.type == "s3":
        if opts.s3_endpoint_url:
            data["ETCDBACKUP_S3_ENDPOINT_URL"] = opts.s3_endpoint_url
        if opts.s3_region:
            data["ETCDBACKUP_S3_REGION"] = opts.s3_region
    return data


def config_checksum(data: dict[str, str]) -> str:
    """sha256 of the data as Helm's `toJson | sha256sum` writes it (sorted keys, Go's HTML escaping)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for c, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                   ("\u2029", "\\u2029")):
        text = text.replace(c, esc)
    return hashlib.sha256(text.encode()).hexdigest()


# --- objects -----------------------------------------------------------------------------------------------

def namespace(opts: ManifestOptions) -> dict[str, Any]:
    # hostPath + hostNetwork + uid 0 are only allowed by the "privileged" Pod Security level.
    lab = labels(opts) | {"pod-security.kubernetes.io/enforce": "privileged",
                          "pod-security.kubernetes.io/warn": "privileged"}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": opts.namespace, "labels": lab}}


def service_account(opts: ManifestOptions) -> dict[str, Any]:
    meta = _meta(opts, opts.name)
    if opts.service_account_annotations:
        meta["annotations"] = dict(opts.service_account_annotations)
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": False}


def monitor_config(opts: ManifestOptions, store: StoreSpec | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(opts, monitor_config_name(opts), "monitor"),
            "data": monitor_config_data(opts, store)}


def persistent_volume_claim(opts: ManifestOptions) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": list(opts.pvc_access_modes),
                            "resources": {"requests": {"storage": opts.pvc_size}}}
    if opts.pvc_storage_class:
        spec["storageClassName"] = opts.pvc_storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(opts, pvc_name(opts), "storage"),
            "spec": spec}


def cron_job(opts: ManifestOptions, store: StoreSpec | None = None) -> dict[str, Any]:
    store = store or parse_store(opts.store)
    pki_mounts, pki_volumes = _pki_volumes(opts)
    mounts: list[dict[str, Any]] = [*pki_mounts, dict(_KEY_MOUNT), {"name": "tmp", "mountPath": WORK_DIR}]
    key_mode = KEY_MODE_FS_GROUP if opts.run_as_non_root else KEY_MODE_OWNER
    volumes: list[dict[str, Any]] = [*pki_volumes, _key_volume(opts, key_mode), _tmp_volume(opts)]
    if store.type == "file":
        mounts.append({"name": "backups", "mountPath": store.path})
        volumes.append({"name": "backups", "persistentVolumeClaim": {"claimName": pvc_name(opts)}})
    container: dict[str, Any] = {
        "name": "backup",
        "image": opts.image,
        "imagePullPolicy": opts.image_pull_policy,
        "command": ["kubectl-etcdbackup", "agent", "backup"],
        "args": backup_args(opts, store),
    }
    env = _aws_env(opts, store)
    if env:
        container["env"] = env
    container |= {"resources": copy.deepcopy(opts.resources), "securityContext": _container_security(),
                  "volumeMounts": mounts}
    pod_spec: dict[str, Any] = {
        "serviceAccountName": opts.name,
        "automountServiceAccountToken": False,
        "restartPolicy": "Never",
        "hostNetwork": True,  # etcd listens on the node's 127.0.0.1
        "dnsPolicy": "ClusterFirstWithHostNet",
        **_scheduling(opts),
        "securityContext": _backup_pod_security(opts),
        "containers": [container],
        "volumes": volumes,
    }
    spec: dict[str, Any] = {"schedule": opts.schedule}
    if opts.time_zone:
        spec["timeZone"] = opts.time_zone
    spec |= {
        "suspend": opts.suspend,
        "concurrencyPolicy": opts.concurrency_policy,
        "startingDeadlineSeconds": opts.starting_deadline_seconds,
        "successfulJobsHistoryLimit": opts.successful_jobs_history_limit,
        "failedJobsHistoryLimit": opts.failed_jobs_history_limit,
        "jobTemplate": {
            "metadata": {"labels": labels(opts, "backup")},
            "spec": {
                "backoffLimit": opts.backoff_limit,
                "activeDeadlineSeconds": opts.active_deadline_seconds,
                "template": {"metadata": {"labels": labels(opts, "backup")}, "spec": pod_spec},
            },
        },
    }
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": _meta(opts, opts.name, "backup"), "spec": spec}


def exporter_deployment(opts: ManifestOptions, store: StoreSpec | None = None) -> dict[str, Any]:
    store = store or parse_store(opts.store)
    mounts: list[dict[str, Any]] = [dict(_KEY_MOUNT), {"name": "tmp", "mountPath": WORK_DIR}]
    volumes: list[dict[str, Any]] = [_key_volume(opts, KEY_MODE_FS_GROUP), _tmp_volume(opts)]
    if store.type == "file":  # the agent writes 0644 files, readable by the non-root exporter
        mounts.append({"name": "backups", "mountPath": store.path, "readOnly": True})
        volumes.append({"name": "backups", "persistentVolumeClaim": {"claimName": pvc_name(opts), "readOnly": True}})
    probe = {"httpGet": {"path": "/healthz", "port": "metrics"}}
    container: dict[str, Any] = {
        "name": "exporter",
        "image": opts.image,
        "imagePullPolicy": opts.image_pull_policy,
        "command": ["kubectl-etcdbackup", "agent", "exporter"],
        "args": ["--key-file", KEY_FILE],  # authenticates the manifests: a bucket writer cannot fake freshness
        "envFrom": [{"configMapRef": {"name": monitor_config_name(opts)}}],
    }
    env = _aws_env(opts, store)
    if env:
        container["env"] = env
    container |= {
        "ports": [{"name": "metrics", "containerPort": opts.exporter_port, "protocol": "TCP"}],
        "readinessProbe": probe | {"periodSeconds": 10},
        "livenessProbe": probe | {"initialDelaySeconds": 10, "periodSeconds": 30},
        "resources": copy.deepcopy(opts.exporter_resources),
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }
    sel = selector_labels(opts, "exporter")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(opts, exporter_name(opts), "exporter"),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # a ReadWriteOnce claim cannot be attached twice
            "selector": {"matchLabels": sel},
            "template": {
                "metadata": {
                    "labels": labels(opts, "exporter"),
                    "annotations": {"checksum/config": config_checksum(monitor_config_data(opts, store))},
                },
                "spec": {
                    "serviceAccountName": opts.name,
                    "automountServiceAccountToken": False,
                    **_scheduling(opts),  # next to the backups: a local/RWO volume lives on a control-plane node
                    "securityContext": _exporter_pod_security(),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def exporter_service(opts: ManifestOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(opts, exporter_name(opts), "exporter"),
        "spec": {"type": "ClusterIP", "selector": selector_labels(opts, "exporter"),
                 "ports": [{"name": "metrics", "port": opts.exporter_port, "targetPort": "metrics",
                            "protocol": "TCP"}]},
    }


def operator_rules(opts: ManifestOptions) -> list[dict[str, Any]]:
    """What `kubectl etcdbackup` needs in the namespace for now/status/logs (no Secrets, no cluster scope)."""
    return [
        {"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "delete"]},
        {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [monitor_config_name(opts)],
         "verbs": ["get"]},
    ]


def operator_role(opts: ManifestOptions) -> list[dict[str, Any]]:
    name = f"{opts.name}-operator"
    out: list[dict[str, Any]] = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                                  "metadata": _meta(opts, name, "rbac"), "rules": operator_rules(opts)}]
    if opts.operator_subjects:
        out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": _meta(opts, name, "rbac"),
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                    "subjects": [dict(s) for s in opts.operator_subjects]})
    return out


def render_manifests(opts: ManifestOptions | None = None) -> list[dict[str, Any]]:
    """All objects, in apply order. Raises ManifestError for invalid options."""
    opts = opts or ManifestOptions()
    store = validate_options(opts)
    objs: list[dict[str, Any]] = []
    if opts.create_namespace:
        objs.append(namespace(opts))
    objs.append(service_account(opts))
    if opts.operator_role:
        objs += operator_role(opts)
    objs.append(monitor_config(opts, store))
    if store.type == "file" and opts.pvc_create:
        objs.append(persistent_volume_claim(opts))
    objs.append(cron_job(opts, store))
    if opts.exporter_enabled:
        objs += [exporter_deployment(opts, store), exporter_service(opts)]
    return objs


def to_yaml(objs: list[dict[str, Any]]) -> str:
    """Multi-document YAML; keys keep the (fixed) order the objects were built in."""
    return "".join("---\n" + yaml.safe_dump(o, sort_keys=False, default_flow_style=False, width=4096)
                   for o in objs)


def _image_parts(image: str) -> tuple[str, str]:
    """("repo", "tag") for repo:tag, ("repo@sha256", "<hex>") for a digest; tag "" when there is none."""
    repo, sep, tag = image.rpartition(":")
    if not sep or not repo or "/" in tag:  # no tag, or only a registry port
        return image, ""
    return repo, tag


def to_helm_values(opts: ManifestOptions) -> dict[str, Any]:
    """Values for chart/ that make `helm install <opts.name> chart -n <opts.namespace>` create the same
    objects as render_manifests(opts) (Namespace excepted: use --create-namespace).

    Helm merges maps with the chart's defaults, so default map keys that opts lacks are set to null."""
    return _null_missing(_values(opts), _values(ManifestOptions()))


def _null_missing(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for k, d in defaults.items():
        if k not in out:
            out[k] = None
        elif isinstance(d, dict) and isinstance(out[k], dict):
            out[k] = _null_missing(out[k], d)
    return out


def _values(opts: ManifestOptions) -> dict[str, Any]:
    store = validate_options(opts)
    repo, tag = _image_parts(opts.image)
    s3: dict[str, Any] = {"bucket": store.bucket} if store.bucket else {}  # the chart has no default bucket
    return {
        "fullnameOverride": opts.name,
        "image": {"repository": repo, "tag": tag, "pullPolicy": opts.image_pull_policy},
        "imagePullSecrets": list(opts.image_pull_secrets),
        "serviceAccount": {"annotations": dict(opts.service_account_annotations)},
        "backup": {
            "schedule": opts.schedule,
            "timeZone": opts.time_zone or "",
            "suspend": opts.suspend,
            "concurrencyPolicy": opts.concurrency_policy,
            "startingDeadlineSeconds": opts.starting_deadline_seconds,
            "successfulJobsHistoryLimit": opts.successful_jobs_history_limit,
            "failedJobsHistoryLimit": opts.failed_jobs_history_limit,
            "backoffLimit": opts.backoff_limit,
            "activeDeadlineSeconds": opts.active_deadline_seconds,
            "verify": opts.verify,
            "pushgateway": opts.pushgateway_url or "",
            "resources": opts.resources,
            "workDirSizeLimit": opts.work_dir_size_limit,
            "commandTimeout": opts.command_timeout,
            "idleTimeout": opts.idle_timeout,
            "securityContext": {"runAsNonRoot": opts.run_as_non_root, "runAsUser": opts.run_as_user,
                                "runAsGroup": opts.run_as_group},
        },
        "store": {
            "type": store.type,
            "pvc": {
                "mountPath": store.path or "/backups",
                "create": opts.pvc_create,
                "name": opts.pvc_name or "",
                "size": opts.pvc_size,
                "storageClass": opts.pvc_storage_class or "",
                "accessModes": list(opts.pvc_access_modes),
            },
            "s3": s3 | {
                "prefix": store.prefix,
                "endpointUrl": opts.s3_endpoint_url or "",
                "region": opts.s3_region or "",
                "existingSecret": opts.s3_existing_secret or "",
                "sse": opts.s3_sse or "",
                "sseKmsKeyId": opts.s3_sse_kms_key_id or "",
            },
        },
        "encryption": {"existingSecret": opts.key_secret, "key": opts.key_secret_key},
        "etcd": {
            "endpoints": list(opts.etcd_endpoints),
            "pki": {"hostPath": opts.etcd_pki_dir.rstrip("/"), "caFile": opts.etcd_ca_file,
                    "certFile": opts.etcd_cert_file, "keyFile": opts.etcd_key_file},
        },
        "retention": {"keepLast": opts.keep_last, "keepWithin": opts.keep_within, "keepHourly": opts.keep_hourly,
                      "keepDaily": opts.keep_daily, "keepWeekly": opts.keep_weekly, "keepMonthly": opts.keep_monthly},
        "monitor": {"maxAge": opts.max_age},
        "exporter": {"enabled": opts.exporter_enabled, "port": opts.exporter_port,
                     "resources": opts.exporter_resources},
        "nodeSelector": dict(opts.node_selector),
        "tolerations": [dict(t) for t in opts.tolerations],
        "priorityClassName": opts.priority_class_name or "",
        "rbac": {"operator": {"create": opts.operator_role, "subjects": [dict(s) for s in opts.operator_subjects]}},
    }
