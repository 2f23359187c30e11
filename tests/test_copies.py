"""`agent backup --copy-to`: one etcd stream, several stores (two moto S3 buckets and a file store), each verified,
committed, recorded and pruned on its own; a store failing mid-way fails the run by name, the others are kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helpers import backup_args, run_cli, write_key
from prometheus_client.parser import text_string_to_metric_families

from kubectl_etcdbackup.catalog import list_snapshots
from kubectl_etcdbackup.keys import load_keyring
from kubectl_etcdbackup.run_status import load_status
from kubectl_etcdbackup.stores.file_store import FileStore
from kubectl_etcdbackup.stores.s3_store import S3Store


def metrics_by_store(path: Path) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels.get("store", "")): s.value
            for fam in text_string_to_metric_families(path.read_text()) for s in fam.samples}


def test_copy_url_parameters_are_checked(capsys, tmp_path, file_store_url) -> None:
    key = write_key(tmp_path / "key")
    r = run_cli(capsys, "agent", "backup", "--endpoints", "http://127.0.0.1:1", "--store", file_store_url,
                "--key-file", key, "--copy-to", "s3://b/p?endpiont=http://x")
    assert r.rc == 2 and "unknown parameter(s) endpiont" in r.err, r.err
    r = run_cli(capsys, "agent", "backup", "--endpoints", "http://127.0.0.1:1", "--store", file_store_url,
                "--key-file", key, "--copy-to", f"file://{tmp_path}/c?region=x")
    assert r.rc == 2 and "for s3:// stores only" in r.err, r.err


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_two_buckets_and_a_full_file_store(etcd_cluster_factory, s3_server, tmpfs, tmp_path, capsys) -> None:
    cluster = etcd_cluster_factory("3.5", 1, True)
    cluster.put_many("/fill/", 1500, 2048)
    b1, b2 = s3_server.create_bucket(), s3_server.create_bucket()
    full = tmpfs(256 << 10)  # the sealed snapshot is ~2 MiB: ENOSPC mid-way through the stream
    key, prom = write_key(tmp_path / "key"), tmp_path / "m.prom"
    ep = s3_server.endpoint_url
    main_url, copy_url, file_url = f"s3://{b1}/main", f"s3://{b2}/copy", f"file://{full}"
    args = backup_args(cluster, main_url, key, "--s3-endpoint-url", ep, "--keep-last", "1",
                       "--copy-to", f"{copy_url}?endpoint={ep}&region=us-east-1", "--copy-to", file_url,
                       "--metrics-textfile", prom)
    r = run_cli(capsys, *args)
    assert r.rc == 1
    assert f"store {file_url} failed: " in r.err and "no space left on device" in r.err, r.err
    assert f"is in {main_url}/, {copy_url}/" in r.err
    out = r.json()
    assert [c["ok"] for c in out["copies"]] == [True, False]
    keyring = load_keyring(str(key), None)
    main, copy = S3Store(b1, "main", endpoint_url=ep), S3Store(b2, "copy", endpoint_url=ep)
    for store in (main, copy):
        [m] = list_snapshots(store, keyring).trusted
        assert m.id == out["id"] and m.verified and m.verification["level"] == "status"
        assert load_status(store).last_success_id == out["id"]
    file_store = FileStore(full, create=False)
    assert file_store.list_names() == ["etcdbackup.status"]  # no object, no temp file left
    assert load_status(file_store).failures_total == 1
    m = metrics_by_store(prom)
    assert m[("etcd_backup_failures_total", file_store.url)] == 1
    assert m[("etcd_backup_failures_total", main.url)] == m[("etcd_backup_failures_total", copy.url)] == 0
    assert ("etcd_backup_last_success_timestamp", copy.url) in m
    assert ("etcd_backup_last_success_timestamp", file_store.url) not in m

    # The copy restores on its own: `verify` and `snapshot download` read it with --store.
    v = run_cli(capsys, "verify", "latest", "--store", copy_url, "--s3-endpoint-url", ep, "--encryption-key-file",
                key)
    assert v.rc == 0, v.err

    # Without the full store: every store ok, and each prunes its own snapshots (keep-last 1).
    args = backup_args(cluster, main_url, key, "--s3-endpoint-url", ep, "--keep-last", "1",
                       "--copy-to", f"{copy_url}?endpoint={ep}", "--metrics-textfile", prom)
    r2 = run_cli(capsys, *args)
    assert r2.rc == 0, r2.err
    assert f"pruned {out['id']}\n" in r2.err and f"pruned {out['id']} (in {copy.url})" in r2.err
    for store in (main, copy):
        assert [s.id for s in list_snapshots(store, keyring).trusted] == [r2.json()["id"]]
    assert metrics_by_store(prom)[("etcd_backup_failures_total", main.url)] == 0


def test_a_missing_bucket_fails_only_its_copy(etcd35_tls_cluster, s3_server, s3_bucket, tmp_store_dir, tmp_path,
                                              capsys) -> None:
    key = write_key(tmp_path / "key")
    ep = s3_server.endpoint_url
    gone = f"s3://no-such-bucket-{os.getpid()}/x"
    r = run_cli(capsys, *backup_args(etcd35_tls_cluster, f"file://{tmp_store_dir}", key, "--verify", "hash",
                                     "--copy-to", f"s3://{s3_bucket}/c?endpoint={ep}",
                                     "--copy-to", f"{gone}?endpoint={ep}"))
    assert r.rc == 1 and f"store {gone}/ failed: S3 bucket no-such-bucket-" in r.err, r.err
    keyring = load_keyring(str(key), None)
    assert [m.id for m in list_snapshots(FileStore(tmp_store_dir), keyring).trusted] == [r.json()["id"]]
    assert [m.id for m in list_snapshots(S3Store(s3_bucket, "c", endpoint_url=ep), keyring).trusted] == \
        [r.json()["id"]]
