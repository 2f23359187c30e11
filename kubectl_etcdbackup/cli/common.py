"""Options shared by several commands, and small helpers that turn them into objects."""

from __future__ import annotations

from typing import Annotated

import typer

from ..durations import parse_duration
from ..errors import UsageError
from ..keys import load_key
from ..output import FORMATS
from ..stores import Store, open_store

StoreOpt = Annotated[str, typer.Option("--store", envvar="ETCDBACKUP_STORE",
                                       help="file:///dir (a PVC mount) or s3://bucket/prefix")]
S3EndpointOpt = Annotated[str | None, typer.Option("--s3-endpoint-url", envvar="ETCDBACKUP_S3_ENDPOINT_URL",
                                                   help="S3-compatible endpoint (MinIO, Ceph, ...)")]
S3RegionOpt = Annotated[str | None, typer.Option("--s3-region", envvar="ETCDBACKUP_S3_REGION")]
KeyFileOpt = Annotated[str | None, typer.Option("--key-file", envvar="ETCDBACKUP_KEY_FILE",
                                                help="file holding the base64 32-byte key (a mounted Secret)")]
KeyEnvOpt = Annotated[str | None, typer.Option("--key-env", envvar="ETCDBACKUP_KEY_ENV",
                                               help="NAME of an environment variable holding the key")]
OutputOpt = Annotated[str, typer.Option("--output", "-o", help="table, json or yaml")]
ProgressOpt = Annotated[bool | None, typer.Option("--progress/--no-progress",
                                                  help="progress bars (default: when stderr is a terminal)")]

# Kubernetes: every command that talks to a cluster takes these.
DEFAULT_NAMESPACE = "etcd-backup"
KubeconfigOpt = Annotated[str | None, typer.Option("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, "
                                                   "~/.kube/config)", rich_help_panel="Kubernetes")]
ContextOpt = Annotated[str | None, typer.Option("--context", help="kubeconfig context (default: the current one)",
                                                rich_help_panel="Kubernetes")]
NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", help="namespace of the backup CronJob",
                                           rich_help_panel="Kubernetes")]
CronJobOpt = Annotated[str | None, typer.Option("--cronjob", help="name of the backup CronJob (default: the one "
                                                "installed in the namespace)", rich_help_panel="Kubernetes")]
OptionalStoreOpt = Annotated[str | None, typer.Option(
    "--store", envvar="ETCDBACKUP_STORE",
    help="file:///dir or s3://bucket/prefix (default: the store of the backup CronJob in the cluster)")]


def get_store(url: str, s3_endpoint_url: str | None = None, s3_region: str | None = None, *,
              create: bool = False, sse: str | None = None, sse_kms_key_id: str | None = None) -> Store:
    return open_store(url, s3_endpoint_url=s3_endpoint_url, s3_region=s3_region, create=create,
                      s3_sse=sse, s3_sse_kms_key_id=sse_kms_key_id)


def get_key(key_file: str | None, key_env: str | None) -> bytes | None:
    return load_key(key_file, key_env)


def check_output(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UsageError(f"unknown output format {fmt!r} (use {', '.join(FORMATS)})")
    return fmt


def seconds(text: str | None, flag: str) -> float | None:
    if text is None or text == "":
        return None
    try:
        return parse_duration(text)
    except ValueError as e:
        raise UsageError(f"{flag}: {e}") from None
