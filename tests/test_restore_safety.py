"""Restore safety: a running etcd's data dir is refused, tools without --bump-revision are refused with
advice, a dry run changes nothing, and verification levels up to a test restore."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest
from cli_helpers import backup_args, run_cli, write_key

from kubectl_etcdbackup.catalog import resolve
from kubectl_etcdbackup.errors import RestoreRefused
from kubectl_etcdbackup.etcd.tools import EtcdTool, RestoreArgs
from kubectl_etcdbackup.keys import load_keyring
from kubectl_etcdbackup.restore import RestoreReport, data_dir_exists, execute_restore
from kubectl_etcdbackup.restore_plan import MemberSpec, plan_restore
from kubectl_etcdbackup.stores import open_store


@pytest.fixture
def snap(etcd35_tls_cluster, file_store_url, tmp_path, capsys):
    key = write_key(tmp_path / "key")
    r = run_cli(capsys, *backup_args(etcd35_tls_cluster, file_store_url, key, "--verify", "restore"))
    assert r.rc == 0, r.err
    assert r.json()["verified"] == "restore"
    return r.json()["id"], key


def member_args(store: str, sid: str, key, data_dir, *extra: str) -> list:
    return ["restore", sid, "--store", store, "--key-file", key, "--data-dir", data_dir, "--name", "m0",
            "--initial-cluster", "m0=https://127.0.0.1:2380", "--initial-advertise-peer-urls",
            "https://127.0.0.1:2380", "--no-progress", *extra]


def test_refuses_data_dir_of_running_etcd(snap, file_store_url, etcd_cluster_factory, capsys) -> None:
    sid, key = snap
    running = etcd_cluster_factory("3.5", 1, True)
    data_dir = running.data_dirs[0]
    before = sorted(p.name for p in data_dir.parent.iterdir())
    r = run_cli(capsys, *member_args(file_store_url, sid, key, data_dir, "--move-aside", "--bump-revision", "0"))
    assert r.rc == 1 and "etcd is running on" in r.err and "Nothing was changed" in r.err
    lock = f".{data_dir.name}.restore.lock"  # the restore lock file stays (removing lock files races)
    assert sorted(p.name for p in data_dir.parent.iterdir() if p.name != lock) == before
    running.put("/still", "alive")


def test_old_etcdutl_without_bump_revision_is_refused_with_advice(snap, file_store_url, tmp_path, capsys) -> None:
    sid, key = snap
    data_dir = tmp_path / "m0.etcd"
    r = run_cli(capsys, *member_args(file_store_url, sid, key, data_dir))  # default: bump 1e9 + mark compacted
    assert r.rc == 1 and "--bump-revision 0" in r.err
    assert not data_dir.exists() and not list(tmp_path.glob("*.restoring-*")) and not list(tmp_path.glob(".*.db"))


def test_dry_run_prints_plan_and_changes_nothing(snap, file_store_url, tmp_path, capsys) -> None:
    sid, key = snap
    data_dir = tmp_path / "m0.etcd"
    r = run_cli(capsys, *member_args(file_store_url, sid, key, data_dir, "--dry-run", "-o", "json"))
    assert r.rc == 0, r.err
    plan = r.json()
    assert plan["snapshot"] == sid and plan["token"] == f"restore-{sid}"
    assert any("--bump-revision 1000000000 --mark-compacted" in s for s in plan["steps"])
    assert any("--bump-revision" in w for w in plan["warnings"])  # this etcdutl lacks the flag: said up front
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key", "store"]  # no data dir, staging or fetched db


def test_verify_levels(snap, file_store_url, capsys) -> None:
    sid, key = snap
    for extra, level in (([], "status"), (["--test-restore"], "restore")):
        r = run_cli(capsys, "verify", "latest", "--store", file_store_url, "--key-file", key, "-o", "json", *extra)
        assert r.rc == 0, r.err
        row = r.json()[0]
        assert row["id"] == sid and row["level"] == level and row["status"] == "ok" and row["revision"] > 0


@pytest.mark.slow
def test_large_cluster_round_trip_through_s3(etcd_cluster_factory, s3_server, s3_store_url, tmp_path, capsys,
                                             monkeypatch) -> None:
    """~130 MB db, 3 members: multipart S3 upload with the default part size, restore, every value equal."""
    from infra.etcd_cluster import ClusterLayout

    monkeypatch.setenv("ETCDBACKUP_S3_ENDPOINT_URL", s3_server.endpoint_url)
    source = etcd_cluster_factory("3.5", 3, True)
    source.put_many("/registry/big/", 30000, 2048)
    before = source.get_all("")
    key = write_key(tmp_path / "key")
    r = run_cli(capsys, *backup_args(source, s3_store_url, key))
    assert r.rc == 0, r.err
    sid = r.json()["id"]
    assert r.json()["raw_size"] > 100 << 20
    layout = ClusterLayout.allocate(3, tls=True, name_prefix="r")
    dirs = [tmp_path / f"{n}.etcd" for n in layout.names]
    for name, peer, d in zip(layout.names, layout.peer_urls, dirs, strict=True):
        r = run_cli(capsys, "restore", sid, "--store", s3_store_url, "--key-file", key, "--data-dir", d, "--name",
                    name, "--initial-cluster", layout.initial_cluster, "--initial-advertise-peer-urls", peer,
                    "--bump-revision", "0", "--no-progress")
        assert r.rc == 0, r.err
    restored = etcd_cluster_factory("3.5", 3, True, layout=layout, data_dirs=dirs)
    assert restored.get_all("") == before


def test_backup_of_a_never_written_etcd(etcd_cluster_factory, file_store_url, tmp_path, capsys) -> None:
    """A fresh etcd is at revision 1 with no revision in its db; that is not a corrupt snapshot."""
    cluster = etcd_cluster_factory("3.5", 1, True)
    key = write_key(tmp_path / "key")
    r = run_cli(capsys, *backup_args(cluster, file_store_url, key))
    assert r.rc == 0, r.err
    data_dir = tmp_path / "m0.etcd"
    r = run_cli(capsys, *member_args(file_store_url, r.json()["id"], key, data_dir, "--bump-revision", "0"))
    assert r.rc == 0, r.err


def restore_in_process(store_url: str, sid: str, key: Path, data_dir: Path, tool: EtcdTool) -> RestoreReport:
    """What `restore --move-aside --bump-revision 0` does, with a tool the test can hook into."""
    st = open_store(store_url)
    keyring = load_keyring(str(key), None)
    m = resolve(st, sid, keyring)
    member = MemberSpec("m0", str(data_dir), "m0=https://127.0.0.1:2380", "https://127.0.0.1:2380",
                        bump_revision=0, mark_compacted=False)
    plan = plan_restore(m.id, st.url, member, data_dir_exists=data_dir_exists(str(data_dir)), move_aside=True)
    return execute_restore(plan, st, m, keyring, tool, progress=False)


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if not p.name.endswith(".restore.lock"))


def test_second_restore_on_the_same_dir_is_refused(snap, file_store_url, tmp_path, capsys) -> None:
    sid, key = snap
    data_dir = tmp_path / "m0.etcd"
    fd = os.open(tmp_path / ".m0.etcd.restore.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a restore in progress holds
        r = run_cli(capsys, *member_args(file_store_url, sid, key, data_dir, "--bump-revision", "0"))
        assert r.rc == 1 and "another restore is running on" in r.err and "Nothing was changed" in r.err
        assert r.err.count("\n") == 1
        assert listing(tmp_path) == ["key", "store"]
    finally:
        os.close(fd)
    r = run_cli(capsys, *member_args(file_store_url, sid, key, data_dir, "--bump-revision", "0"))
    assert r.rc == 0, r.err


def test_etcd_started_during_the_restore_stops_the_swap(snap, file_store_url, etcd_cluster_factory) -> None:
    """A real etcd starts on the data dir right after `snapshot restore` into staging finished: the restore
    must notice before the swap, refuse, and leave the running etcd's data dir where and as it was."""
    sid, key = snap
    cluster = etcd_cluster_factory("3.5", 1, True)
    cluster.put("/restore-safety/own", "old")
    cluster.stop()
    data_dir = cluster.data_dirs[0]
    before = listing(data_dir.parent)

    class StartsEtcdAfterStaging(EtcdTool):
        def restore(self, args: RestoreArgs) -> None:
            super().restore(args)
            cluster.start_member(0)

    with pytest.raises(RestoreRefused, match="etcd is running on .* stop it first. Nothing was changed"):
        restore_in_process(file_store_url, sid, key, data_dir, StartsEtcdAfterStaging())
    assert listing(data_dir.parent) == before  # no staging dir, nothing moved aside
    assert cluster.is_running(0) and cluster.get("/restore-safety/own") == b"old"
    cluster.put("/restore-safety/own", "still writable")


