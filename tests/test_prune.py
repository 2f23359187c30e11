"""Prune on real stores with real snapshots: reasons, planted (unauthenticated) snapshots, bad manifests,
leftovers of killed runs, and the key it needs."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from cli_helpers import backup_args, run_cli, write_key

from kubectl_etcdbackup.backup import BackupOptions, take_backup
from kubectl_etcdbackup.etcd.client import TLSFiles
from kubectl_etcdbackup.keys import load_keyring
from kubectl_etcdbackup.manifest import format_time, id_time, new_snapshot_id
from kubectl_etcdbackup.retention import RetentionPolicy
from kubectl_etcdbackup.stores import open_store
from kubectl_etcdbackup.usecases.prune import DELETED, KEEP, PruneOptions, run_prune


def backups(cluster, store_url: str, key_file: Path | None, n: int) -> list[str]:
    """n real snapshots (hash-verified, to be quick), oldest first."""
    tls = cluster.client_tls
    store = open_store(store_url)
    keyring = load_keyring(str(key_file), None) if key_file else None
    return [take_backup(BackupOptions(cluster.endpoints, store, keyring, TLSFiles(tls.ca, tls.cert, tls.key),
                                      verify="hash")).id for _ in range(n)]


def plant(store_dir: Path, genuine_id: str, hours_ahead: float = 0.0) -> str:
    """A decoy: a genuine snapshot's object and manifest copied under a newer id (its MAC no longer matches)."""
    doc = json.loads((store_dir / f"{genuine_id}.json").read_text())
    when = id_time(genuine_id)
    assert when is not None
    when += timedelta(seconds=1, hours=hours_ahead)
    doc["id"], doc["created_at"] = new_snapshot_id(when), format_time(when)
    (store_dir / f"{doc['id']}.etcdbak").write_bytes((store_dir / f"{genuine_id}.etcdbak").read_bytes())
    (store_dir / f"{doc['id']}.json").write_text(json.dumps(doc))
    return doc["id"]


def prune_rows(capsys, store_url: str, *args: str) -> tuple[int, list[dict], str]:
    r = run_cli(capsys, "prune", "--store", store_url, "-o", "json", *args)
    return r.rc, (json.loads(r.out) if r.rc == 0 else []), r.err


def test_dry_run_shows_every_reason_and_deletes_nothing(etcd35_tls_cluster, file_store_url, tmp_store_dir, tmp_path,
                                                        capsys) -> None:
    key = write_key(tmp_path / "key")
    ids = backups(etcd35_tls_cluster, file_store_url, key, 4)
    rc, rows, err = prune_rows(capsys, file_store_url, "--key-file", str(key), "--keep-last", "2", "--keep-daily",
                               "1", "--dry-run")
    assert rc == 0, err
    by_id = {r["id"]: r for r in rows}
    newest_day = f"daily {id_time(ids[-1]):%Y-%m-%d}"
    assert by_id[ids[-1]]["reasons"] == ["last 2", newest_day, "newest verified (always kept)"]
    assert by_id[ids[-2]] == {"id": ids[-2], "kind": "snapshot", "action": "keep", "reasons": ["last 2"]}
    assert [by_id[i]["action"] for i in ids[:2]] == ["would delete"] * 2
    assert by_id[ids[0]]["reasons"] == ["no keep rule matches"]
    assert all((tmp_store_dir / f"{i}.etcdbak").exists() for i in ids)
    table = run_cli(capsys, "prune", "--store", file_store_url, "--key-file", key, "--keep-last", "2", "--dry-run")
    assert table.rc == 0 and "REASONS" in table.out.splitlines()[0]
    assert f"{ids[-2]}   snapshot   keep" in table.out and "last 2" in table.out


def test_planted_snapshots_are_neither_counted_nor_deleted(etcd35_tls_cluster, file_store_url, tmp_store_dir,
                                                           tmp_path, capsys) -> None:
    """Someone who can write the bucket plants newer snapshots: they must not push genuine ones out of
    keep-last, and prune must not delete them either (it cannot know what they are)."""
    key = write_key(tmp_path / "key")
    ids = backups(etcd35_tls_cluster, file_store_url, key, 3)
    decoys = [plant(tmp_store_dir, ids[-1], hours_ahead=0.01 * i) for i in range(1, 4)]
    old_decoy = plant(tmp_store_dir, ids[0], hours_ahead=-1000)
    rc, rows, err = prune_rows(capsys, file_store_url, "--key-file", str(key), "--keep-last", "2")
    assert rc == 0, err
    by_id = {r["id"]: r for r in rows}
    assert [by_id[i]["action"] for i in ids] == ["deleted", "keep", "keep"]
    for d in [*decoys, old_decoy]:
        assert by_id[d]["action"] == "keep" and by_id[d]["reasons"][0].startswith("not authenticated (")
        assert (tmp_store_dir / f"{d}.etcdbak").exists()


