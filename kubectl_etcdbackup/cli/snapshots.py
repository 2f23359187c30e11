"""Commands on the snapshots in a store: list, verify, prune, restore, snapshot get, keygen."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from ..catalog import delete_snapshot, list_snapshots, resolve, warn_problems
from ..durations import format_duration
from ..errors import UsageError
from ..etcd.tools import EtcdTool
from ..fetch import fetch_to_file
from ..keys import generate_key
from ..manifest import OBJECT_SUFFIX, SnapshotManifest, id_time
from ..output import human_bytes, render
from ..restore import data_dir_exists, execute_restore
from ..restore_plan import DEFAULT_BUMP_REVISION, MemberSpec, plan_restore
from ..retention import RetentionPolicy, decide, stale_orphans
from ..stores import Store
from ..verify import verify_snapshot
from .common import (
    KeyEnvOpt,
    KeyFileOpt,
    OutputOpt,
    ProgressOpt,
    S3EndpointOpt,
    S3RegionOpt,
    StoreOpt,
    check_output,
    get_key,
    get_store,
    seconds,
)

LIST_COLUMNS = [("id", "ID"), ("created", "CREATED"), ("age", "AGE"), ("revision", "REVISION"),
                ("keys", "KEYS"), ("raw_size", "SIZE"), ("stored_size", "STORED"), ("etcd", "ETCD"),
                ("cipher", "CIPHER"), ("verified", "VERIFIED")]


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
               s3_region: str | None = None) -> None:
    """`list --store`: the snapshots in a store, newest first."""
    check_output(output)
    listing = list_snapshots(get_store(store, s3_endpoint_url, s3_region))
    warn_problems(listing)
    print_snapshots(listing.snapshots, output)


def verify_cmd(snapshot: Annotated[str, typer.Argument(help="snapshot id or 'latest'")], store: StoreOpt,
               key_file: KeyFileOpt = None, key_env: KeyEnvOpt = None,
               test_restore: Annotated[bool, typer.Option(help="also restore into a scratch dir")] = False,
               output: OutputOpt = "table", s3_endpoint_url: S3EndpointOpt = None,
               s3_region: S3RegionOpt = None, progress: ProgressOpt = None) -> None:
    """Re-read a snapshot: check hashes, decrypt, decompress, run `snapshot status`."""
    check_output(output)
    st = get_store(store, s3_endpoint_url, s3_region)
    m = resolve(st, snapshot)
    result = verify_snapshot(st, m, get_key(key_file, key_env), test_restore=test_restore, progress=progress)
    row = result.as_dict() | {"status": "ok"}
    print(render([row], output, [("id", "ID"), ("status", "STATUS"), ("level", "LEVEL"),
                                 ("revision", "REVISION"), ("total_keys", "DB KEYS"), ("tool", "TOOL")]))


def prune_cmd(store: StoreOpt,
              retain_count: Annotated[int | None, typer.Option(envvar="ETCDBACKUP_RETAIN_COUNT",
                                                               help="keep at least the newest N")] = None,
              retain_age: Annotated[str | None, typer.Option(envvar="ETCDBACKUP_RETAIN_AGE",
                                                             help="keep everything younger, e.g. 7d")] = None,
              dry_run: Annotated[bool, typer.Option("--dry-run", help="only show what would go")] = False,
              output: OutputOpt = "table", s3_endpoint_url: S3EndpointOpt = None,
              s3_region: S3RegionOpt = None) -> None:
    """Delete snapshots beyond both the retain count and the retain age; never the newest verified one."""
    check_output(output)
    if retain_count is None and retain_age is None:
        raise UsageError("give --retain-count and/or --retain-age")
    st = get_store(store, s3_endpoint_url, s3_region)
    rows = prune(st, retain_count, seconds(retain_age, "--retain-age"), dry_run)
    print(render(rows, output, [("id", "ID"), ("action", "ACTION"), ("reason", "REASON")]))


def prune(st: Store, retain_count: int | None, retain_age_s: float | None, dry_run: bool) -> list[dict[str, Any]]:
    try:
        policy = RetentionPolicy(retain_count, retain_age_s)
    except ValueError as e:
        raise UsageError(str(e)) from None
    listing = list_snapshots(st)
    warn_problems(listing)
    now = datetime.now(UTC)
    decision = decide(listing.snapshots, policy, now)
    doomed_ids = {m.id for m in decision.delete}
    rows = []
    for m in listing.snapshots:
        doomed = m.id in doomed_ids
        if doomed and not dry_run:
            delete_snapshot(st, m)
        action = ("would delete" if dry_run else "deleted") if doomed else "keep"
        rows.append({"id": m.id, "action": action, "reason": decision.reasons[m.id]})
    for name in stale_orphans(listing.orphans, lambda n: id_time(n.removesuffix(OBJECT_SUFFIX)), now):
        if not dry_run:
            st.delete(name)
        rows.append({"id": name, "action": "would delete" if dry_run else "deleted",
                     "reason": "object without a manifest, over a day old (a failed backup, never a snapshot)"})
    return rows


def restore_member(
    snapshot: str, store: str, data_dir: str, name: str, initial_cluster: str, initial_advertise_peer_urls: str,
    initial_cluster_token: str | None = None, bump_revision: int = DEFAULT_BUMP_REVISION,
    mark_compacted: bool | None = None, move_aside: bool = False, wal_dir: str | None = None,
    dry_run: bool = False, key_file: str | None = None, key_env: str | None = None, etcdutl: str | None = None,
    output: str = "table", s3_endpoint_url: str | None = None, s3_region: str | None = None,
    progress: bool | None = None,
) -> None:
    """Restore one member's data dir from a snapshot (the `restore` command's work without --plan)."""
    check_output(output)
    st = get_store(store, s3_endpoint_url, s3_region)
    m = resolve(st, snapshot)
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
    key = get_key(key_file, key_env)
    execute_restore(plan, st, m, key, tool, progress)
    for w in plan.warnings:
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


def download(st: Store, ref: str, key: bytes | None, file: str, progress: bool | None) -> None:
    """`snapshot get`: write a verified, decrypted etcd snapshot file (as `etcdctl snapshot save` would)."""
    m = resolve(st, ref)
    fetch_to_file(st, m, key, file, progress)
    print(f"{m.id} -> {file} ({human_bytes(m.raw_size)}, revision {m.etcd_revision}, sha256 {m.raw_sha256})")


def keygen_cmd() -> None:
    """Print a new random encryption key (base64) for the key Secret."""
    print(generate_key())


def quickstart_cmd(
    store_dir: Annotated[str, typer.Option(help="local directory for the backups")] = "./etcd-backups",
    keys: Annotated[int, typer.Option(help="demo keys to write")] = 1000,
) -> None:
    """Embedded default: start a local etcd, back it up (encrypted) to a local directory, verify, list."""
    from pathlib import Path

    from ..backup import BackupOptions, take_backup
    from ..keys import load_key
    from ..quickstart import demo_cluster, ensure_demo_key

    directory = Path(store_dir).resolve()
    key_file = ensure_demo_key(directory)
    st = get_store(f"file://{directory}", create=True)
    with demo_cluster(keys) as url:
        m = take_backup(BackupOptions([url], st, load_key(str(key_file), None), verify="restore"))
    print(f"backed up local etcd {url}: snapshot {m.id}, revision {m.etcd_revision}, {m.key_count} keys, "
          f"{human_bytes(m.raw_size)} -> {human_bytes(m.stored_size)} (zstd + AES-256-GCM, key {key_file}), "
          f"verified by a test restore")
    listing = list_snapshots(st)
    print_snapshots(listing.snapshots, "table")