def test_fetched_db_is_private_inside_the_staging_dir(snap, file_store_url, tmp_path) -> None:
    sid, key = snap
    data_dir = tmp_path / "m0.etcd"
    seen: dict[str, object] = {}

    class Inspects(EtcdTool):
        def restore(self, a: RestoreArgs) -> None:
            p = Path(a.snapshot)
            seen.update(parent=p.parent.name, parent_of_staging=p.parent.parent, skip_hash_check=a.skip_hash_check,
                        mode=p.stat().st_mode & 0o777, dir_mode=p.parent.stat().st_mode & 0o777)
            super().restore(a)

    restore_in_process(file_store_url, sid, key, data_dir, Inspects())
    assert str(seen["parent"]).startswith("m0.etcd.restoring-") and seen["parent_of_staging"] == tmp_path
    assert (seen["mode"], seen["dir_mode"]) == (0o600, 0o700)
    assert seen["skip_hash_check"] is True  # the fetch pass checked etcd's sha256 already
    assert listing(tmp_path) == ["key", "m0.etcd", "store"]  # staging dir and fetched db gone


def test_stale_staging_dirs_of_the_same_data_dir_are_removed(snap, file_store_url, tmp_path) -> None:
    sid, key = snap
    data_dir = tmp_path / "m0.etcd"
    two_hours_ago = time.time() - 7200
    stale, fresh, other = (tmp_path / n for n in ("m0.etcd.restoring-20200101T000000Z",
                                                  "m0.etcd.restoring-20200101T000001Z",
                                                  "m1.etcd.restoring-20200101T000000Z"))
    for d in (stale, fresh, other):
        (d / "data" / "member").mkdir(parents=True)
        (d / "x.db").write_bytes(b"plaintext")
    for d in (stale, other):
        os.utime(d, (two_hours_ago, two_hours_ago))
    report = restore_in_process(file_store_url, sid, key, data_dir, EtcdTool())
    assert not stale.exists() and fresh.exists() and other.exists()
    assert len(report.notes) == 1 and str(stale) in report.notes[0] and "killed" in report.notes[0]
