"""`delete ID...`: asks first (refuses to guess on a non-interactive input), deletes untrusted (planted) snapshots
too, never the last good one without --force, never by 'latest'. Real etcd 3.5.1 and a file store."""

from __future__ import annotations

import json

from cli_helpers import backup_args, run_cli, run_cli_subprocess, write_key


def _backup(capsys, cluster, store: str, key) -> str:  # noqa: ANN001
    r = run_cli(capsys, *backup_args(cluster, store, key, "--verify", "hash"))
    assert r.rc == 0, r.err
    return r.json()["id"]


def test_delete(etcd35_tls_cluster, etcd_cluster_factory, file_store_url, tmp_store_dir, tmp_path, capsys) -> None:
    key = write_key(tmp_path / "key")
    older, newest = (_backup(capsys, etcd35_tls_cluster, file_store_url, key) for _ in range(2))
    planted = _backup(capsys, etcd_cluster_factory("3.5", size=1, tls=False), file_store_url, None)

    asked = run_cli_subprocess("delete", older, "--store", file_store_url, "--encryption-key-file", key)
    assert asked.rc == 2 and f"{older}  " in asked.err and "pass --yes" in asked.err, asked
    assert (tmp_store_dir / f"{older}.json").exists()

    assert run_cli(capsys, "delete", "latest", "--yes", "--store", file_store_url).rc == 2
    last_good = run_cli(capsys, "delete", newest, "--yes", "--store", file_store_url, "--encryption-key-file", key)
    assert last_good.rc == 1 and "last good one" in last_good.err

    r = run_cli(capsys, "delete", older, planted, "--yes", "--store", file_store_url, "--encryption-key-file", key)
    assert r.rc == 0 and r.out.split() == ["deleted", older, "deleted", planted], r.err
    left = run_cli(capsys, "list", "--store", file_store_url, "--encryption-key-file", key, "-o", "json")
    assert [s["id"] for s in json.loads(left.out)] == [newest]
    assert sorted(p.name for p in tmp_store_dir.iterdir() if not p.name.startswith("etcdbackup.")) == \
        [f"{newest}.etcdbak", f"{newest}.json"]
    missing = run_cli(capsys, "delete", older, "--yes", "--store", file_store_url)
    assert missing.rc == 1 and f"snapshot {older} not found" in missing.err


def test_describe(etcd35_tls_cluster, file_store_url, tmp_store_dir, tmp_path, capsys) -> None:
    key = write_key(tmp_path / "key")
    sid = _backup(capsys, etcd35_tls_cluster, file_store_url, key)
    r = run_cli(capsys, "describe", "latest", "--store", file_store_url, "--encryption-key-file", key, "-o", "json")
    doc = json.loads(r.out)
    assert r.rc == 0 and doc["id"] == sid and doc["trust"] == "authenticated" and doc["mac"].startswith("hmac-")
    assert doc["object_size_now"] == doc["stored_size"]
    table = run_cli(capsys, "describe", sid, "--store", file_store_url)
    assert table.rc == 0 and "trust:" in table.out and "unauthenticated (no key given)" in table.out
    (tmp_store_dir / f"{sid}.etcdbak").write_bytes(b"cut")
    cut = run_cli(capsys, "describe", sid, "--store", file_store_url)
    assert cut.rc == 0 and "it will not verify" in cut.err
