"""Kubernetes objects (plain dicts) that run the backup agent in a cluster.

Pure logic: no I/O, no API calls. The Helm chart in chart/ renders the same objects from its values;
`to_helm_values()` maps options to those values and tests/test_chart.py checks that, for the same input,
`helm template` and `render_manifests()` give identical objects (labels too, except the two that name the
manager: Helm adds `helm.sh/chart` and says `app.kubernetes.io/managed-by: Helm` where these objects say
`kubectl-etcdbackup`).

Where etcd's client certificate is and which nodes run etcd depend on the distribution (`distribution`:
kubeadm, k3s, rke2; defaults.DISTRIBUTIONS); options left None take the preset's value.

The agent needs no Kubernetes API access at all: its ServiceAccount has no Role and mounts no token.
An optional, unbound-by-default "operator" Role lists what a person running the plugin needs.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import yaml

from .. import __version__
from ..cron import schedule_error
from ..defaults import (
    APP_NAME,
    AWS_CREDENTIAL_KEYS,
    CLIENT_CERT_DIR,
    CLIENT_CERT_KEYS,
    CONTROL_PLANE_LABEL,
    DEFAULT_DISTRIBUTION,
    DEFAULT_NAMESPACE,
    DISTRIBUTIONS,
    HOST_IP_ENDPOINT,
    NONROOT_ID,
    VERIFY_MODES,
)
from ..durations import DurationError, parse_duration
from ..errors import UsageError

PART_OF = "kubectl-etcdbackup"
MANAGED_BY = "kubectl-etcdbackup"  # app.kubernetes.io/managed-by of these objects (the chart's say Helm)
IMAGE_REPOSITORY = "ghcr.io/kubectl-etcdbackup/agent"
KEY_DIR = "/etc/etcdbackup/key"
KEY_FILE = f"{KEY_DIR}/key"  # the Secret's key is always projected to this file name
# The agent refuses a key file others can read (keys.check_key_file_permissions): owner-only for a root pod;
# owner root, group = the pod's fsGroup, group-readable for a non-root pod. The chart writes the same modes.
KEY_MODE_OWNER = 0o400
KEY_MODE_FS_GROUP = 0o440
WORK_DIR = "/tmp"  # an emptyDir: the root filesystem is read-only
CONTROL_PLANE = CONTROL_PLANE_LABEL

# The chart's values.schema.json uses the same patterns.
CRON_RE = re.compile(r"^(@(annually|yearly|monthly|weekly|daily|midnight|hourly)"
                     r"|[0-9A-Za-z*/,?-]+( [0-9A-Za-z*/,?-]+){4})$")
# Whole units only (1h30m, 7d, 90s), so Helm can turn them into seconds; the chart's schema uses this pattern.
DURATION_RE = re.compile(r"^([0-9]+[wdhms])+$")
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
# commonLabels / podLabels may not replace the recommended labels (selectors rely on them)
RESERVED_LABEL_RE = re.compile(r"^(app\.kubernetes\.io|helm\.sh)/")
# extraEnv may not replace what the agent is given (the key, the AWS credentials, HOST_IP)
RESERVED_ENV_RE = re.compile(r"^(ETCDBACKUP_.*|AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|HOST_IP)$")

# ManifestOptions field -> agent flag, in argv order; the chart's values are the camelCase names.
RETENTION_FLAGS = (("keep_last", "--keep-last"), ("keep_within", "--keep-within"), ("keep_hourly", "--keep-hourly"),
                   ("keep_daily", "--keep-daily"), ("keep_weekly", "--keep-weekly"),
                   ("keep_monthly", "--keep-monthly"))
# The etcd client files the agent reads, each mounted alone (never the PKI dir, which also holds ca.key and
# the server/peer keys): ManifestOptions field -> volume name (the chart uses the same names).
PKI_FILES = {"etcd_ca_file": "etcd-ca", "etcd_cert_file": "etcd-cert", "etcd_key_file": "etcd-key"}
CONCURRENCY_POLICIES = ("Forbid", "Replace", "Allow")
PULL_POLICIES = ("IfNotPresent", "Always", "Never")
DRILL_STARTING_DEADLINE_SECONDS = 3600  # a monthly run missed by a controller restart still runs
SSE_MODES = ("AES256", "aws:kms")


class ManifestError(UsageError, ValueError):
    """The options cannot give valid manifests; the message names the option (the CLI exits 2)."""


def _default_resources() -> dict[str, Any]:
    """The backup container's; its ephemeral-storage limit covers the /tmp emptyDir (work_dir_size_limit) too."""
    return {"requests": {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "1Gi"},
            "limits": {"memory": "1Gi", "ephemeral-storage": "4Gi"}}


