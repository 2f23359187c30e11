"""`agent ...`: what runs in the cluster (the CronJob's backup, the exporter, the freshness monitor, the catalog
`status` reads). Every option also reads ETCDBACKUP_<OPTION> from the environment."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import Degraded, EtcdBackupError, UsageError
from . import render
from .common import (
    AgentStoreOptions,
    EtcdOptions,
    KeyOptions,
    ProgressOpt,
    RetentionOptions,
    VerifyMode,
    grouped,
    seconds,
)

if TYPE_CHECKING:
    from ..backup import BackupOptions
    from ..usecases.backup_run import BackupRunReport

MaxAgeOpt = Annotated[str, typer.Option("--max-age", envvar="ETCDBACKUP_MAX_AGE",
                                        help="the newest trusted, verified backup may be at most this old")]


CopyToOpt = Annotated[list[str] | None, typer.Option(
    "--copy-to", envvar="ETCDBACKUP_COPY_TO", rich_help_panel="Store",
    help="also store the snapshot here (repeatable; same id, verified, committed and pruned on its own); S3 "
         "settings as query parameters: s3://bucket/prefix?endpoint=URL&region=R&sse=aws:kms&kms_key_id=ID")]


def register(agent: typer.Typer) -> None:
    agent.command("backup")(backup_cmd)
    agent.command("monitor")(monitor_cmd)
    agent.command("exporter")(exporter_cmd)
    agent.command("catalog")(catalog_cmd)


@grouped
def backup_cmd(
    store: AgentStoreOptions, etcd: EtcdOptions, key: KeyOptions, retention: RetentionOptions,
    no_encryption: Annotated[bool, typer.Option("--no-encryption", envvar="ETCDBACKUP_NO_ENCRYPTION",
                                                help="store unencrypted (must be explicit)")] = False,
    verify: Annotated[VerifyMode, typer.Option(
        envvar="ETCDBACKUP_VERIFY", help="hash: etcd's stream hash; status: + the db's bbolt pages walked as they "
        "stream by (revision, key count); restore: + read back, a test restore and `snapshot status`")]
    = VerifyMode.status,
    compression_level: Annotated[int, typer.Option(envvar="ETCDBACKUP_COMPRESSION_LEVEL", min=1, max=19)] = 1,
    work_dir: Annotated[str | None, typer.Option(envvar="ETCDBACKUP_WORK_DIR",
                                                 help="scratch space for --verify restore")] = None,
    metrics_textfile: Annotated[str | None, typer.Option(envvar="ETCDBACKUP_METRICS_TEXTFILE")] = None,
    pushgateway: Annotated[str | None, typer.Option(envvar="ETCDBACKUP_PUSHGATEWAY")] = None,
    progress: ProgressOpt = None,
    copy_to: CopyToOpt = None,
) -> None:
    """Take one snapshot, store it (and its copies), verify it, prune old ones (also after a failure, and first when
    the store is short of room). Prints one JSON line; exits 0 only when the snapshot is stored and verified in
    every store."""
    from ..usecases.backup_run import BackupRunOptions, record_setup_failure, run_backup

    try:
        opts = BackupRunOptions(_backup_options(store, etcd, key, no_encryption, verify, compression_level,
                                                work_dir, progress, copy_to or []), retention.policy(),
                                metrics_textfile, pushgateway)
    except EtcdBackupError:
        render.warn(record_setup_failure(store.store, metrics_textfile, pushgateway))
        raise
    _render_backup(run_backup(opts))


def _render_backup(report: BackupRunReport) -> None:
    for name in report.leftovers_removed:
        render.note(f"removed leftover {name}")
    for sid in report.pruned:
        render.note(f"pruned {sid}")
    render.warn(report.warnings)
    if (m := report.manifest) is not None:
        copies = [{"store": o.url, "ok": o.manifest is not None, **({"error": o.error} if o.error else {})}
                  for o in report.stores[1:]]
        render.out(json.dumps({"id": m.id, "revision": m.etcd_revision, "keys": m.key_count, "raw_size": m.raw_size,
                               "stored_size": m.stored_size, "sha256": m.raw_sha256, "member": m.member_endpoint,
                               "duration_seconds": m.duration_seconds, "verified": m.verification.get("level", "hash"),
                               **({"copies": copies} if copies else {})}))
    if not report.ok:
        raise EtcdBackupError(report.error)


def _backup_options(store: AgentStoreOptions, etcd: EtcdOptions, key: KeyOptions, no_encryption: bool, verify: str,
                    compression_level: int, work_dir: str | None, progress: bool | None,
                    copy_to: list[str]) -> BackupOptions:
    from ..backup import BackupOptions, open_copy_store
    from ..etcd.client import split_endpoints

    keyring = key.keyring()
    if keyring is None and not no_encryption:
        raise UsageError("no encryption key: give --encryption-key-file (or --key-env), or --no-encryption explicitly")
    if keyring is not None and no_encryption:
        raise UsageError("--no-encryption conflicts with --encryption-key-file/--key-env")
    return BackupOptions(
        endpoints=split_endpoints(etcd.endpoints), key=keyring,
        tls=etcd.tls(),
        compression_level=compression_level, dial_timeout=seconds(etcd.dial_timeout, "--dial-timeout") or 5.0,
        command_timeout=seconds(etcd.command_timeout, "--command-timeout") or 600.0,
        idle_timeout=seconds(etcd.idle_timeout, "--idle-timeout") or 30.0, verify=str(verify), work_dir=work_dir,
        progress=progress, store=store.open(create=True), copies=[open_copy_store(url) for url in copy_to])


@grouped
def monitor_cmd(store: AgentStoreOptions, key: KeyOptions, max_age: MaxAgeOpt = "1h") -> None:
    """Check backup freshness once: exit 0 when fresh, 3 when the newest trusted, verified backup is too old (with
    the key, only authenticated snapshots count: a bucket writer cannot fake freshness)."""
    from ..usecases.freshness import check_freshness

    report = check_freshness(store.open(), key.keyring(), seconds(max_age, "--max-age") or 3600.0)
    render.out(report.message)
    if report.stale:
        raise Degraded(report.message)


@grouped
def exporter_cmd(store: AgentStoreOptions, key: KeyOptions, max_age: MaxAgeOpt = "1h",
                 listen: Annotated[str, typer.Option(envvar="ETCDBACKUP_LISTEN", help="host:port to serve on")]
                 = "127.0.0.1:9101",
                 cache: Annotated[str, typer.Option(help="re-read the store at most this often")] = "15s") -> None:
    """Serve /metrics (backup metrics read from the store itself) and /healthz. With the key, only authenticated
    snapshots count as backups."""
    from ..exporter import make_exporter

    host, _, port = listen.rpartition(":")
    if not port.isdigit() or not host:
        raise UsageError(f"--listen must be host:port, got {listen!r}")
    st = store.open()
    server = make_exporter(st, key.keyring(), host, int(port), seconds(max_age, "--max-age") or 3600.0,
                           seconds(cache, "--cache") or 0.0)
    render.note(f"serving backup metrics of {st.url} on http://{listen}/metrics")
    try:
        server.serve_forever()
    finally:
        server.server_close()


@grouped
def catalog_cmd(store: AgentStoreOptions, key: KeyOptions) -> None:
    """Print the store's snapshots and the agent's run record as one JSON line (`status` reads it in-cluster)."""
    from ..k8s.store_catalog import catalog_of

    render.out(catalog_of(store.open(), key.keyring()).to_json())
