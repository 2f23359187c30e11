"""Real etcd (3-member, mTLS) -> backup to a file store and to S3 -> restore every member -> start the
restored cluster -> the data is the same. On etcd 3.5.1 and 3.4.23."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from cli_helpers import backup_args, run_cli, write_key
from infra.etcd_cluster import ClusterLayout, EtcdCluster


def _restore_cluster(capsys, factory, bins_version: str, store: str, key: Path, snapshot_id: str,
                     workdir: Path, tool: str | None) -> EtcdCluster:
    layout = ClusterLayout.allocate(3, tls=True, name_prefix="r")
    data_dirs = [workdir / f"{n}.etcd" for n in layout.names]
    for name, peer, d in zip(layout.names, layout.peer_urls, data_dirs, strict=True):
        args = ["restore", snapshot_id, "--store", store, "--key-file", key, "--data-dir", d, "--name", name,
                "--initial-cluster", layout.initial_cluster, "--initial-advertise-peer-urls", peer,
                "--bump-revision", "0", "--no-progress"]
        if tool:
            args += ["--etcdutl", tool]
        r = run_cli(capsys, *args)
        assert r.rc == 0, r.err
        assert (d / "member" / "snap" / "db").is_file()
    return factory(bins_version, 3, True, layout=layout, data_dirs=data_dirs)


@pytest.mark.parametrize("version", ["3.5", "3.4"])
@pytest.mark.parametrize("store_kind", ["file", "s3"])
def test_backup_and_restore_whole_cluster(version: str, store_kind: str, request, monkeypatch, capsys, tmp_path,
                                          etcd_cluster_factory) -> None:
    source = request.getfixturevalue("etcd35_tls_cluster" if version == "3.5" else "etcd34_tls_cluster")
    store = request.getfixturevalue("file_store_url" if store_kind == "file" else "s3_store_url")
    if store_kind == "s3":
        monkeypatch.setenv("ETCDBACKUP_S3_ENDPOINT_URL", request.getfixturevalue("s3_server").endpoint_url)
    key = write_key(tmp_path / "key")
    prefix = f"/test/{uuid.uuid4().hex[:8]}/"
    source.put_many(prefix, 300, 1024)
    before = source.get_all("")

    r = run_cli(capsys, *backup_args(source, store, key))
    assert r.rc == 0, r.err
    result = r.json()
    assert result["verified"] == "status"

    listed = run_cli(capsys, "list", "--store", store, "-o", "json").json()
    manifest = next(m for m in listed if m["id"] == result["id"])
    assert manifest["cipher"] == "aes-256-gcm" and manifest["codec"] == "zstd"
    assert manifest["etcd_version"].startswith(version)
    assert manifest["key_count"] >= len(before)  # other tests may have written more meanwhile
    assert manifest["stored_size"] < manifest["raw_size"]

    tool = str(source.bins.etcdctl) if version == "3.4" else None  # 3.4 restores with etcdctl
    restored = _restore_cluster(capsys, etcd_cluster_factory, version, store, key, result["id"],
                                tmp_path / "restored", tool)
    after = restored.get_all("")
    # Everything written before the backup is there, byte for byte, and nothing else than later writes.
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) <= {k for k in after if not k.startswith(prefix)}
    assert restored.key_count(prefix) == 300
    assert restored.revision() >= manifest["etcd_revision"]
    # New cluster identity: restored members got new ids and work for writes.
    restored.put(prefix + "after-restore", "ok")
    assert restored.get(prefix + "after-restore") == b"ok"
