"""`agent` commands: what runs inside the cluster (the CronJob's backup, the metrics exporter)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

import typer

from ..backup import VERIFY_MODES, BackupOptions, take_backup
from ..catalog import list_snapshots
from ..errors import EtcdBackupError, UsageError
from ..etcd.client import TLSFiles, split_endpoints
from ..manifest import format_time
from ..monitor import assess
from ..run_status import RunStatus, load_status, save_status
from ..stores import Store
from .common import (
    KeyEnvOpt,
    KeyFileOpt,
    ProgressOpt,
    S3EndpointOpt,
    S3RegionOpt,
    StoreOpt,
    get_key,
    get_store,
    seconds,
)
from .snapshots import prune

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
    no_encryption: Annotated[bool, typer.Option("--no-encryption", envvar=_env("NO_ENCRYPTION"),
                                                help="store unencrypted (must be explicit)")] = False,
    retain_count: Annotated[int | None, typer.Option(envvar=_env("RETAIN_COUNT"))] = None,
    retain_age: Annotated[str | None, typer.Option(envvar=_env("RETAIN_AGE"), help="e.g. 7d")] = None,
    verify: Annotated[str, typer.Option(envvar=_env("VERIFY"),
                                        help="hash | status (read back + snapshot status) | restore")] = "status",
    compression_level: Annotated[int, typer.Option(envvar=_env("COMPRESSION_LEVEL"), min=1, max=19)] = 1,
    dial_timeout: Annotated[str, typer.Option(envvar=_env("DIAL_TIMEOUT"))] = "5s",
    command_timeout: Annotated[str, typer.Option(envvar=_env("COMMAND_TIMEOUT"))] = "30m",
    work_dir: Annotated[str | None, typer.Option(envvar=_env("WORK_DIR"), help="scratch space for verify")] = None,
    metrics_textfile: Annotated[str | None, typer.Option(envvar=_env("METRICS_TEXTFILE"))] = None,
    pushgateway: Annotated[str | None, typer.Option(envvar=_env("PUSHGATEWAY"))] = None,
    s3_endpoint_url: S3EndpointOpt = None,
    s3_region: S3RegionOpt = None,
    s3_sse: Annotated[str | None, typer.Option(envvar=_env("S3_SSE"), help="AES256 or aws:kms")] = None,
    s3_sse_kms_key_id: Annotated[str | None, typer.Option(envvar=_env("S3_SSE_KMS_KEY_ID"))] = None,
    progress: ProgressOpt = None,
) -> None:
    """Take one snapshot, store it, verify it, prune old ones. Exit 0 only when stored and verified."""
    started = time.monotonic()
    st = None
    try:
        if verify not in VERIFY_MODES:
            raise UsageError(f"--verify must be one of {', '.join(VERIFY_MODES)}")
        enc_key = get_key(key_file, key_env)
        if enc_key is None and not no_encryption:
            raise UsageError("no encryption key: give --key-file (or --key-env), or --no-encryption explicitly")
        if enc_key is not None and no_encryption:
            raise UsageError("--no-encryption conflicts with --key-file/--key-env")
        retain_age_s = seconds(retain_age, "--retain-age")
        st = get_store(store, s3_endpoint_url, s3_region, create=True, sse=s3_sse, sse_kms_key_id=s3_sse_kms_key_id)
        tls = TLSFiles(cacert, cert, key) if (cacert or cert or key) else None
        opts = BackupOptions(endpoints=split_endpoints(endpoints), store=st, key=enc_key, tls=tls,
                             compression_level=compression_level, dial_timeout=seconds(dial_timeout, "--dial-timeout")
                             or 5.0, command_timeout=seconds(command_timeout, "--command-timeout") or 1800.0,
                             verify=verify, work_dir=work_dir, progress=progress)
        manifest = take_backup(opts)
    except (EtcdBackupError, SystemExit, KeyboardInterrupt) as e:  # SystemExit: SIGTERM (Job deadline, eviction)
        if st is not None:
            message = str(e) if isinstance(e, EtcdBackupError) else f"interrupted ({type(e).__name__} {e})".strip()
            _record(st, lambda rs: rs.record_failure(_now(), message))
        _publish(st.url if st else store, False, time.monotonic() - started, None, metrics_textfile, pushgateway)
        raise
    print(json.dumps({"id": manifest.id, "revision": manifest.etcd_revision, "keys": manifest.key_count,
                      "raw_size": manifest.raw_size, "stored_size": manifest.stored_size,
                      "sha256": manifest.raw_sha256, "member": manifest.member_endpoint,
                      "duration_seconds": manifest.duration_seconds, "verified": manifest.verification.get(
                          "level", "hash")}))
    _record(st, lambda rs: rs.record_success(manifest.created_at, manifest.id))
    if retain_count is not None or retain_age_s is not None:
        for row in prune(st, retain_count, retain_age_s, dry_run=False):
            if row["action"] == "deleted":
                print(f"pruned {row['id']}", file=sys.stderr)
    _publish(st.url, True, time.monotonic() - started, manifest.stored_size, metrics_textfile, pushgateway)


def _publish(store_url: str, success: bool, duration: float, size: int | None, textfile: str | None,
             pushgateway: str | None) -> None:
    """Metrics are optional: prometheus_client is only imported when they are asked for."""
    if not (textfile or pushgateway):
        return
    from ..metrics import publish

    for p in publish(store_url, success=success, duration=duration, size=size, textfile=textfile,
                     pushgateway=pushgateway):
        print(f"warning: {p}", file=sys.stderr)


def _now() -> str:
    return format_time(datetime.now(UTC))


def _record(store: Store, update: Callable[[RunStatus], None]) -> None:
    """Update the run record in the store; best effort, never fails the run."""
    try:
        status = load_status(store)
        update(status)
        save_status(store, status)
    except EtcdBackupError as e:
        print(f"warning: cannot update run status: {e}", file=sys.stderr)


@agent_app.command("monitor")
def monitor_cmd(store: StoreOpt, max_age: MaxAgeOpt = "1h", s3_endpoint_url: S3EndpointOpt = None,
                s3_region: S3RegionOpt = None) -> None:
    """Check backup freshness once: exit 0 when fresh, 1 when the newest verified backup is too old."""
    st = get_store(store, s3_endpoint_url, s3_region)
    fresh = assess(list_snapshots(st).snapshots, seconds(max_age, "--max-age") or 3600, datetime.now(UTC))
    rs = load_status(st)
    print(fresh.message + (f"; {rs.failures_total} failed runs, last: {rs.last_failure_message}"
                           if rs.failures_total else ""))
    if fresh.stale:
        raise typer.Exit(1)


@agent_app.command("exporter")
def exporter_cmd(store: StoreOpt, max_age: MaxAgeOpt = "1h",
                 listen: Annotated[str, typer.Option(envvar="ETCDBACKUP_LISTEN")] = "0.0.0.0:9101",
                 cache: Annotated[str, typer.Option(help="re-read the store at most this often")] = "15s",
                 s3_endpoint_url: S3EndpointOpt = None, s3_region: S3RegionOpt = None) -> None:
    """Serve /metrics (backup metrics read from the store) and /healthz."""
    from ..exporter import make_exporter

    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise UsageError(f"--listen must be host:port, got {listen!r}")
    st = get_store(store, s3_endpoint_url, s3_region)
    server = make_exporter(st, host or "0.0.0.0", int(port), seconds(max_age, "--max-age") or 3600,
                           seconds(cache, "--cache") or 0.0)
    print(f"serving backup metrics of {st.url} on http://{listen}/metrics", file=sys.stderr)
    try:
        server.serve_forever()
    finally:
        server.server_close()
