"""Options shared by several commands, declared once, and the helpers that turn them into objects.

An option group is a dataclass whose fields are typer options; a command that declares a parameter of that type
(e.g. `kube: KubeOptions`) gets every option of the group on its command line and receives one object. This
keeps each option's name, environment variable and help in one place, and command functions short.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer

from ..defaults import DEFAULT_NAMESPACE, ETCD_NAMESPACE, ETCD_SELECTOR, VERIFY_MODES
from ..durations import parse_duration
from ..errors import UsageError
from ..keys import Keyring, load_keyring
from ..output import FORMATS
from ..stores import Store, open_store

_KUBE = "Kubernetes"
_RETENTION = "Retention"
_KEY = "Encryption key"
_ETCD_PANEL, _STORE_PANEL = "etcd", "Store"


# Choices checked by the parser itself (a bad value is a one-line usage error); the engine's lists are the truth.
class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


class VerifyMode(StrEnum):
    hash = "hash"
    status = "status"
    restore = "restore"


if tuple(OutputFormat) != FORMATS or tuple(VerifyMode) != VERIFY_MODES:  # pragma: no cover - caught by any test
    raise ImportError("cli/common.py's choices differ from output.FORMATS / defaults.VERIFY_MODES")


# ---------------------------------------------------------------------------- single options
StoreOpt = Annotated[str, typer.Option("--store", envvar="ETCDBACKUP_STORE",
                                       help="file:///dir (a PVC mount) or s3://bucket/prefix")]
S3EndpointOpt = Annotated[str | None, typer.Option("--s3-endpoint-url", envvar="ETCDBACKUP_S3_ENDPOINT_URL",
                                                   help="S3-compatible endpoint (MinIO, Ceph, ...)")]
S3RegionOpt = Annotated[str | None, typer.Option("--s3-region", envvar="ETCDBACKUP_S3_REGION")]
OutputOpt = Annotated[OutputFormat, typer.Option("--output", "-o", help="output format")]
ProgressOpt = Annotated[bool | None, typer.Option("--progress/--no-progress",
                                                  help="progress bars (default: when stderr is a terminal)")]
AllowPlaintextOpt = Annotated[bool, typer.Option(
    "--allow-plaintext", envvar="ETCDBACKUP_ALLOW_PLAINTEXT", rich_help_panel=_KEY,
    help="with a key given, still accept unencrypted snapshots (nothing proves who made them)")]
SnapshotArg = Annotated[str, typer.Argument(help="snapshot id or 'latest' (the newest trusted, verified one)")]


# ---------------------------------------------------------------------------- option groups
class OptionGroup:
    """Base of the option groups (each a frozen dataclass of typer-annotated fields)."""


@dataclasses.dataclass(frozen=True)
class KeyOptions(OptionGroup):
    """The encryption keyring: a file (a mounted Secret) or an environment variable; never argv."""

    encryption_key_file: Annotated[str | None, typer.Option(
        "--encryption-key-file", envvar="ETCDBACKUP_ENCRYPTION_KEY_FILE", rich_help_panel=_KEY,
        help="keyring file: base64 32-byte keys, one per line, newest first (a mounted Secret)")] = None
    key_file: Annotated[str | None, typer.Option("--key-file", envvar="ETCDBACKUP_KEY_FILE", hidden=True,
                                                 help="old name of --encryption-key-file")] = None
    key_env: Annotated[str | None, typer.Option(
        "--key-env", envvar="ETCDBACKUP_KEY_ENV", rich_help_panel=_KEY,
        help="NAME of an environment variable holding the key(s)")] = None
    allow_insecure_key_file: Annotated[bool, typer.Option(
        "--allow-insecure-key-file", envvar="ETCDBACKUP_ALLOW_INSECURE_KEY_FILE", rich_help_panel=_KEY,
        help="accept a key file that group or others can read (refused by default, as ssh does)")] = False

    @property
    def file(self) -> str | None:
        if self.encryption_key_file and self.key_file:
            raise UsageError("give --encryption-key-file or its old name --key-file, not both")
        return self.encryption_key_file or self.key_file

    def keyring(self) -> Keyring | None:
        """The keyring, or None when no key was given."""
        return load_keyring(self.file, self.key_env, allow_insecure_file=self.allow_insecure_key_file)


@dataclasses.dataclass(frozen=True)
class StoreOptions(OptionGroup):
    """Where the snapshots are: --store, else the store of the backup CronJob in the cluster."""

    store: Annotated[str | None, typer.Option(
        "--store", envvar="ETCDBACKUP_STORE",
        help="file:///dir or s3://bucket/prefix (default: the store of the backup CronJob in the cluster)")] = None
    s3_endpoint_url: S3EndpointOpt = None
    s3_region: S3RegionOpt = None

    def spec(self, kube: KubeOptions) -> SourceSpec:
        """The one snapshot source of every reading command: --store, else the cluster's backup CronJob."""
        from ..usecases.source import KubeTarget, SourceSpec

        return SourceSpec(self.store, self.s3_endpoint_url, self.s3_region,
                          KubeTarget(kube.kubeconfig, kube.context, kube.namespace, kube.cronjob))

    def open(self, *, create: bool = False) -> Store:
        if not self.store:
            raise UsageError("no store given (--store file:///path or s3://bucket/prefix)")
        return open_store(self.store, s3_endpoint_url=self.s3_endpoint_url, s3_region=self.s3_region,
                          create=create)