def _default_exporter_resources() -> dict[str, Any]:
    return {"requests": {"cpu": "10m", "memory": "64Mi", "ephemeral-storage": "64Mi"},
            "limits": {"memory": "256Mi", "ephemeral-storage": "1Gi"}}


def _default_drill_resources() -> dict[str, Any]:
    """The drill container's: a whole etcd runs in it; the ephemeral-storage limit covers its /tmp emptyDir."""
    return {"requests": {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "1Gi"},
            "limits": {"memory": "2Gi", "ephemeral-storage": "6Gi"}}


def _default_stream_resources() -> dict[str, Any]:
    return {"requests": {"cpu": "50m", "memory": "128Mi", "ephemeral-storage": "64Mi"},
            "limits": {"memory": "512Mi", "ephemeral-storage": "1Gi"}}


@dataclass
class ManifestOptions:
    """Everything the in-cluster objects depend on. Defaults fit a kubeadm cluster."""

    namespace: str = DEFAULT_NAMESPACE
    create_namespace: bool = True  # a Namespace labelled for Pod Security "privileged"
    name: str = APP_NAME  # base name of every object (and app.kubernetes.io/instance)
    image: str = f"{IMAGE_REPOSITORY}:{__version__}"
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: list[str] = field(default_factory=list)
    service_account_annotations: dict[str, str] = field(default_factory=dict)  # e.g. IRSA role-arn
    common_labels: dict[str, str] = field(default_factory=dict)  # on every object and pod
    # kubeadm | k3s | rke2: etcd's client certificate paths, endpoints and node placement (options left None)
    distribution: str = DEFAULT_DISTRIBUTION

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

    # etcd. None: the distribution's preset; endpoints default to https://$(HOST_IP):2379 (the node's etcd, with
    # a HOST_IP variable from the downward API) when the client certificate comes from a Secret.
    etcd_endpoints: list[str] | None = None
    # A Secret with ca.crt, tls.crt and tls.key instead of the node's files: no hostPath, no hostNetwork.
    etcd_client_cert_secret: str | None = None
    etcd_pki_dir: str | None = None
    etcd_ca_file: str | None = None
    etcd_cert_file: str | None = None
    etcd_key_file: str | None = None

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
    exporter_s3_existing_secret: str | None = None  # its own (read-only) S3 credentials; None: the backup's

    # Continuous backup: an `agent stream` Deployment beside the CronJob (same secrets, mounts and placement)
    continuous: bool = False
    continuous_flush_interval: str = "5s"

    # Restore drills: a CronJob `<name>-drill` running `agent drill` (the store, the key, the backup's placement;
    # no etcd certificate: it starts its own etcd on 127.0.0.1), non-root. drill_max_age: status and the alerts
    # call the drills stale past this (twice the monthly schedule).
    drill_enabled: bool = True
    drill_schedule: str = "0 3 1 * *"
    drill_max_age: str = "62d"
    drill_active_deadline_seconds: int = 3600
    drill_resources: dict[str, Any] = field(default_factory=_default_drill_resources)
    # a fetched db plus its restored data dir: about twice the db size (etcd's default quota is 2 GiB)
    drill_work_dir_size_limit: str = "5Gi"

    # Pods
    resources: dict[str, Any] = field(default_factory=_default_resources)
    exporter_resources: dict[str, Any] = field(default_factory=_default_exporter_resources)
    continuous_resources: dict[str, Any] = field(default_factory=_default_stream_resources)
    # verify=status|restore needs about the db size in /tmp; etcd's default quota is 2 GiB
    work_dir_size_limit: str = "3Gi"
    exporter_work_dir_size_limit: str = "512Mi"
    continuous_work_dir_size_limit: str = "512Mi"
    # Every pod's placement (None: the distribution's control-plane label and tolerations); per component below
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = None
    # Per pod kind (backup: the CronJob's pods and the stream's; exporter): None = node_selector/tolerations
    backup_pod_annotations: dict[str, str] = field(default_factory=dict)
    backup_pod_labels: dict[str, str] = field(default_factory=dict)
    backup_node_selector: dict[str, str] | None = None
    backup_tolerations: list[dict[str, Any]] | None = None
    backup_affinity: dict[str, Any] = field(default_factory=dict)
    backup_extra_env: list[dict[str, Any]] = field(default_factory=list)
    backup_extra_volumes: list[dict[str, Any]] = field(default_factory=list)
    backup_extra_volume_mounts: list[dict[str, Any]] = field(default_factory=list)
    exporter_pod_annotations: dict[str, str] = field(default_factory=dict)
    exporter_pod_labels: dict[str, str] = field(default_factory=dict)
    exporter_node_selector: dict[str, str] | None = None
    exporter_tolerations: list[dict[str, Any]] | None = None
    exporter_affinity: dict[str, Any] = field(default_factory=dict)
    exporter_extra_env: list[dict[str, Any]] = field(default_factory=list)
    exporter_extra_volumes: list[dict[str, Any]] = field(default_factory=list)
    exporter_extra_volume_mounts: list[dict[str, Any]] = field(default_factory=list)
    continuous_pod_annotations: dict[str, str] = field(default_factory=dict)
    continuous_pod_labels: dict[str, str] = field(default_factory=dict)
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
    """Seconds of a positive duration in whole units such as 90s, 1h30m, 7d (what the chart can compute with)."""
    try:
        secs = parse_duration(text)
    except DurationError as e:
        raise ManifestError(str(e)) from None
    _check(bool(DURATION_RE.match(text)), f"invalid duration {text!r}: use whole units like 90s, 1h30m or 7d")
    _check(secs > 0, f"invalid duration {text!r}: must be more than 0")
    return secs


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ManifestError(message)


