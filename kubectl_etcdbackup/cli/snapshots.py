"""Commands on the snapshots in a store: list, verify, prune, restore, snapshot get, keygen."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from ..catalog import list_snapshots, resolve, warn_problems
from ..durations import format_duration
from ..errors import UsageError
from ..etcd.tools import EtcdTool
from ..fetch import fetch_to_file
from ..keys import Keyring, generate_key, rotate_key_file
from ..manifest import LEGACY_UNAUTHENTICATED, SnapshotManifest
from ..output import human_bytes, render
from ..restore import data_dir_exists, execute_restore
from ..restore_plan import DEFAULT_BUMP_REVISION, MemberSpec, plan_restore
from ..stores import Store
from ..usecases.prune import PruneOptions, run_prune
from ..verify import verify_snapshot
from .common import (
    AllowPlaintextOpt,
    InsecureKeyFileOpt,
    KeepDailyOpt,
    KeepHourlyOpt,
    KeepLastOpt,
    KeepMonthlyOpt,
    KeepWeeklyOpt,
    KeepWithinOpt,
    KeyEnvOpt,
    KeyFileOpt,
    OutputOpt,
    ProgressOpt,
    RetainAgeOpt,
    RetainCountOpt,
    S3EndpointOpt,
    S3RegionOpt,
    StoreOpt,
    check_output,
    get_key,
    get_store,
    retention_policy,
)

LIST_COLUMNS = [("id", "ID"), ("created", "CREATED"), ("age", "AGE"), ("revision", "REVISION"),
                ("keys", "KEYS"), ("raw_size", "SIZE"), ("stored_size", "STORED"), ("etcd", "ETCD"),
                ("cipher", "CIPHER"), ("verified", "VERIFIED"), ("trust", "TRUST")]


def snapshot_rows(snapshots: list[SnapshotManifest], now: datetime) -> list[dict[str, Any]]:
    rows = []
    for m in snapshots:
        row = m.summary()
        row["age"] = format_duration((now - m.created).total_seconds())
        rows.append(row)
    return rows


def _cell(key: str, value: Any) -> str:
    if key in ("raw_size", "stored_size"):
        return human_bytes(value)
    if key == "verified":
        return "yes" if value else "no"
    return "" if value is None else str(value)


def print_snapshots(snapshots: list[SnapshotManifest], fmt: str) -> None:
    now = datetime.now(UTC)
    if fmt == "table" and not snapshots:
        print("No snapshots.", file=sys.stderr)
        return
    doc = [m.__dict__ | {"age_seconds": int((now - m.created).total_seconds())} for m in snapshots]
    print(render(snapshot_rows(snapshots, now), fmt, LIST_COLUMNS, _cell, doc=None if fmt == "table" else doc))


def list_store(store: str, output: str = "table", s3_endpoint_url: str | None = None,
               s3_region: str | None = None, keyring: Keyring | None = None, allow_plaintext: bool = False) -> None:
    """`list --store`: the snapshots in a store, newest first, each judged against the keyring."""
    check_output(output)
    listing = list_snapshots(get_store(store, s3_endpoint_url, s3_region), keyring,
                             allow_plaintext=allow_plaintext)
    warn_problems(listing)
    print_snapshots(listing.snapshots, output)


def warn_legacy(m: SnapshotManifest) -> None:
    """An explicitly named version 1 snapshot is still readable; say that nothing proves who made its manifest."""
    if m.untrusted_reason == LEGACY_UNAUTHENTICATED:
        print(f"warning: {m.id}: {LEGACY_UNAUTHENTICATED}; its object is still authenticated frame by frame",
              file=sys.stderr)


def verify_cmd(snapshot: Annotated[str, typer.Argument(help="snapshot id or 'latest'")], store: StoreOpt,
               key_file: KeyFileOpt = None, key_env: KeyEnvOpt = None,
               test_restore: Annotated[bool, typer.Option(help="also restore into a scratch dir")] = False,
               output: OutputOpt = "table", s3_endpoint_url: S3EndpointOpt = None,
               s3_region: S3RegionOpt = None, progress: ProgressOpt = None,
               allow_plaintext: AllowPlaintextOpt = False, allow_insecure_key_file: InsecureKeyFileOpt = False,
               ) -> None:
    """Re-read a snapshot: authenticate, check hashes, decrypt, decompress, run `snapshot status`."""
    check_output(output)
    st = get_store(store, s3_endpoint_url, s3_region)
    keyring = get_key(key_file, key_env, allow_insecure_key_file)
    m = resolve(st, snapshot, keyring, allow_plaintext=allow_plaintext)
    warn_legacy(m)
    result = verify_snapshot(st, m, keyring, test_restore=test_restore, progress=progress,
                             allow_plaintext=allow_plaintext)
    row = result.as_dict() | {"status": "ok"}
    print(render([row], output, [("id", "ID"), ("status", "STATUS"), ("level", "LEVEL"),
                                 ("revision", "REVISION"), ("total_keys", "DB KEYS"), ("tool", "TOOL")]))


def prune_cmd(store: StoreOpt, keep_last: KeepLastOpt = None, keep_within: KeepWithinOpt = None,
              keep_hourly: KeepHourlyOpt = None, keep_daily: KeepDailyOpt = None, keep_weekly: KeepWeeklyOpt = None,
              keep_monthly: KeepMonthlyOpt = None, retain_count: RetainCountOpt = None,
              retain_age: RetainAgeOpt = None,
              dry_run: Annotated[bool, typer.Option("--dry-run", help="only show what would go, and why")] = False,
              key_file: KeyFileOpt = None, key_env: KeyEnvOpt = None,
              allow_insecure_key_file: InsecureKeyFileOpt = False, allow_plaintext: AllowPlaintextOpt = False,
              output: OutputOpt = "table", s3_endpoint_url: S3EndpointOpt = None,
              s3_region: S3RegionOpt = None) -> None:
    """Delete the snapshots no --keep-* rule keeps (never the newest verified one, never one that cannot be
    authenticated), objects without a manifest over a day old, and what killed runs left behind."""
    check_output(output)
    policy = retention_policy(keep_last, keep_within, keep_hourly, keep_daily, keep_weekly, keep_monthly,
                              retain_count, retain_age)
    if policy.empty:
        raise UsageError("give at least one of --keep-last, --keep-within, --keep-hourly, --keep-daily, "
                         "--keep-weekly, --keep-monthly")
    report = run_prune(PruneOptions(get_store(store, s3_endpoint_url, s3_region),
                                    get_key(key_file, key_env, allow_insecure_key_file), policy, dry_run=dry_run,
                                    allow_plaintext=allow_plaintext))
    for problem in report.problems:
        print(f"warning: {problem}", file=sys.stderr)
    rows = [{"id": r.id, "kind": r.kind, "action": r.action, "reasons": r.reasons} for r in report.rows]
    print(render(rows, output, [("id", "ID"), ("kind", "KIND"), ("action", "ACTION"), ("reasons", "REASONS")],
                 lambda k, v: ", ".join(v) if k == "reasons" else str(v)))


def restore_member(
    snapshot: str, store: str, data_dir: str, name: str, initial_cluster: str, initial_advertise_peer_urls: str,
    initial_cluster_token: str | None = None, bump_revision: int = DEFAULT_BUMP_REVISION,
    mark_compacted: bool | None = None, move_aside: bool = False, wal_dir: str | None = None,
    dry_run: bool = False, key_file: str | None = None, key_env: str | None = None, etcdutl: str | None = None,
    output: str = "table", s3_endpoint_url: str | None = None, s3_region: str | None = None,
    progress: bool | None = None, allow_plaintext: bool = False, allow_insecure_key_file: bool = False,
) -> None:
    """Restore one member's data dir from a snapshot (the `restore` command's work without --plan)."""
    check_output(output)
    st = get_store(store, s3_endpoint_url, s3_region)
    keyring = get_key(key_file, key_env, allow_insecure_key_file)
    m = resolve(st, snapshot, keyring, allow_plaintext=allow_plaintext)
    warn_legacy(m)
    member = MemberSpec(name, data_dir, initial_cluster, initial_advertise_peer_urls, initial_cluster_token,
                        bump_revision, bump_revision > 0 if mark_compacted is None else mark_compacted, wal_dir)
    plan = plan_restore(m.id, st.url, member, data_dir_exists=data_dir_exists(data_dir), move_aside=move_aside)
    tool = EtcdTool(etcdutl)
    if dry_run:
        try:
            tool.check_restore_flags(member.bump_revision, member.mark_compacted)
        except Exception as e:  # noqa: BLE001 - shown as a warning in the plan
            plan.warnings.append(str(e))
        _print_plan(plan.as_dict(), output)
        return
    report = execute_restore(plan, st, m, keyring, tool, progress, allow_plaintext=allow_plaintext)
    for w in [*report.notes, *plan.warnings]:
        print(f"warning: {w}", file=sys.stderr)
    result = {"restored": m.id, "revision": m.etcd_revision, "member": name, "data_dir": plan.final_dir,
              "moved_aside_to": plan.aside_dir, "token": plan.token}
    print(render([result], output, [(k, k.upper()) for k in result]))


def _print_plan(plan: dict[str, Any], output: str) -> None:
    if output != "table":
        print(render([], output, doc=plan))
        return
    print(f"Restore plan (dry run, nothing changed): snapshot {plan['snapshot']} -> member {plan['member']}")
    for i, step in enumerate(plan["steps"], 1):  # type: ignore[arg-type]
        print(f"  {i}. {step}")
    for w in plan["warnings"]:  # type: ignore[union-attr]
        print(f"warning: {w}")


def download(st: Store, ref: str, keyring: Keyring | None, file: str, progress: bool | None,
             allow_plaintext: bool = False) -> None:
    """`snapshot get`: write a verified, decrypted etcd snapshot file (as `etcdctl snapshot save` would), 0600."""
    m = resolve(st, ref, keyring, allow_plaintext=allow_plaintext)
    warn_legacy(m)
    fetch_to_file(st, m, keyring, file, progress, allow_plaintext=allow_plaintext)
    print(f"{m.id} -> {file} ({human_bytes(m.raw_size)}, revision {m.etcd_revision}, sha256 {m.raw_sha256})")


def keygen_cmd(
    rotate: Annotated[str | None, typer.Option(
        "--rotate", metavar="KEY_FILE", help="put a new key first in this key file (mode 0600), keeping the older "
        "ones to open the snapshots they sealed; then update the Secret from the file")] = None,
    keep: Annotated[int | None, typer.Option(min=1, help="with --rotate: keep only the newest N old keys")] = None,
) -> None:
    """Print a new random encryption key (base64) for the key Secret, or rotate a key file."""
    if rotate is None:
        if keep is not None:
            raise UsageError("--keep needs --rotate")
        print(generate_key())
        return
    new_id, old_ids = rotate_key_file(rotate, keep)
    print(f"{rotate}: new key {new_id} seals from now on; older keys kept to open old snapshots: "
          f"{', '.join(old_ids) or 'none'}", file=sys.stderr)


def quickstart_cmd(
    store_dir: Annotated[str, typer.Option(help="local directory for the backups")] = "./etcd-backups",
    keys: Annotated[int, typer.Option(help="demo keys to write")] = 1000,
) -> None:
    """Embedded default: start a local etcd, back it up (encrypted) to a local directory, verify, list."""
    from pathlib import Path

    from ..backup import BackupOptions, take_backup
    from ..keys import load_keyring
    from ..quickstart import demo_cluster, ensure_demo_key

    directory = Path(store_dir).resolve()
    key_file = ensure_demo_key(directory)
    st = get_store(f"file://{directory}", create=True)
    with demo_cluster(keys) as url:
        m = take_backup(BackupOptions([url], st, load_keyring(str(key_file), None), verify="restore"))
    print(f"backed up local etcd {url}: snapshot {m.id}, revision {m.etcd_revision}, {m.key_count} keys, "
          f"{human_bytes(m.raw_size)} -> {human_bytes(m.stored_size)} (zstd + AES-256-GCM, key {key_file}), "
          f"verified by a test restore")
    print_snapshots(list_snapshots(st, load_keyring(str(key_file), None)).snapshots, "table")
