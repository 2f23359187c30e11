"""`kubectl etcdbackup status` (and, sharing its set-up, `restore --plan`) against kubeadm-like etcd pods in the
fake API whose exec runs the real etcdctl (argv, no shell) against real 3-member etcd 3.5 clusters with mTLS.
Exit codes: 0 all fine, 3 a member unhealthy or the backups stale or unknown, 1 the API unreachable."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import backup_args, run_cli, write_key
from infra.certs import TLSCerts, generate_tls
from infra.etcd_binaries import EtcdBinaries
from infra.etcd_cluster import EtcdCluster
from infra.ports import allocate_port, allocate_ports, release_ports
from k8s_fake import FakeKubeServer, LocalExec, write_kubeconfig
from k8s_helpers import (
    PKI,
    add_etcd_pods,
    add_running,
    apiserver_pod,
    kubeadm_pki,
    needs_kubectl,
    plugin_env,
    run_plugin,
)

from kubectl_etcdbackup.catalog import list_snapshots, save_manifest
from kubectl_etcdbackup.keys import load_keyring
from kubectl_etcdbackup.stores.file_store import FileStore

pytestmark = [needs_kubectl, pytest.mark.timeout(180)]
NODES = ["cp-a", "cp-b", "cp-c"]


def test_stale_unknown_and_unreachable_exit_codes(
        kube: FakeKubeServer, kubeconfig: Path, etcd35_tls_cluster: EtcdCluster, etcd_bins_35: EtcdBinaries,
        tls_certs: TLSCerts, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cluster = etcd35_tls_cluster  # shared: only read here
    pki = kubeadm_pki(tls_certs, tmp_path / "pki")
    kube.set_exec_handler(LocalExec(path=f"{etcd_bins_35.etcdctl.parent}:/usr/bin:/bin", path_map={PKI: str(pki)},
                                    timeout=30), namespace="kube-system")
    pods = add_etcd_pods(kube, cluster.names, cluster.endpoints, cluster.peer_urls, nodes=["n0", "n1", "n2"])
    env = plugin_env(kubeconfig, tmp_path)
    try:
        empty = tmp_path / "empty"
        empty.mkdir()
        st = run_plugin(env, "status", "--store", f"file://{empty}")
        assert st.rc == 3, st  # healthy members, but no backup at all
        assert "freshness:    STALE: no verified backup at all" in st.out
        assert st.err.splitlines()[-1] == "error: backups STALE: no verified backup at all"

        store = tmp_path / "store"
        r = run_cli(capsys, *backup_args(cluster, f"file://{store}", write_key(tmp_path / "key")))
        assert r.rc == 0, r.err
        st = run_plugin(env, "status", "--store", f"file://{store}", "-o", "json")
        assert st.rc == 0 and json.loads(st.out)["backups"]["ok"], st
        time.sleep(2.1)
        st = run_plugin(env, "status", "--store", f"file://{store}", "--max-age", "1s", "-o", "yaml")
        assert st.rc == 3, st
        assert "STALE: newest verified backup" in st.out and "(limit 1s)" in st.err.splitlines()[-1]

        st = run_plugin(env, "status", "-n", "other", "-o", "json")  # no backup CronJob there: unknown
        assert st.rc == 3, st
        assert json.loads(st.out)["backups"] == {
            "ok": False, "error": "no backup CronJob in namespace other: run kubectl etcdbackup install -n other"}
        assert st.err.splitlines()[-1].startswith("error: backups unknown: no backup CronJob in namespace other")
    finally:
        for p in pods:
            kube.delete("pods", p["metadata"]["name"], "kube-system")

    port = allocate_port()  # reserved, nothing listens there
    dead = plugin_env(write_kubeconfig(tmp_path / "dead", f"http://127.0.0.1:{port}"), tmp_path)
    st = run_plugin(dead, "status", "--store", f"file://{store}")
    assert st.rc == 1 and st.out == "", st
    assert st.err == f"error: cannot reach the Kubernetes API at http://127.0.0.1:{port}: connection refused\n"


def test_status_then_a_stopped_member_then_the_restore_runbook(
        kube: FakeKubeServer, kubeconfig: Path, etcd_cluster_factory: Callable[..., EtcdCluster],
        etcd_bins_35: EtcdBinaries, tls_certs: TLSCerts, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cluster = etcd_cluster_factory("3.5", 3, True, layout=etcd_cluster_factory.layout(3, True, "cp"))
    cluster.put_many("/registry/configmaps/default/cm-", 50, 512)
    pki = kubeadm_pki(tls_certs, tmp_path / "pki")
    path = f"{etcd_bins_35.etcdctl.parent}:/usr/bin:/bin"
    kube.set_exec_handler(LocalExec(path=path, path_map={PKI: str(pki)}, timeout=30), namespace="kube-system")
    db_size = cluster.endpoint_status()[2]["Status"]["dbSize"]
    pods = add_etcd_pods(kube, cluster.names[:2], cluster.endpoints[:2], cluster.peer_urls[:2],
                         nodes=NODES[:2])
    add_etcd_pods(kube, cluster.names[2:], cluster.endpoints[2:], cluster.peer_urls[2:], nodes=NODES[2:],
                  quota=db_size + 4096)  # this member is at ~100% of its quota
    for node in NODES:
        add_running(kube, apiserver_pod(node))
    store = tmp_path / "store"
    key = write_key(tmp_path / "key")
    r = run_cli(capsys, *backup_args(cluster, f"file://{store}", key))
    assert r.rc == 0, r.err
    sid = r.json()["id"]
    env = plugin_env(kubeconfig, tmp_path)

    # all healthy: 3 members, one leader, db sizes; the backups come from --store here
    st = run_plugin(env, "status", "--store", f"file://{store}")
    assert st.rc == 0, st
    lines = st.out.splitlines()
    assert lines[0].split() == ["MEMBER", "NODE", "LEADER", "DB", "SIZE", "IN", "USE", "RAFT", "INDEX", "HEALTH",
                                "VERSION"]
    rows = [ln.split() for ln in lines[1:4]]
    assert [(r[0], r[1]) for r in rows] == list(zip(cluster.names, NODES, strict=True))
    assert [r[2] for r in rows].count("yes") == 1 and [r[2] for r in rows].count("no") == 2
    assert all(r[-2:] == ["healthy", "3.5.1"] for r in rows) and all("iB" in r[4] for r in rows)
    assert f"last backup:  {sid}" in st.out and "OK: newest verified backup" in st.out
    assert "member cp2: db size" in st.err and "of its quota" in st.err  # the quota warning, on stderr only
    assert "cp0: db size" not in st.err

    # a stopped member is unhealthy (exit 3: degraded); the other two still have exactly one leader
    cluster.stop_member(1)
    st = run_plugin(env, "status", "--store", f"file://{store}", "-o", "json")
    assert st.rc == 3, st
    doc = json.loads(st.out)
    health = {m["member"]: m["healthy"] for m in doc["members"]}
    assert health == {"cp0": True, "cp1": False, "cp2": True}
    assert sum(bool(m["leader"]) for m in doc["members"]) == 1
    assert any(w.startswith("member cp1 on cp-b is unhealthy") for w in doc["warnings"])
    assert st.err.splitlines()[-1] == "error: etcd member cp1 on cp-b is unhealthy"

    # the runbook: every member's flags from its pod spec, one token, the id resolved from 'latest'
    plan = run_plugin(env, "restore", "latest", "--plan", "--store", f"file://{store}", "-o", "json",
                      "--write-dir", tmp_path / "rb", "--node-key-file", "/root/etcd.key", "--node-python")
    assert plan.rc == 0, plan
    book = json.loads(plan.out)
    assert book["snapshot"]["id"] == sid and book["token"] == f"restore-{sid}"
    assert book["initial_cluster"] == cluster.initial_cluster
    assert [s["phase"] for s in book["steps"]] == ["prepare", "stop-apiserver", "stop-etcd", "restore",
                                                   "start-etcd", "wait-etcd", "start-apiserver", "verify"]
    restore = next(s for s in book["steps"] if s["phase"] == "restore")["commands"]
    for name, node, peer in zip(cluster.names, NODES, cluster.peer_urls, strict=True):
        (cmd,) = restore[node]
        assert (f"restore {sid} --store file:///var/lib/etcdbackup-restore --encryption-key-file /root/etcd.key "
                f"--name {name} --data-dir /var/lib/etcd --initial-cluster {cluster.initial_cluster} "
                f"--initial-advertise-peer-urls {peer} --initial-cluster-token restore-{sid} --move-aside") in cmd
    script = (tmp_path / "rb" / "cp-b.sh").read_text()
    assert script.index("stop-apiserver)") < script.index("stop-etcd)") < script.index("restore)") \
        < script.index("start-etcd)") < script.index("start-apiserver)")
    assert "--name cp1 " in script and "--name cp0 " not in script
    assert pods[0]["metadata"]["name"] == "etcd-cp-a"


def test_status_shows_the_last_drill_and_each_server_certificate(
        kube: FakeKubeServer, kubeconfig: Path, etcd_cluster_factory: Callable[..., EtcdCluster],
        etcd_bins_35: EtcdBinaries, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A real backup, a real `agent drill` on it (passed, then failed on a manifest that lies), and a member whose
    server certificate (read in a TLS handshake with its advertised URL) ends in 10 days."""
    certs = generate_tls(tmp_path / "tls", server_days=10)
    cluster = etcd_cluster_factory("3.5", 1, certs, layout=etcd_cluster_factory.layout(1, True, "dr"))
    for k in ("/registry/namespaces/default", "/registry/namespaces/kube-system",
              "/registry/services/specs/default/kubernetes"):
        cluster.put(k, "{}")
    for left in kube.list("pods", "kube-system"):  # an earlier test's etcd pods (the fake API is per module)
        kube.delete("pods", left["metadata"]["name"], "kube-system")
    pki = kubeadm_pki(certs, tmp_path / "pki")
    kube.set_exec_handler(LocalExec(path=f"{etcd_bins_35.etcdctl.parent}:/usr/bin:/bin", path_map={PKI: str(pki)},
                                    timeout=30), namespace="kube-system")
    pods = add_etcd_pods(kube, cluster.names, cluster.endpoints, cluster.peer_urls, nodes=["dr-node"])
    env = plugin_env(kubeconfig, tmp_path)
    store, key = tmp_path / "store", write_key(tmp_path / "key")
    url = f"file://{store}"
    try:
        assert run_cli(capsys, *backup_args(cluster, url, key)).rc == 0
        st = run_plugin(env, "status", "--store", url, "-o", "json")  # no drill yet: not a problem
        assert st.rc == 0 and json.loads(st.out)["backups"]["drill"]["last_time"] is None, st
        ports = allocate_ports(2)
        try:
            drill = run_cli(capsys, "agent", "drill", "--store", url, "--key-file", key, "--port", str(ports[0]),
                            "--work-dir", tmp_path, "--start-timeout", "60s")
            assert drill.rc == 0, drill.err

            st = run_plugin(env, "status", "--store", url)
            assert st.rc == 0, st
            (line,) = [ln for ln in st.out.splitlines() if ln.startswith("  last drill:")]
            sid = drill.json()["id"]
            assert line.startswith("  last drill:   passed ") and f"on {sid}, RTO estimate " in line
            assert "fetch " in line and "restore " in line and "start " in line
            (cert,) = [ln for ln in st.out.splitlines() if ln.startswith("  dr0 ")]
            assert cluster.endpoints[0] in cert and ("(in 10 days)" in cert or "(in 9 days)" in cert), st.out
            assert "warning: member dr0 server certificate (CN=etcd-server) expires in " in st.err

            doc = json.loads(run_plugin(env, "status", "--store", url, "-o", "json").out)
            assert doc["backups"]["drill"]["ok"] and doc["backups"]["drill"]["last_snapshot_id"] == sid
            assert doc["backups"]["drill"]["estimated_restore_seconds"] == drill.json()["estimated_restore_seconds"]
            (c,) = doc["certificates"]
            assert c["member"] == "dr0" and 9 < c["days_left"] <= 10 and c["error"] is None

            time.sleep(1.1)  # older than the limit: stale (exit 3, documented)
            st = run_plugin(env, "status", "--store", url, "--drill-max-age", "1s")
            last = st.err.splitlines()[-1]
            assert st.rc == 3 and last.startswith("error: restore drill STALE: the last one ran "), st
            assert last.endswith(" ago (limit 1s)"), st

            # a trusted manifest whose key count is wrong: the next drill fails, and status says so
            keyring = load_keyring(str(key), None)
            fs = FileStore(str(store), create=False)
            manifest = list_snapshots(fs, keyring).trusted[0]
            manifest.key_count += 7
            save_manifest(fs, manifest, keyring)
            bad = run_cli(capsys, "agent", "drill", "--store", url, "--key-file", key, "--port", str(ports[0]),
                          "--work-dir", tmp_path, "--start-timeout", "60s")
            assert bad.rc == 1
        finally:
            release_ports(ports)
        st = run_plugin(env, "status", "--store", url)
        assert st.rc == 3, st
        assert "  last drill:   FAILED " in st.out and "the manifest says 10; last passed " in st.out, st
        assert st.err.splitlines()[-1].startswith("error: restore drill FAILED "), st
        assert "does not match its manifest" in st.err.splitlines()[-1]
    finally:
        for p in pods:
            kube.delete("pods", p["metadata"]["name"], "kube-system")