def resolve(opts: ManifestOptions) -> ManifestOptions:
    """A copy with what the distribution preset (and the client certificate Secret) decides filled in: etcd's
    endpoints and client files, every pod's node selector and tolerations. Idempotent."""
    preset = DISTRIBUTIONS.get(opts.distribution)
    if preset is None:
        raise ManifestError(f"distribution: {opts.distribution!r} is not one of {', '.join(DISTRIBUTIONS)}")
    endpoints = opts.etcd_endpoints
    if endpoints is None:
        endpoints = [HOST_IP_ENDPOINT] if opts.etcd_client_cert_secret else preset["endpoints"]
    return dataclasses.replace(
        opts, etcd_endpoints=list(endpoints),
        etcd_pki_dir=opts.etcd_pki_dir or preset["pki_dir"], etcd_ca_file=opts.etcd_ca_file or preset["ca_file"],
        etcd_cert_file=opts.etcd_cert_file or preset["cert_file"],
        etcd_key_file=opts.etcd_key_file or preset["key_file"],
        node_selector=dict(preset["node_selector"] if opts.node_selector is None else opts.node_selector),
        tolerations=copy.deepcopy(preset["tolerations"] if opts.tolerations is None else opts.tolerations))


_OWN_VOLUMES = ("etcd-ca", "etcd-cert", "etcd-key", "etcd-client", "encryption-key", "tmp", "backups")


def _check_pod_options(opts: ManifestOptions, kind: str) -> None:
    """podLabels, extraEnv, extraVolumes, extraVolumeMounts of one pod kind (backup, exporter, continuous)."""
    for lab in getattr(opts, f"{kind}_pod_labels"):
        _check(not RESERVED_LABEL_RE.match(lab), f"{kind}_pod_labels: {lab} is set by the manifests")
    if kind == "continuous":
        return
    for env in getattr(opts, f"{kind}_extra_env"):
        _check(isinstance(env, dict) and bool(env.get("name")), f"{kind}_extra_env: each entry needs a name")
        _check(not RESERVED_ENV_RE.match(env["name"]), f"{kind}_extra_env: {env['name']} is set by the manifests")
    volumes = [v.get("name") for v in getattr(opts, f"{kind}_extra_volumes")]
    _check(all(volumes) and len(set(volumes)) == len(volumes) and not set(volumes) & set(_OWN_VOLUMES),
           f"{kind}_extra_volumes: each needs a unique name other than {', '.join(_OWN_VOLUMES)}")
    for mount in getattr(opts, f"{kind}_extra_volume_mounts"):
        _check(bool(mount.get("name")) and bool(mount.get("mountPath")),
               f"{kind}_extra_volume_mounts: each needs a name and a mountPath")


