"""Where the installed backup CronJob keeps its snapshots (pure): store URL, S3 settings and credential
Secrets, the PVC behind a file store, and the encryption key Secret, read from the CronJob's pod template.

Options are read like the agent reads them: `ETCDBACKUP_*` environment values first, command-line flags win.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from ..defaults import AWS_CREDENTIAL_KEYS
from ..errors import UsageError
from .etcd_pods import parse_flags

_OPTIONS = ("store", "s3-endpoint-url", "s3-region")


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str


@dataclass(frozen=True)
class ClusterStore:
    cronjob: str
    namespace: str
    url: str
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    aws_secret_env: dict[str, SecretRef] = field(default_factory=dict)  # AWS_* variable -> Secret key
    aws_env_from: tuple[str, ...] = ()  # Secrets imported whole (envFrom)
    claim: str | None = None  # the PVC of a file store
    mount_path: str | None = None  # where the backup container mounts it
    key_secret: SecretRef | None = None  # the encryption key

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    @property
    def path(self) -> str:
        """Directory of a file store inside the backup container."""
        return urlparse(self.url).path

    def store_args(self) -> list[str]:
        """--store and the S3 options, for a `kubectl-etcdbackup` command reading this store."""
        args = ["--store", self.url]
        if self.s3_endpoint_url:
            args += ["--s3-endpoint-url", self.s3_endpoint_url]
        if self.s3_region:
            args += ["--s3-region", self.s3_region]
        return args


def backup_container(cronjob: dict[str, Any]) -> dict[str, Any]:
    """The container that runs `kubectl-etcdbackup agent backup` (else the only/first container)."""
    spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    containers = spec.get("containers") or []
    for c in containers:
        argv = (c.get("command") or []) + (c.get("args") or [])
        if "agent" in argv and "backup" in argv:
            return dict(c)
    if not containers:
        raise UsageError(f"CronJob {cronjob['metadata']['name']} has no containers")
    return dict(containers[0])


def store_from_cronjob(cronjob: dict[str, Any]) -> ClusterStore:
    md = cronjob["metadata"]
    pod_spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    c = backup_container(cronjob)
    values: dict[str, str] = {}
    secret_env: dict[str, SecretRef] = {}
    for e in c.get("env") or []:
        name = e.get("name", "")
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if name in AWS_CREDENTIAL_KEYS and ref:
            secret_env[name] = SecretRef(ref["name"], ref["key"])
        opt = name.removeprefix("ETCDBACKUP_").lower().replace("_", "-")
        if name.startswith("ETCDBACKUP_") and opt in _OPTIONS and "value" in e:
            values[opt] = str(e["value"])
    flags = parse_flags((c.get("command") or []) + (c.get("args") or []))
    values.update({k: v for k, v in flags.items() if k in _OPTIONS})
    url = values.get("store")
    if not url:
        raise UsageError(f"cannot find the store of CronJob {md['namespace']}/{md['name']} (no --store / "
                         "ETCDBACKUP_STORE in its backup container); pass --store")
    env_from = tuple(ef["secretRef"]["name"] for ef in c.get("envFrom") or [] if ef.get("secretRef"))
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    claim = mount_path = None
    key_secret = None
    key_file = flags.get("encryption-key-file") or flags.get("key-file", "")  # the flag, or its old name
    for m in c.get("volumeMounts") or []:
        vol = volumes.get(m.get("name"), {})
        path = urlparse(url).path if url.startswith("file:") else ""
        if "persistentVolumeClaim" in vol and path and (path == m["mountPath"].rstrip("/") or path.startswith(
                m["mountPath"].rstrip("/") + "/")):
            claim, mount_path = vol["persistentVolumeClaim"]["claimName"], m["mountPath"]
        if "secret" in vol and _is_key_mount(m["mountPath"], key_file):
            items = vol["secret"].get("items") or []
            file_name = key_file[len(m["mountPath"].rstrip("/")) + 1:]
            key = next((i["key"] for i in items if i.get("path") == file_name), file_name)
            key_secret = SecretRef(vol["secret"]["secretName"], key)
    return ClusterStore(cronjob=md["name"], namespace=md.get("namespace", ""), url=url,
                        s3_endpoint_url=values.get("s3-endpoint-url"), s3_region=values.get("s3-region"),
                        aws_secret_env=secret_env, aws_env_from=env_from, claim=claim, mount_path=mount_path,
                        key_secret=key_secret)


def _is_key_mount(mount_path: str, key_file: str) -> bool:
    return bool(key_file) and key_file.startswith(mount_path.rstrip("/") + "/")
