"""`agent drill`: a real restore into a real throwaway etcd 3.5, on a good snapshot and on one whose authenticated
manifest disagrees with its data."""

from __future__ import annotations

import json

from cli_helpers import backup_args, run_cli, write_key
from infra.ports import allocate_ports, release_ports
from prometheus_client.parser import text_string_to_metric_families

from kubectl_etcdbackup.catalog import list_snapshots, save_manifest
from kubectl_etcdbackup.keys import load_keyring
from kubectl_etcdbackup.run_status import load_drill
from kubectl_etcdbackup.stores.file_store import FileStore
from kubectl_etcdbackup.usecases.drill import key_prefix

K8S_KEYS = ["/registry/namespaces/default", "/registry/namespaces/kube-system",
            "/registry/services/specs/default/kubernetes", "/registry/apiregistration.k8s.io/apiservices/v1.apps"]


def metrics(path) -> dict[str, float]:
    return {s.name: s.value for fam in text_string_to_metric_families(path.read_text()) for s in fam.samples}


def drill(capsys, store_url: str, key, tmp_path, *extra: str):
    ports = allocate_ports(2)
    try:
        return run_cli(capsys, "agent", "drill", "--store", store_url, "--key-file", key, "--port", str(ports[0]),
                       "--work-dir", tmp_path, "--start-timeout", "60s", *extra)
    finally:
        release_ports(ports)


def test_key_prefix_groups_resource_types() -> None:
    assert key_prefix(b"/registry/pods/kube-system/etcd-0") == "/registry/pods/"
    assert key_prefix(b"/registry/apiregistration.k8s.io/apiservices/v1.apps") == \
        "/registry/apiregistration.k8s.io/apiservices/"
    assert key_prefix(b"/fill/000001") == "/fill/"
    assert key_prefix(b"plain") == "plain"


def test_drill_passes_on_a_good_snapshot_and_fails_on_a_lying_manifest(etcd_cluster_factory, tmp_path,
                                                                      tmp_store_dir, capsys) -> None:
    cluster = etcd_cluster_factory("3.5", 1, True)
    for k in K8S_KEYS:
        cluster.put(k, "{}")
    cluster.put_many("/registry/pods/default/p-", 40, 256)
    cluster.put_many("/other/", 5, 64)
    key, prom = write_key(tmp_path / "key"), tmp_path / "drill.prom"
    url = f"file://{tmp_store_dir}"
    backup = run_cli(capsys, *backup_args(cluster, url, key, "--verify", "status"))
    assert backup.rc == 0, backup.err

    good = drill(capsys, url, key, tmp_path, "--metrics-textfile", str(prom))
    assert good.rc == 0, good.err
    out = good.json()
    assert out["ok"] and out["id"] == backup.json()["id"] and out["keys"] == len(K8S_KEYS) + 45
    assert out["revision"] == backup.json()["revision"]
    assert set(out["stages_seconds"]) == {"fetch", "restore", "start"}
    assert out["estimated_restore_seconds"] == round(sum(out["stages_seconds"].values()), 3)
    assert out["prefixes"]["/registry/pods/"] == 40 and out["prefixes"]["/other/"] == 5
    assert any("Kubernetes core objects present" in c for c in out["checks"])
    m = metrics(prom)
    assert m["etcd_backup_drill_success"] == 1 and m["etcd_backup_drill_last_success_timestamp"] > 0
    assert m["etcd_backup_restore_estimated_seconds"] == out["estimated_restore_seconds"]
    store = FileStore(tmp_store_dir, create=False)
    record = load_drill(store)
    assert record.last_ok and record.last_success_snapshot_id == out["id"] and record.failures_total == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("etcdbackup-drill-")]  # scratch removed

    # A manifest sealed with the real key (so it is trusted) whose key count is wrong.
    keyring = load_keyring(str(key), None)
    manifest = list_snapshots(store, keyring).trusted[0]
    manifest.key_count += 7
    save_manifest(store, manifest, keyring)
    bad = drill(capsys, url, key, tmp_path, "--metrics-textfile", str(prom))
    assert bad.rc == 1
    assert f"{len(K8S_KEYS) + 45} live keys, the manifest says {len(K8S_KEYS) + 52}" in bad.err, bad.err
    assert json.loads(bad.out)["ok"] is False
    record = load_drill(store)
    assert not record.last_ok and record.failures_total == 1 and "live keys" in record.last_message
    m = metrics(prom)
    assert m["etcd_backup_drill_success"] == 0
    assert m["etcd_backup_drill_last_success_timestamp"] > 0  # the last good drill is kept


def test_drill_names_a_missing_kubernetes_core_key(etcd_cluster_factory, tmp_path, tmp_store_dir, capsys) -> None:
    cluster = etcd_cluster_factory("3.5", 1, True)
    cluster.put("/registry/namespaces/default", "{}")
    key = write_key(tmp_path / "key")
    url = f"file://{tmp_store_dir}"
    assert run_cli(capsys, *backup_args(cluster, url, key, "--verify", "hash")).rc == 0
    r = drill(capsys, url, key, tmp_path)
    assert r.rc == 1 and "Kubernetes data without /registry/namespaces/kube-system" in r.err, r.err


def test_the_cluster_catalog_carries_the_drill_record(tmp_store_dir) -> None:
    """`status` on a PVC store reads `agent catalog` from the cluster: the drill record goes with it."""
    from kubectl_etcdbackup.k8s.store_catalog import Catalog, catalog_of
    from kubectl_etcdbackup.run_status import save_drill

    store = FileStore(tmp_store_dir, create=True)
    record = load_drill(store)
    record.record("2026-12-01T03:00:05.000Z", "etcd-x", "")
    record.estimated_restore_seconds, record.stages_seconds = 4.5, {"fetch": 1.0, "restore": 1.5, "start": 2.0}
    save_drill(store, record)
    back = Catalog.from_json(json.loads(catalog_of(store).to_json())).drill
    assert back == record and back.last_ok and back.last_success_snapshot_id == "etcd-x"