def validate_options(opts: ManifestOptions) -> StoreSpec:
    """Raise ManifestError (one line, naming the option) for anything the cluster would reject later."""
    opts = resolve(opts)
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
    for fld in ("exporter_s3_existing_secret", "etcd_client_cert_secret"):
        if getattr(opts, fld) is not None:
            _check(bool(SUBDOMAIN_RE.match(getattr(opts, fld))), f"{fld}: not a valid Secret name")
    for lab in opts.common_labels:
        _check(not RESERVED_LABEL_RE.match(lab), f"common_labels: {lab} is set by the manifests")
    for kind in ("backup", "exporter", "continuous"):
        _check_pod_options(opts, kind)
    duration_seconds(opts.continuous_flush_interval)
    _check(bool(SUBDOMAIN_RE.match(opts.key_secret)), f"key_secret: {opts.key_secret!r} is not a valid Secret name")
    _check(bool(SECRET_KEY_RE.match(opts.key_secret_key)), "key_secret_key: not a valid Secret key")
    endpoints, pki_dir = opts.etcd_endpoints or [], opts.etcd_pki_dir or ""  # filled in by resolve()
    _check(bool(endpoints) and all(ENDPOINT_RE.match(e) for e in endpoints),
           "etcd_endpoints: give one or more http(s)://host:port URLs")
    _check(bool(ABS_DIR_RE.match(pki_dir.rstrip("/"))), "etcd_pki_dir: must be an absolute dir")
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
    _check((why := schedule_error(opts.drill_schedule)) is None, f"drill_schedule: {why}")
    duration_seconds(opts.drill_max_age)
    _check(opts.drill_active_deadline_seconds >= 1, "drill_active_deadline_seconds: must be >= 1")
    for fld in ("work_dir_size_limit", "exporter_work_dir_size_limit", "continuous_work_dir_size_limit",
                "drill_work_dir_size_limit"):
        _check(bool(QUANTITY_RE.match(getattr(opts, fld))), f"{fld}: not a quantity like 3Gi")
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
    out["app.kubernetes.io/managed-by"] = MANAGED_BY
    return out | opts.common_labels


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


def stream_name(opts: ManifestOptions) -> str:
    return f"{opts.name}-stream"


def drill_name_of(base: str) -> str:
    """The restore drill CronJob of the backup CronJob `base`."""
    return f"{base}-drill"


def drill_name(opts: ManifestOptions) -> str:
    return drill_name_of(opts.name)