@dataclasses.dataclass(frozen=True)
class ClusterOptions(OptionGroup):
    """Which cluster (kubectl's own flags, resolved as kubectl does)."""

    kubeconfig: Annotated[str | None, typer.Option(
        "--kubeconfig", rich_help_panel=_KUBE, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")] = None
    context: Annotated[str | None, typer.Option(
        "--context", rich_help_panel=_KUBE, help="kubeconfig context (default: the current one)")] = None


@dataclasses.dataclass(frozen=True)
class KubeOptions(ClusterOptions):
    """Which cluster, and the namespace and backup CronJob in it."""

    namespace: Annotated[str, typer.Option(
        "--namespace", "-n", rich_help_panel=_KUBE, help="namespace of the backup CronJob")] = DEFAULT_NAMESPACE
    cronjob: Annotated[str | None, typer.Option(
        "--cronjob", rich_help_panel=_KUBE,
        help="name of the backup CronJob (default: the one installed in the namespace)")] = None


@dataclasses.dataclass(frozen=True)
class EtcdPodsOptions(OptionGroup):
    """Where the cluster's etcd members run (read from their pod specs)."""

    etcd_namespace: Annotated[str, typer.Option(
        "--etcd-namespace", rich_help_panel=_KUBE, help="namespace of the etcd pods")] = ETCD_NAMESPACE
    etcd_selector: Annotated[str, typer.Option(
        "--etcd-selector", rich_help_panel=_KUBE, help="label selector of the etcd pods")] = ETCD_SELECTOR


@dataclasses.dataclass(frozen=True)
class RetentionOptions(OptionGroup):
    """restic's retention rules; a snapshot is kept when any rule keeps it."""

    keep_last: Annotated[int | None, typer.Option(
        "--keep-last", envvar="ETCDBACKUP_KEEP_LAST", min=0, rich_help_panel=_RETENTION,
        help="keep the N newest")] = None
    keep_within: Annotated[str | None, typer.Option(
        "--keep-within", envvar="ETCDBACKUP_KEEP_WITHIN", rich_help_panel=_RETENTION,
        help="keep every snapshot younger than this, e.g. 24h")] = None
    keep_hourly: Annotated[int | None, typer.Option(
        "--keep-hourly", envvar="ETCDBACKUP_KEEP_HOURLY", min=0, rich_help_panel=_RETENTION,
        help="keep the newest of each of the N newest hours (UTC)")] = None
    keep_daily: Annotated[int | None, typer.Option(
        "--keep-daily", envvar="ETCDBACKUP_KEEP_DAILY", min=0, rich_help_panel=_RETENTION,
        help="keep the newest of each of the N newest days (UTC)")] = None
    keep_weekly: Annotated[int | None, typer.Option(
        "--keep-weekly", envvar="ETCDBACKUP_KEEP_WEEKLY", min=0, rich_help_panel=_RETENTION,
        help="keep the newest of each of the N newest ISO weeks")] = None
    keep_monthly: Annotated[int | None, typer.Option(
        "--keep-monthly", envvar="ETCDBACKUP_KEEP_MONTHLY", min=0, rich_help_panel=_RETENTION,
        help="keep the newest of each of the N newest months (UTC)")] = None
    retain_count: Annotated[int | None, typer.Option(
        "--retain-count", envvar="ETCDBACKUP_RETAIN_COUNT", min=0, hidden=True, help="old name of --keep-last")] = None
    retain_age: Annotated[str | None, typer.Option(
        "--retain-age", envvar="ETCDBACKUP_RETAIN_AGE", hidden=True, help="old name of --keep-within")] = None

    def policy(self) -> RetentionPolicy:
        """The policy (a rule not given is off). Giving both names of one rule is a usage error."""
        from ..retention import RetentionPolicy

        for new, old, flags in ((self.keep_last, self.retain_count, "--keep-last and --retain-count"),
                                (self.keep_within, self.retain_age, "--keep-within and --retain-age")):
            if new is not None and old is not None:
                raise UsageError(f"give only one of {flags} (the second is the old name of the first)")
        within = self.keep_within if self.keep_within is not None else self.retain_age
        keep_last = self.keep_last if self.keep_last is not None else self.retain_count
        try:
            return RetentionPolicy(
                keep_last=keep_last or 0, keep_within_seconds=seconds(within, "--keep-within") or 0.0,
                keep_hourly=self.keep_hourly or 0, keep_daily=self.keep_daily or 0,
                keep_weekly=self.keep_weekly or 0, keep_monthly=self.keep_monthly or 0)
        except ValueError as e:
            raise UsageError(str(e)) from None


@dataclasses.dataclass(frozen=True)
class AgentStoreOptions(OptionGroup):
    """The store the agent writes to or reads."""

    store: StoreOpt
    s3_endpoint_url: S3EndpointOpt = None
    s3_region: S3RegionOpt = None
    s3_sse: Annotated[str | None, typer.Option(envvar="ETCDBACKUP_S3_SSE", rich_help_panel=_STORE_PANEL,
                                               help="server-side encryption on top: AES256 or aws:kms")] = None
    s3_sse_kms_key_id: Annotated[str | None, typer.Option(envvar="ETCDBACKUP_S3_SSE_KMS_KEY_ID",
                                                          rich_help_panel=_STORE_PANEL)] = None

    def open(self, *, create: bool = False) -> Store:
        return open_store(self.store, s3_endpoint_url=self.s3_endpoint_url, s3_region=self.s3_region,
                          s3_sse=self.s3_sse, s3_sse_kms_key_id=self.s3_sse_kms_key_id, create=create)


@dataclasses.dataclass(frozen=True)
class EtcdOptions(OptionGroup):
    """The etcd members and how to talk to them (etcdctl's flag names)."""

    endpoints: Annotated[str, typer.Option(envvar="ETCDBACKUP_ENDPOINTS", rich_help_panel=_ETCD_PANEL,
                                           help="comma-separated etcd client URLs; the first healthy one is used")]
    cacert: Annotated[str | None, typer.Option(envvar="ETCDBACKUP_CACERT", rich_help_panel=_ETCD_PANEL,
                                               help="etcd CA bundle")] = None
    cert: Annotated[str | None, typer.Option(envvar="ETCDBACKUP_CERT", rich_help_panel=_ETCD_PANEL,
                                             help="etcd client certificate")] = None
    key: Annotated[str | None, typer.Option(envvar="ETCDBACKUP_KEY", rich_help_panel=_ETCD_PANEL,
                                            help="etcd client certificate's key (TLS; not the encryption key)")] = None
    dial_timeout: Annotated[str, typer.Option(envvar="ETCDBACKUP_DIAL_TIMEOUT", rich_help_panel=_ETCD_PANEL,
                                              help="give up on a member that does not answer")] = "5s"
    command_timeout: Annotated[str, typer.Option(envvar="ETCDBACKUP_COMMAND_TIMEOUT", rich_help_panel=_ETCD_PANEL,
                                                 help="the whole snapshot stream may take at most this long")] = "10m"
    idle_timeout: Annotated[str, typer.Option(envvar="ETCDBACKUP_IDLE_TIMEOUT", rich_help_panel=_ETCD_PANEL,
                                              help="a stream silent this long has stalled: try the next member")
                            ] = "30s"

    def tls(self) -> TLSFiles | None:
        from ..etcd.client import TLSFiles

        return TLSFiles(self.cacert, self.cert, self.key) if (self.cacert or self.cert or self.key) else None


if typing.TYPE_CHECKING:
    from ..etcd.client import TLSFiles
    from ..retention import RetentionPolicy
    from ..usecases.source import SourceSpec

F = TypeVar("F", bound=Callable[..., Any])


def grouped(f: F) -> F:
    """Expand every OptionGroup parameter of a command into its options (for typer), and call the command with
    one group object per such parameter. Every parameter becomes keyword-only: typer passes them by name."""
    hints = typing.get_type_hints(f, include_extras=True)
    groups: dict[str, type[Any]] = {}
    params: list[inspect.Parameter] = []
    for p in inspect.signature(f).parameters.values():
        annotation = hints.get(p.name, p.annotation)
        if isinstance(annotation, type) and issubclass(annotation, OptionGroup):
            groups[p.name] = annotation
            field_hints = typing.get_type_hints(annotation, include_extras=True)
            params += [inspect.Parameter(
                fld.name, inspect.Parameter.KEYWORD_ONLY, annotation=field_hints[fld.name],
                default=inspect.Parameter.empty if fld.default is dataclasses.MISSING else fld.default)
                for fld in dataclasses.fields(typing.cast(Any, annotation))]
        else:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=annotation))
    names = [p.name for p in params]
    if len(names) != len(set(names)):
        raise TypeError(f"{f.__name__}: option names collide: {sorted(n for n in names if names.count(n) > 1)}")

    @functools.wraps(f)
    def command(**kwargs: Any) -> Any:
        for name, cls in groups.items():
            kwargs[name] = cls(**{fld.name: kwargs.pop(fld.name) for fld in dataclasses.fields(cls)})
        return f(**kwargs)

    del command.__wrapped__  # typer must see the expanded signature
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command  # type: ignore[return-value]


# ---------------------------------------------------------------------------- value parsing at the boundary
def seconds(text: str | None, flag: str) -> float | None:
    """A Go-style duration flag (`90s`, `1h30m`, `7d`) in seconds; None when not given."""
    if text is None or text == "":
        return None
    try:
        return parse_duration(text)
    except ValueError as e:
        raise UsageError(f"{flag}: {e}") from None