def test_prune_without_the_key_refuses_an_encrypted_store(etcd35_tls_cluster, file_store_url, tmp_path,
                                                          capsys) -> None:
    key = write_key(tmp_path / "key")
    backups(etcd35_tls_cluster, file_store_url, key, 2)
    r = run_cli(capsys, "prune", "--store", file_store_url, "--keep-last", "1")
    assert r.rc == 2
    assert "prune needs the encryption key to tell genuine snapshots from planted ones" in r.err
    assert len(run_cli(capsys, "list", "--store", file_store_url, "-o", "json").json()) == 2
    assert run_cli(capsys, "prune", "--store", file_store_url, "--key-file", key).rc == 2  # no rule at all


def test_a_malformed_manifest_does_not_abort_prune(etcd35_tls_cluster, file_store_url, tmp_store_dir, tmp_path,
                                                   capsys) -> None:
    key = write_key(tmp_path / "key")
    ids = backups(etcd35_tls_cluster, file_store_url, key, 3)
    bad = "etcd-20200101T000000000Z-0bad"
    (tmp_store_dir / f"{bad}.json").write_text('{"id": "etcd-20200101T000000000Z-0bad", "created_at": ')
    (tmp_store_dir / f"{bad}.etcdbak").write_bytes(b"whatever")
    rc, rows, err = prune_rows(capsys, file_store_url, "--key-file", str(key), "--keep-last", "1")
    assert rc == 0, err
    assert f"warning: manifest {bad}.json" in err
    assert sorted(r["id"] for r in rows if r["action"] == DELETED) == ids[:2]
    assert (tmp_store_dir / f"{bad}.etcdbak").exists()  # not an orphan: its manifest exists, just unreadable


def test_old_temp_files_and_day_old_orphans_go_young_ones_stay(etcd35_tls_cluster, file_store_url, tmp_store_dir,
                                                               tmp_path) -> None:
    key = write_key(tmp_path / "key")
    backups(etcd35_tls_cluster, file_store_url, key, 1)
    old_tmp, young_tmp = tmp_store_dir / ".tmp-etcd-x.etcdbak.dead", tmp_store_dir / ".tmp-etcd-y.etcdbak.live"
    for p in (old_tmp, young_tmp):
        p.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(old_tmp, (two_hours_ago, two_hours_ago))
    orphan = tmp_store_dir / "etcd-20200101T000000000Z-dead.etcdbak"
    orphan.write_bytes(b"killed before its manifest")
    two_days_ago = time.time() - 2 * 86400
    os.utime(orphan, (two_days_ago, two_days_ago))
    # An import names its object after the snapshot's original (old) time and writes the manifest only after
    # verifying it: written just now, it is in flight whatever its id says.
    importing = tmp_store_dir / "etcd-20190101T000000000Z-0imp.etcdbak"
    importing.write_bytes(b"being verified")
    report = run_prune(PruneOptions(open_store(file_store_url), load_keyring(str(key), None),
                                    RetentionPolicy(keep_last=5)))
    assert report.leftovers_removed == [old_tmp.name] and report.deleted == [orphan.name]
    assert not old_tmp.exists() and young_tmp.exists() and not orphan.exists() and importing.exists()
    assert {r.kind for r in report.rows} == {"snapshot", "orphan", "temp-file"}


def test_incomplete_multipart_uploads_are_aborted(etcd35_tls_cluster, s3_server, s3_bucket, s3_store_url,
                                                  tmp_path) -> None:
    key = write_key(tmp_path / "key")
    store = open_store(s3_store_url, s3_endpoint_url=s3_server.endpoint_url)
    tls = etcd35_tls_cluster.client_tls
    keyring = load_keyring(str(key), None)
    take_backup(BackupOptions(etcd35_tls_cluster.endpoints, store, keyring, TLSFiles(tls.ca, tls.cert, tls.key),
                              verify="hash"))
    client = s3_server.client()
    client.create_multipart_upload(Bucket=s3_bucket, Key="backups/etcd-20260101T000000000Z-0a0a.etcdbak")
    report = run_prune(PruneOptions(store, keyring, RetentionPolicy(keep_last=1), leftover_min_age=0))
    assert report.leftovers_removed == ["backups/etcd-20260101T000000000Z-0a0a.etcdbak"], report.problems
    assert not client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    assert [r.action for r in report.rows if r.kind == "snapshot"] == [KEEP]


@pytest.mark.parametrize("old_flags", [["--retain-count", "1"], ["--keep-last", "1", "--retain-count", "1"]])
def test_old_retention_flags_are_aliases(etcd35_tls_cluster, file_store_url, tmp_path, capsys, old_flags) -> None:
    key = write_key(tmp_path / "key")
    r = run_cli(capsys, *backup_args(etcd35_tls_cluster, file_store_url, key, "--verify", "hash"))
    assert r.rc == 0, r.err
    rc, rows, err = prune_rows(capsys, file_store_url, "--key-file", str(key), *old_flags)
    if "--keep-last" in old_flags:
        assert rc == 2 and "give only one of --keep-last and --retain-count" in err
    else:
        assert rc == 0 and rows[0]["reasons"][0] == "last 1"