def _pod_metadata(opts: ManifestOptions, component: str, kind: str,
                  annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A pod template's labels (plus the kind's podLabels) and annotations (podAnnotations), if any."""
    meta: dict[str, Any] = {"labels": labels(opts, component) | getattr(opts, f"{kind}_pod_labels")}
    ann = dict(getattr(opts, f"{kind}_pod_annotations")) | (annotations or {})
    if ann:
        meta["annotations"] = ann
    return meta


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


def _nonroot_pod_security() -> dict[str, Any]:
    """The exporter's and the drill's: non-root; fsGroup makes the 0440 key file (owner root) readable through the
    group."""
    return {"runAsNonRoot": True, "runAsUser": NONROOT_ID, "runAsGroup": NONROOT_ID, "fsGroup": NONROOT_ID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def _scheduling(opts: ManifestOptions, kind: str) -> dict[str, Any]:
    """Pull secrets, priority and the placement of one pod kind (backup, exporter): its own nodeSelector and
    tolerations when set (None: every pod's), its affinity."""
    opts = resolve(opts)
    node_selector = getattr(opts, f"{kind}_node_selector")
    tolerations = getattr(opts, f"{kind}_tolerations")
    node_selector = opts.node_selector if node_selector is None else node_selector
    tolerations = opts.tolerations if tolerations is None else tolerations
    out: dict[str, Any] = {}
    if opts.image_pull_secrets:
        out["imagePullSecrets"] = [{"name": n} for n in opts.image_pull_secrets]
    if opts.priority_class_name:
        out["priorityClassName"] = opts.priority_class_name
    if node_selector:
        out["nodeSelector"] = dict(node_selector)
    if tolerations:
        out["tolerations"] = copy.deepcopy(tolerations)
    if getattr(opts, f"{kind}_affinity"):
        out["affinity"] = copy.deepcopy(getattr(opts, f"{kind}_affinity"))
    return out


def _host_network(opts: ManifestOptions) -> dict[str, Any]:
    """etcd listens on the node's 127.0.0.1: the node's network, unless the certificate comes from a Secret
    (then the pod reaches etcd through the given endpoints or its node's IP)."""
    if opts.etcd_client_cert_secret:
        return {}
    return {"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}


def _host_ip_env(opts: ManifestOptions) -> list[dict[str, Any]]:
    """HOST_IP from the downward API, when an endpoint uses $(HOST_IP)."""
    if not any("$(HOST_IP)" in e for e in resolve(opts).etcd_endpoints or []):
        return []
    return [{"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}]


def _aws_env(opts: ManifestOptions, store: StoreSpec, secret: str | None = None) -> list[dict[str, Any]]:
    """S3 credentials from the existing Secret (absent: IRSA / instance profile)."""
    secret = secret or opts.s3_existing_secret
    if store.type != "s3" or not secret:
        return []
    out = []
    for k in AWS_CREDENTIAL_KEYS:
        ref: dict[str, Any] = {"name": secret, "key": k}
        if k == "AWS_SESSION_TOKEN":
            ref["optional"] = True
        out.append({"name": k, "valueFrom": {"secretKeyRef": ref}})
    return out


def _tmp_volume(size_limit: str) -> dict[str, Any]:
    """The /tmp scratch emptyDir, size-limited (the kubelet evicts the pod beyond it)."""
    return {"name": "tmp", "emptyDir": {"sizeLimit": size_limit}}


def _key_volume(opts: ManifestOptions, mode: int) -> dict[str, Any]:
    """The key Secret as the file KEY_FILE; mode KEY_MODE_OWNER (root pod) or KEY_MODE_FS_GROUP (fsGroup pod)."""
    return {"name": "encryption-key", "secret": {"secretName": opts.key_secret, "defaultMode": mode,
                                                 "items": [{"key": opts.key_secret_key, "path": "key"}]}}


_KEY_MOUNT = {"name": "encryption-key", "mountPath": KEY_DIR, "readOnly": True}


def pki_path(opts: ManifestOptions, fld: str) -> str:
    """Node path (and container path: mounted at the same place) of one of PKI_FILES."""
    opts = resolve(opts)
    return f"{(opts.etcd_pki_dir or '').rstrip('/')}/{getattr(opts, fld)}"


def etcd_tls_paths(opts: ManifestOptions) -> tuple[str, str, str]:
    """--cacert, --cert, --key as the agent sees them: the Secret's files, or the node's (same path)."""
    if opts.etcd_client_cert_secret:
        ca, cert, key = (f"{CLIENT_CERT_DIR}/{k}" for k in CLIENT_CERT_KEYS)
        return ca, cert, key
    return pki_path(opts, "etcd_ca_file"), pki_path(opts, "etcd_cert_file"), pki_path(opts, "etcd_key_file")


def _etcd_volumes(opts: ManifestOptions, mode: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(mounts, volumes) of etcd's client certificate: the Secret's three files (mode as the key's), or
    each node file alone as a read-only hostPath of type File at the same path."""
    if opts.etcd_client_cert_secret:
        return ([{"name": "etcd-client", "mountPath": CLIENT_CERT_DIR, "readOnly": True}],
                [{"name": "etcd-client", "secret": {"secretName": opts.etcd_client_cert_secret, "defaultMode": mode,
                                                    "items": [{"key": k, "path": k} for k in CLIENT_CERT_KEYS]}}])
    opts = resolve(opts)
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
    args = [*_etcd_args(opts, store), "--encryption-key-file", KEY_FILE, *retention_args(opts),
            "--verify", opts.verify, "--work-dir", WORK_DIR, "--command-timeout", opts.command_timeout,
            "--idle-timeout", opts.idle_timeout, *_s3_args(opts, store)]
    if opts.pushgateway_url:
        args += ["--pushgateway", opts.pushgateway_url]
    return args


def _etcd_args(opts: ManifestOptions, store: StoreSpec) -> list[str]:
    opts = resolve(opts)
    ca, cert, key = etcd_tls_paths(opts)
    return ["--store", store.url, "--endpoints", ",".join(opts.etcd_endpoints or []), "--cacert", ca,
            "--cert", cert, "--key", key]


def _s3_args(opts: ManifestOptions, store: StoreSpec) -> list[str]:
    args: list[str] = []
    if store.type == "s3":
        for flag, value in (("--s3-endpoint-url", opts.s3_endpoint_url), ("--s3-region", opts.s3_region),
                            ("--s3-sse", opts.s3_sse), ("--s3-sse-kms-key-id", opts.s3_sse_kms_key_id)):
            if value:
                args += [flag, value]
    return args


def stream_args(opts: ManifestOptions, store: StoreSpec | None = None) -> list[str]:
    """Arguments after `kubectl-etcdbackup agent stream` (cli/stream_cmd.py)."""
    store = store or parse_store(opts.store)
    return [*_etcd_args(opts, store), "--encryption-key-file", KEY_FILE, "--flush-interval",
            opts.continuous_flush_interval, *_s3_args(opts, store)]


def drill_args(opts: ManifestOptions, store: StoreSpec | None = None) -> list[str]:
    """Arguments after `kubectl-etcdbackup agent drill` (cli/drill_cmd.py)."""
    store = store or parse_store(opts.store)
    args = ["--store", store.url, "--encryption-key-file", KEY_FILE, "--work-dir", WORK_DIR, *_s3_args(opts, store)]
    if opts.pushgateway_url:
        args += ["--pushgateway", opts.pushgateway_url]
    return args


def monitor_config_data(opts: ManifestOptions, store: StoreSpec | None = None) -> dict[str, str]:
    """The exporter's settings, as the ETCDBACKUP_* variables it reads (envFrom)."""
    store = store or parse_store(opts.store)
    data = {"ETCDBACKUP_STORE": store.url, "ETCDBACKUP_MAX_AGE": opts.max_age,
            "ETCDBACKUP_LISTEN": f"0.0.0.0:{opts.exporter_port}"}
    if opts.drill_enabled:  # read by `status` (the exporter has no such option)
        data["ETCDBACKUP_DRILL_MAX_AGE"] = opts.drill_max_age
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

def _pod_security_level(opts: ManifestOptions) -> str:
    """hostPath + hostNetwork + uid 0 need "privileged"; a non-root backup with its certificate from a Secret
    (and no host volumes of its own) fits "restricted"."""
    allowed = {"name", "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
               "projected", "secret"}
    extra = opts.backup_extra_volumes + opts.exporter_extra_volumes
    if opts.etcd_client_cert_secret and opts.run_as_non_root and all(set(v) <= allowed for v in extra):
        return "restricted"
    return "privileged"


def namespace(opts: ManifestOptions) -> dict[str, Any]:
    level = _pod_security_level(opts)
    lab = labels(opts) | {"pod-security.kubernetes.io/enforce": level, "pod-security.kubernetes.io/warn": level}
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


def _agent_pod(opts: ManifestOptions, store: StoreSpec, container: dict[str, Any], tmp_limit: str,
               restart_never: bool) -> dict[str, Any]:
    """The pod spec of the backup and the stream: etcd's client certificate, the key (0400 for root, 0440
    with the fsGroup otherwise), /tmp, the store read-write, the backup's extra volumes and placement."""
    key_mode = KEY_MODE_FS_GROUP if opts.run_as_non_root else KEY_MODE_OWNER
    etcd_mounts, etcd_volumes = _etcd_volumes(opts, key_mode)
    mounts: list[dict[str, Any]] = [*etcd_mounts, dict(_KEY_MOUNT), {"name": "tmp", "mountPath": WORK_DIR}]
    volumes: list[dict[str, Any]] = [*etcd_volumes, _key_volume(opts, key_mode), _tmp_volume(tmp_limit)]
    if store.type == "file":
        mounts.append({"name": "backups", "mountPath": store.path})
        volumes.append({"name": "backups", "persistentVolumeClaim": {"claimName": pvc_name(opts)}})
    env = [*_host_ip_env(opts), *_aws_env(opts, store), *copy.deepcopy(opts.backup_extra_env)]
    if env:
        container["env"] = env
    container |= {"securityContext": _container_security(),
                  "volumeMounts": mounts + copy.deepcopy(opts.backup_extra_volume_mounts)}
    return {
        "serviceAccountName": opts.name,
        "automountServiceAccountToken": False,
        **({"restartPolicy": "Never"} if restart_never else {}),
        **_host_network(opts),
        **_scheduling(opts, "backup"),
        "securityContext": _backup_pod_security(opts),
        "containers": [container],
        "volumes": volumes + copy.deepcopy(opts.backup_extra_volumes),
    }


def _agent_container(opts: ManifestOptions, command: str, args: list[str],
                     resources: dict[str, Any] | None = None) -> dict[str, Any]:
    """A container running `kubectl-etcdbackup agent <command> <args>` in the agent image."""
    container: dict[str, Any] = {"name": command, "image": opts.image, "imagePullPolicy": opts.image_pull_policy,
                                 "command": ["kubectl-etcdbackup", "agent", command], "args": args}
    if resources is not None:
        container["resources"] = copy.deepcopy(resources)
    return container


def cron_job(opts: ManifestOptions, store: StoreSpec | None = None) -> dict[str, Any]:
    opts = resolve(opts)
    store = store or parse_store(opts.store)
    container = _agent_container(opts, "backup", backup_args(opts, store), resources=opts.resources)
    pod_spec = _agent_pod(opts, store, container, opts.work_dir_size_limit, restart_never=True)
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
                "template": {"metadata": _pod_metadata(opts, "backup", "backup"), "spec": pod_spec},
            },
        },
    }
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": _meta(opts, opts.name, "backup"), "spec": spec}


def drill_cron_job(opts: ManifestOptions, store: StoreSpec | None = None) -> dict[str, Any]:
    """Restore drills (`agent drill`): the store and the key as the backup has them, the backup's placement, extra
    env and volumes; no etcd certificate, no hostNetwork (its etcd is its own, on the pod's 127.0.0.1); non-root,
    the key readable through the fsGroup."""
    opts = resolve(opts)
    store = store or parse_store(opts.store)
    mounts: list[dict[str, Any]] = [dict(_KEY_MOUNT), {"name": "tmp", "mountPath": WORK_DIR}]
    volumes: list[dict[str, Any]] = [_key_volume(opts, KEY_MODE_FS_GROUP), _tmp_volume(opts.drill_work_dir_size_limit)]
    if store.type == "file":  # read-write: the drill records its outcome in the store
        mounts.append({"name": "backups", "mountPath": store.path})
        volumes.append({"name": "backups", "persistentVolumeClaim": {"claimName": pvc_name(opts)}})
    container = _agent_container(opts, "drill", drill_args(opts, store), resources=opts.drill_resources)
    env = [*_aws_env(opts, store), *copy.deepcopy(opts.backup_extra_env)]
    if env:
        container["env"] = env
    container |= {"securityContext": _container_security(),
                  "volumeMounts": mounts + copy.deepcopy(opts.backup_extra_volume_mounts)}
    pod_spec = {
        "serviceAccountName": opts.name,
        "automountServiceAccountToken": False,
        "restartPolicy": "Never",
        **_scheduling(opts, "backup"),
        "securityContext": _nonroot_pod_security() | {"fsGroupChangePolicy": "OnRootMismatch"},
        "containers": [container],
        "volumes": volumes + copy.deepcopy(opts.backup_extra_volumes),
    }
    spec: dict[str, Any] = {"schedule": opts.drill_schedule}
    if opts.time_zone:
        spec["timeZone"] = opts.time_zone
    spec |= {
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": DRILL_STARTING_DEADLINE_SECONDS,
        "successfulJobsHistoryLimit": opts.successful_jobs_history_limit,
        "failedJobsHistoryLimit": opts.failed_jobs_history_limit,
        "jobTemplate": {
            "metadata": {"labels": labels(opts, "drill")},
            "spec": {
                "backoffLimit": 0,  # a failed drill is the finding; its record says why
                "activeDeadlineSeconds": opts.drill_active_deadline_seconds,
                "template": {"metadata": _pod_metadata(opts, "drill", "backup"), "spec": pod_spec},
            },
        },
    }
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": _meta(opts, drill_name(opts), "drill"),
            "spec": spec}


def stream_deployment(opts: ManifestOptions, store: StoreSpec | None = None) -> dict[str, Any]:
    """Continuous backup: `agent stream` with the backup's certificate, key, store and placement. One replica,
    Recreate: a second stream would only wait for the store's writer lock."""
    opts = resolve(opts)
    store = store or parse_store(opts.store)
    container = _agent_container(opts, "stream", stream_args(opts, store), resources=opts.continuous_resources)
    pod_spec = _agent_pod(opts, store, container, opts.continuous_work_dir_size_limit, restart_never=False)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(opts, stream_name(opts), "stream"),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector_labels(opts, "stream")},
            "template": {"metadata": _pod_metadata(opts, "stream", "continuous"), "spec": pod_spec},
        },
    }


