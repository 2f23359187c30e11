"""`agent` commands: what runs inside the cluster (the CronJob's backup, the metrics exporter)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from ..backup import VERIFY_MODES, BackupOptions
from ..catalog import list_snapshots
from ..errors import EtcdBackupError, UsageError
from ..etcd.client import TLSFiles, split_endpoints
from ..monitor import assess
from ..run_status import load_status
from ..usecases.backup_run import BackupRunOptions, BackupRunReport, record_setup_failure, run_backup
from .common import (
    InsecureKeyFileOpt,
    KeepDailyOpt,
    KeepHourlyOpt,
    KeepLastOpt,
    KeepMonthlyOpt,
    KeepWeeklyOpt,
    KeepWithinOpt,
    KeyEnvOpt,
    KeyFileOpt,
    ProgressOpt,
    RetainAgeOpt,
    RetainCountOpt,
    S3EndpointOpt,
    S3RegionOpt,
    StoreOpt,
    get_key,
    get_store,
    retention_policy,
    seconds,
)

MaxAgeOpt = Annotated[str, typer.Option("--max-age", envvar="ETCDBACKUP_MAX_AGE",
                                        help="newest verified backup may be at most this old")]

agent_app = typer.Typer(help="What runs in the cluster: scheduled backups and the metrics exporter.",
                        no_args_is_help=True)


def _env(name: str) -> str:
    return f"ETCDBACKUP_{name}"


@agent_app.command("backup")
def backup_cmd(
    store: StoreOpt,
    endpoints: Annotated[str, typer.Option(envvar=_env("ENDPOINTS"),
                                           help="comma-separated etcd client URLs; the first healthy one is used")],
    cacert: Annotated[str | None, typer.Option(envvar=_env("CACERT"), help="etcd CA bundle")] = None,
    cert: Annotated[str | None, typer.Option(envvar=_env("CERT"), help="client certificate")] = None,
    key: Annotated[str | None, typer.Option(envvar=_env("KEY"), help="client certificate key")] = None,
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    allow_insecure_key_file: InsecureKeyFileOpt = False,
    no_encryption: Annotated[bool, typer.Option("--no-encryption", envvar=_env("NO_ENCRYPTION"),
                                                help="store unencrypted (must be explicit)")] = False,
    keep_last: KeepLastOpt = None,
    keep_within: KeepWithinOpt = None,
    keep_hourly: KeepHourlyOpt = None,
    keep_daily: KeepDailyOpt = None,
    keep_weekly: KeepWeeklyOpt = None,
    keep_monthly: KeepMonthlyOpt = None,
    retain_count: RetainCountOpt = None,
    retain_age: RetainAgeOpt = None,
    verify: Annotated[str, typer.Option(envvar=_env("VERIFY"),
                                        help="hash | status (read back + snapshot status) | restore")] = "status",
    compression_level: Annotated[int, typer.Option(envvar=_env("COMPRESSION_LEVEL"), min=1, max=19)] = 1,
    dial_timeout: Annotated[str, typer.Option(envvar=_env("DIAL_TIMEOUT"))] = "5s",
    command_timeout: Annotated[str, typer.Option(envvar=_env("COMMAND_TIMEOUT"),
                                                 help="the whole snapshot stream may take at most this long")] = "10m",
    idle_timeout: Annotated[str, typer.Option(envvar=_env("IDLE_TIMEOUT"), help="a snapshot stream silent for "
                                              "this long has stalled: try the next member")] = "30s",
    work_dir: Annotated[str | None, typer.Option(envvar=_env("WORK_DIR"), help="scratch space for verify")] = None,
    metrics_textfile: Annotated[str | None, typer.Option(envvar=_env("METRICS_TEXTFILE"))] = None,
    pushgateway: Annotated[str | None, typer.Option(envvar=_env("PUSHGATEWAY"))] = None,
    s3_endpoint_url: S3EndpointOpt = None,
    s3_region: S3RegionOpt = None,
    s3_sse: Annotated[str | None, typer.Option(envvar=_env("S3_SSE"), help="AES256 or aws:kms")] = None,
    s3_sse_kms_key_id: Annotated[str | None, typer.Option(envvar=_env("S3_SSE_KMS_KEY_ID"))] = None,
    progress: ProgressOpt = None,
) -> None:
    """Take one snapshot, store it, verify it, prune old ones (also after a failure, and first when the store is
    short of room). Exit 0 only when stored and verified."""
    try:
        if verify not in VERIFY_MODES:
            raise UsageError(f"--verify must be one of {', '.join(VERIFY_MODES)}")
        keyring = get_key(key_file, key_env, allow_insecure_key_file)
        if keyring is None and not no_encryption:
            raise UsageError("no encryption key: give --key-file (or --key-env), or --no-encryption explicitly")
        if keyring is not None and no_encryption:
            raise UsageError("--no-encryption conflicts with --key-file/--key-env")
        policy = retention_policy(keep_last, keep_within, keep_hourly, keep_daily, keep_weekly, keep_monthly,
                                  retain_count, retain_age)
        backup = BackupOptions(
            endpoints=split_endpoints(endpoints), key=keyring, tls=TLSFiles(cacert, cert, key) if (
                cacert or cert or key) else None, compression_level=compression_level,
            dial_timeout=seconds(dial_timeout, "--dial-timeout") or 5.0,
            command_timeout=seconds(command_timeout, "--command-timeout") or 600.0,
            idle_timeout=seconds(idle_timeout, "--idle-timeout") or 30.0, verify=verify, work_dir=work_dir,
            progress=progress, store=get_store(store, s3_endpoint_url, s3_region, create=True, sse=s3_sse,
                                               sse_kms_key_id=s3_sse_kms_key_id))
    except EtcdBackupError:
        _warn(record_setup_failure(store, metrics_textfile, pushgateway))
        raise
    report = run_backup(BackupRunOptions(backup, policy, metrics_textfile, pushgateway))
    _render_run(report)
    if not report.ok:
        raise typer.Exit(1)


def _render_run(report: BackupRunReport) -> None:
    """One JSON line on stdout for a success (what `now` parses); everything else on stderr."""
    for name in report.leftovers_removed:
        print(f"removed leftover {name}", file=sys.stderr)
    for sid in report.pruned:
        print(f"pruned {sid}", file=sys.stderr)
    _warn(report.warnings)
    m = report.manifest
    if m is None:
        print(f"error: {report.error}", file=sys.stderr)
        return
    print(json.dumps({"id": m.id, "revision": m.etcd_revision, "keys": m.key_count, "raw_size": m.raw_size,
                      "stored_size": m.stored_size, "sha256": m.raw_sha256, "member": m.member_endpoint,
                      "duration_seconds": m.duration_seconds, "verified": m.verification.get("level", "hash")}))


def _warn(lines: list[str]) -> None:
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)


@agent_app.command("monitor")
def monitor_cmd(store: StoreOpt, max_age: MaxAgeOpt = "1h", s3_endpoint_url: S3EndpointOpt = None,
                s3_region: S3RegionOpt = None, key_file: KeyFileOpt = None, key_env: KeyEnvOpt = None,
                allow_insecure_key_file: InsecureKeyFileOpt = False) -> None:
    """Check backup freshness once: exit 0 when fresh, 1 when the newest verified backup is too old. With the key,
    only authenticated snapshots count (a bucket writer cannot fake freshness)."""
    st = get_store(store, s3_endpoint_url, s3_region)
    listing = list_snapshots(st, get_key(key_file, key_env, allow_insecure_key_file))
    fresh = assess(listing.trusted, seconds(max_age, "--max-age") or 3600, datetime.now(UTC))
    rs = load_status(st)
    print(fresh.message + (f"; {rs.failures_total} failed runs, last: {rs.last_failure_message}"
                           if rs.failures_total else ""))
    if fresh.stale:
        raise typer.Exit(1)


@agent_app.command("exporter")
def exporter_cmd(store: StoreOpt, max_age: MaxAgeOpt = "1h",
                 listen: Annotated[str, typer.Option(envvar="ETCDBACKUP_LISTEN")] = "0.0.0.0:9101",
                 cache: Annotated[str, typer.Option(help="re-read the store at most this often")] = "15s",
                 s3_endpoint_url: S3EndpointOpt = None, s3_region: S3RegionOpt = None,
                 key_file: KeyFileOpt = None, key_env: KeyEnvOpt = None,
                 allow_insecure_key_file: InsecureKeyFileOpt = False) -> None:
    """Serve /metrics (backup metrics read from the store) and /healthz. With the key, only authenticated
    snapshots count as backups."""
    from ..exporter import make_exporter

    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise UsageError(f"--listen must be host:port, got {listen!r}")
    st = get_store(store, s3_endpoint_url, s3_region)
    keyring = get_key(key_file, key_env, allow_insecure_key_file)
    server = make_exporter(st, keyring, host or "0.0.0.0", int(port), seconds(max_age, "--max-age") or 3600,
                           seconds(cache, "--cache") or 0.0)
    print(f"serving backup metrics of {st.url} on http://{listen}/metrics", file=sys.stderr)
    try:
        server.serve_forever()
    finally:
        server.server_close()
