"""Options shared by several commands, and small helpers that turn them into objects."""

from __future__ import annotations

from typing import Annotated

import typer

from ..durations import parse_duration
from ..errors import UsageError
from ..keys import Keyring, load_keyring
from ..output import FORMATS
from ..retention import RetentionPolicy
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
InsecureKeyFileOpt = Annotated[bool, typer.Option(
    "--allow-insecure-key-file", envvar="ETCDBACKUP_ALLOW_INSECURE_KEY_FILE",
    help="accept a key file that group or others can read (refused by default, as ssh does)")]
AllowPlaintextOpt = Annotated[bool, typer.Option(
    "--allow-plaintext", envvar="ETCDBACKUP_ALLOW_PLAINTEXT",
    help="with a key given, still accept unencrypted snapshots (nothing proves who made them)")]
OutputOpt = Annotated[str, typer.Option("--output", "-o", help="table, json or yaml")]

# Retention (prune, agent backup): restic's names. A snapshot is kept when any rule keeps it.
_RETENTION = "Retention"
KeepLastOpt = Annotated[int | None, typer.Option("--keep-last", envvar="ETCDBACKUP_KEEP_LAST", min=0,
                                                 help="keep the N newest", rich_help_panel=_RETENTION)]
KeepWithinOpt = Annotated[str | None, typer.Option("--keep-within", envvar="ETCDBACKUP_KEEP_WITHIN",
                                                   help="keep every snapshot younger than this, e.g. 24h",
                                                   rich_help_panel=_RETENTION)]
KeepHourlyOpt = Annotated[int | None, typer.Option("--keep-hourly", envvar="ETCDBACKUP_KEEP_HOURLY", min=0,
                                                   help="keep the newest of each of the N newest hours (UTC)",
                                                   rich_help_panel=_RETENTION)]
KeepDailyOpt = Annotated[int | None, typer.Option("--keep-daily", envvar="ETCDBACKUP_KEEP_DAILY", min=0,
                                                  help="keep the newest of each of the N newest days (UTC)",
                                                  rich_help_panel=_RETENTION)]
KeepWeeklyOpt = Annotated[int | None, typer.Option("--keep-weekly", envvar="ETCDBACKUP_KEEP_WEEKLY", min=0,
                                                   help="keep the newest of each of the N newest ISO weeks",
                                                   rich_help_panel=_RETENTION)]
KeepMonthlyOpt = Annotated[int | None, typer.Option("--keep-monthly", envvar="ETCDBACKUP_KEEP_MONTHLY", min=0,
                                                    help="keep the newest of each of the N newest months (UTC)",
                                                    rich_help_panel=_RETENTION)]
RetainCountOpt = Annotated[int | None, typer.Option("--retain-count", envvar="ETCDBACKUP_RETAIN_COUNT", min=0,
                                                    hidden=True, help="old name of --keep-last")]
RetainAgeOpt = Annotated[str | None, typer.Option("--retain-age", envvar="ETCDBACKUP_RETAIN_AGE", hidden=True,
                                                  help="old name of --keep-within")]
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


def get_key(key_file: str | None, key_env: str | None, allow_insecure_file: bool = False) -> Keyring | None:
    return load_keyring(key_file, key_env, allow_insecure_file=allow_insecure_file)


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


def retention_policy(keep_last: int | None = None, keep_within: str | None = None, keep_hourly: int | None = None,
                     keep_daily: int | None = None, keep_weekly: int | None = None, keep_monthly: int | None = None,
                     retain_count: int | None = None, retain_age: str | None = None) -> RetentionPolicy:
    """The policy from the --keep-* flags (None: not given, the rule is off). --retain-count and --retain-age are
    the old names of --keep-last and --keep-within; giving both names of one rule is a usage error."""
    for new, old, flags in ((keep_last, retain_count, "--keep-last and --retain-count"),
                            (keep_within, retain_age, "--keep-within and --retain-age")):
        if new is not None and old is not None:
            raise UsageError(f"give only one of {flags} (the second is the old name of the first)")
    within = keep_within if keep_within is not None else retain_age
    try:
        return RetentionPolicy(
            keep_last=keep_last if keep_last is not None else retain_count or 0,
            keep_within_seconds=seconds(within, "--keep-within") or 0.0, keep_hourly=keep_hourly or 0,
            keep_daily=keep_daily or 0, keep_weekly=keep_weekly or 0, keep_monthly=keep_monthly or 0)
    except ValueError as e:
        raise UsageError(str(e)) from None