def exporter_deployment(opts: ManifestOptions, store: StoreSpec | None = None) -> dict[str, Any]:
    opts = resolve(opts)
    store = store or parse_store(opts.store)
    mounts: list[dict[str, Any]] = [dict(_KEY_MOUNT), {"name": "tmp", "mountPath": WORK_DIR}]
    volumes: list[dict[str, Any]] = [_key_volume(opts, KEY_MODE_FS_GROUP),
                                     _tmp_volume(opts.exporter_work_dir_size_limit)]
    if store.type == "file":  # the agent writes 0644 files, readable by the non-root exporter
        mounts.append({"name": "backups", "mountPath": store.path, "readOnly": True})
        volumes.append({"name": "backups", "persistentVolumeClaim": {"claimName": pvc_name(opts), "readOnly": True}})
    probe = {"httpGet": {"path": "/healthz", "port": "metrics"}}
    # The key authenticates the manifests: a bucket writer cannot fake freshness.
    container = _agent_container(opts, "exporter", ["--encryption-key-file", KEY_FILE])
    container["envFrom"] = [{"configMapRef": {"name": monitor_config_name(opts)}}]
    env = [*_aws_env(opts, store, opts.exporter_s3_existing_secret), *copy.deepcopy(opts.exporter_extra_env)]
    if env:
        container["env"] = env
    container |= {
        "ports": [{"name": "metrics", "containerPort": opts.exporter_port, "protocol": "TCP"}],
        "readinessProbe": probe | {"periodSeconds": 10},
        "livenessProbe": probe | {"initialDelaySeconds": 10, "periodSeconds": 30},
        "resources": copy.deepcopy(opts.exporter_resources),
        "securityContext": _container_security(),
        "volumeMounts": mounts + copy.deepcopy(opts.exporter_extra_volume_mounts),
    }
    sel = selector_labels(opts, "exporter")
    checksum = {"checksum/config": config_checksum(monitor_config_data(opts, store))}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(opts, exporter_name(opts), "exporter"),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # a ReadWriteOnce claim cannot be attached twice
            "selector": {"matchLabels": sel},
            "template": {
                "metadata": _pod_metadata(opts, "exporter", "exporter", checksum),
                "spec": {
                    "serviceAccountName": opts.name,
                    "automountServiceAccountToken": False,
                    **_scheduling(opts, "exporter"),  # in file mode next to the backups (a local/RWO volume)
                    "securityContext": _nonroot_pod_security(),
                    "containers": [container],
                    "volumes": volumes + copy.deepcopy(opts.exporter_extra_volumes),
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
    opts = resolve(opts or ManifestOptions())
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
    if opts.drill_enabled:
        objs.append(drill_cron_job(opts, store))
    if opts.continuous:
        objs.append(stream_deployment(opts, store))
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
        "commonLabels": dict(opts.common_labels),
        "distribution": opts.distribution,
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
            **_pod_values(opts, "backup"),
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
            "endpoints": list(opts.etcd_endpoints or []),  # []: the preset's, or https://$(HOST_IP):2379
            "clientCertSecret": opts.etcd_client_cert_secret or "",
            "pki": {"hostPath": (opts.etcd_pki_dir or "").rstrip("/"), "caFile": opts.etcd_ca_file or "",
                    "certFile": opts.etcd_cert_file or "", "keyFile": opts.etcd_key_file or ""},
        },
        "retention": {"keepLast": opts.keep_last, "keepWithin": opts.keep_within, "keepHourly": opts.keep_hourly,
                      "keepDaily": opts.keep_daily, "keepWeekly": opts.keep_weekly, "keepMonthly": opts.keep_monthly},
        "monitor": {"maxAge": opts.max_age},
        "exporter": {"enabled": opts.exporter_enabled, "port": opts.exporter_port,
                     "resources": opts.exporter_resources, "workDirSizeLimit": opts.exporter_work_dir_size_limit,
                     "s3": {"existingSecret": opts.exporter_s3_existing_secret or ""},
                     **_pod_values(opts, "exporter")},
        "drill": {"enabled": opts.drill_enabled, "schedule": opts.drill_schedule, "maxAge": opts.drill_max_age,
                  "activeDeadlineSeconds": opts.drill_active_deadline_seconds, "resources": opts.drill_resources,
                  "workDirSizeLimit": opts.drill_work_dir_size_limit},
        "continuous": {"enabled": opts.continuous, "flushInterval": opts.continuous_flush_interval,
                       "resources": opts.continuous_resources,
                       "workDirSizeLimit": opts.continuous_work_dir_size_limit,
                       "podAnnotations": dict(opts.continuous_pod_annotations),
                       "podLabels": dict(opts.continuous_pod_labels)},
        "nodeSelector": None if opts.node_selector is None else dict(opts.node_selector),
        "tolerations": None if opts.tolerations is None else [dict(t) for t in opts.tolerations],
        "priorityClassName": opts.priority_class_name or "",
        "rbac": {"operator": {"create": opts.operator_role, "subjects": [dict(s) for s in opts.operator_subjects]}},
    }


def _pod_values(opts: ManifestOptions, kind: str) -> dict[str, Any]:
    """The chart's per-pod values of one pod kind (backup, exporter)."""
    out: dict[str, Any] = {}
    for fld, key in (("pod_annotations", "podAnnotations"), ("pod_labels", "podLabels"),
                     ("node_selector", "nodeSelector"), ("tolerations", "tolerations"), ("affinity", "affinity"),
                     ("extra_env", "extraEnv"), ("extra_volumes", "extraVolumes"),
                     ("extra_volume_mounts", "extraVolumeMounts")):
        out[key] = copy.deepcopy(getattr(opts, f"{kind}_{fld}"))
    return out
