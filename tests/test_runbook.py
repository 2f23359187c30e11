"""`restore --plan`: the runbook's text for kubeadm, k3s and RKE2 (golden files in tests/golden/, rewritten with
ETCDBACKUP_UPDATE_GOLDEN=1), how the distribution is told from the nodes and pods, and (slow) the kubeadm node
scripts run for real against three simulated nodes (tests/sim_nodes.py) with real etcd 3.5.1."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import backup_args, run_cli, write_key
from infra.certs import TLSCerts
from infra.etcd_binaries import EtcdBinaries
from k8s_helpers import BIN, KUBECTL, add_running, apiserver_pod, etcd_pod, needs_kubectl
from sim_nodes import Kubelet, make_node, operator_bin, run_on_node, unshare_works

from kubectl_etcdbackup.errors import UsageError
from kubectl_etcdbackup.k8s.etcd_pods import (
    K3S,
    KUBEADM,
    RKE2,
    ServerNode,
    detect_distribution,
    etcd_servers,
    image_etcd_version,
    members_from_pods,
    node_from_api,
)
from kubectl_etcdbackup.k8s.runbook import NODE_PHASES, SERVER_PHASES, RunbookOptions, build_runbook
from kubectl_etcdbackup.k8s.store_config import SecretRef
from kubectl_etcdbackup.manifest import SnapshotManifest

GOLDEN = Path(__file__).parent / "golden"
SID = "etcd-20261127T071752123Z-3f9a"


def snapshot(**kw: Any) -> SnapshotManifest:
    base = dict(id=SID, created_at="2026-11-27T07:17:52.123Z", etcd_revision=4242, key_count=1000,
                etcd_version="3.5.21", cluster_id="c1", member_id="m1", member_endpoint="https://10.0.0.1:2379",
                raw_size=50 << 20, stored_size=20 << 20, raw_sha256="a" * 64, stored_sha256="b" * 64, codec="zstd",
                cipher="aes-256-gcm", key_id="k", duration_seconds=1.0, verified=True)
    return SnapshotManifest(**(base | kw))


def node(name: str, version: str, *args: str, etcd: bool = True, instance: str | None = None) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name} | ({"node-role.kubernetes.io/etcd": "true"} if etcd else {})
    if instance:
        labels["node.kubernetes.io/instance-type"] = instance
    dist = "rke2" if "rke2" in version else "k3s"
    ann = {f"{dist}.io/node-args": json.dumps(["server", *args])} if args else {}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels, "annotations": ann},
            "status": {"nodeInfo": {"kubeletVersion": version}}}


def kubeadm_pods() -> list[dict[str, Any]]:
    ips = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    cluster = ",".join(f"cp{i}=https://{ip}:2380" for i, ip in enumerate(ips))
    return [etcd_pod(f"cp{i}", f"cp{i}", f"https://{ip}:2379", f"https://{ip}:2380", cluster=cluster)
            for i, ip in enumerate(ips)]


def rke2_pods() -> list[dict[str, Any]]:
    pods = []
    for i, ip in enumerate(["10.0.1.1", "10.0.1.2", "10.0.1.3"]):
        p = etcd_pod(f"srv{i}", f"srv{i}-a1b2c3", f"https://{ip}:2379", f"https://{ip}:2380",
                     data_dir="/var/lib/rancher/rke2/server/db/etcd")
        p["spec"]["containers"][0]["image"] = "index.docker.io/rancher/hardened-etcd:v3.5.21-k3s1-build20250411"
        pods.append(p)
    return pods


def k3s_nodes() -> list[ServerNode]:
    return [node_from_api(n) for n in (
        node("k3s-b", "v1.33.1+k3s1", "--server", "https://k3s-a:6443", "--token", "********"),
        node("k3s-a", "v1.33.1+k3s1", "--cluster-init", "--token", "********"),
        node("k3s-c", "v1.33.1+k3s1", "--server", "https://k3s-a:6443", "--data-dir", "/srv/k3s"),
        node("k3s-agent", "v1.33.1+k3s1", etcd=False))]


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("ETCDBACKUP_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text, f"{path} differs (ETCDBACKUP_UPDATE_GOLDEN=1 rewrites it)"


def with_scripts(book: Any) -> str:
    return book.text() + "\n" + "".join(f"\n===== {n}.sh\n{s}" for n, s in book.node_scripts().items())


# ------------------------------------------------------------------------------------------------ golden
def test_golden_kubeadm_default() -> None:
    book = build_runbook(members_from_pods(kubeadm_pods()), snapshot(), ["cp0", "cp1", "cp2"], RunbookOptions(
        store_url="s3://bkt/etcd", s3_endpoint_url="http://minio:9000", key_secret=SecretRef("k", "key"),
        distribution_why="etcd static pods (etcd-cp0, etcd-cp1, etcd-cp2)"))
    assert [s.phase for s in book.steps] == ["prepare", *NODE_PHASES, "verify"] and book.warnings == []
    text = book.text()
    assert "kubectl-etcdbackup restore" not in text and "no Python and no etcdutl" in text
    assert text.count("etcdutl snapshot restore /var/lib/etcdbackup-restore/") == 3
    assert text.count("| sha256sum -c -") == 4  # here, then on each node before its restore
    check_golden("runbook-kubeadm.txt", with_scripts(book))


def test_golden_kubeadm_node_python_and_an_old_image() -> None:
    pods = kubeadm_pods()
    for p in pods:
        p["spec"]["containers"][0]["image"] = "registry.k8s.io/etcd:3.5.1-0"
    members = members_from_pods(pods)
    py = build_runbook(members, snapshot(), [], RunbookOptions(store_url="file:///backups", node_python=True,
                                                               bump_revision=0, local_key_file="/root/key"))
    restore = next(s for s in py.steps if s.phase == "restore").commands["cp1"]
    assert restore == [f"kubectl-etcdbackup restore {SID} --store file:///var/lib/etcdbackup-restore "
                       "--encryption-key-file /etc/kubernetes/etcdbackup.key --name cp1 --data-dir /var/lib/etcd "
                       "--initial-cluster cp0=https://10.0.0.1:2380,cp1=https://10.0.0.2:2380,cp2=https://10.0.0.3:2380"
                       " --initial-advertise-peer-urls https://10.0.0.2:2380 --initial-cluster-token "
                       f"restore-{SID} --move-aside --bump-revision 0"]
    assert py.steps[0].commands[""][0] == "ssh cp0 '(umask 077 && install -m 600 /dev/stdin " \
                                         "/etc/kubernetes/etcdbackup.key)' < /root/key"
    check_golden("runbook-kubeadm-node-python.txt", py.text())
    # the default path with an image whose etcdutl has no --bump-revision: said before anything stops
    old = build_runbook(members, snapshot(etcd_version="3.5.1"), [], RunbookOptions(store_url="file:///b"))
    assert any("etcd 3.5.1 (registry.k8s.io/etcd:3.5.1-0) has no --bump-revision" in w for w in old.warnings)
    newer = build_runbook(members, snapshot(etcd_version="3.6.4"), [], RunbookOptions(
        store_url="file:///b", bump_revision=0))
    assert any("newer than the image's etcd 3.5.1" in w for w in newer.warnings)
    assert not any("bump" in w for w in newer.warnings)


def test_golden_k3s() -> None:
    nodes = k3s_nodes()
    servers = etcd_servers(nodes, [])
    assert detect_distribution(nodes, []) == (K3S, "node k3s-a says k3s (kubelet version v1.33.1+k3s1)")
    book = build_runbook([], snapshot(), [], RunbookOptions(
        store_url="s3://bkt/etcd", distribution=K3S, distribution_why="node k3s-a says k3s"), servers)
    assert book.servers == ["k3s-a", "k3s-b", "k3s-c"] and book.phases == SERVER_PHASES  # the --cluster-init one first
    restore = next(s for s in book.steps if s.phase == "restore").commands
    assert restore["k3s-a"][-1] == (f"k3s server --cluster-reset --cluster-reset-restore-path="
                                    f"/var/lib/etcdbackup-restore/{SID}.db")
    assert "mv /srv/k3s/server/db /srv/k3s/server/db.before-restore-\"$stamp\"" in restore["k3s-c"][-1]
    assert "rm -rf" not in book.text() and book.warnings == []
    assert [s.phase for s in book.steps] == ["prepare", *SERVER_PHASES, "verify"]
    assert sorted(book.node_scripts()) == ["k3s-a", "k3s-b", "k3s-c"]
    check_golden("runbook-k3s.txt", with_scripts(book))


def test_golden_rke2() -> None:
    pods = rke2_pods()
    members = members_from_pods(pods)
    nodes = [node_from_api(node(f"srv{i}", "v1.33.1+rke2r1", *(["--server", "https://srv0:9345"] if i else [])))
             for i in range(3)]
    dist, why = detect_distribution(nodes, members)
    assert dist == RKE2 and "v1.33.1+rke2r1" in why
    assert detect_distribution([], members)[0] == RKE2  # no Nodes to read: the data dir tells
    book = build_runbook(members, snapshot(), [], RunbookOptions(store_url="s3://bkt/etcd", distribution=RKE2,
                                                                 distribution_why=why), etcd_servers(nodes, members))
    text = book.text()
    assert "rke2 server --cluster-reset --cluster-reset-restore-path=/var/lib/etcdbackup-restore/" in text
    assert "systemctl stop rke2-server" in text and "reset-flag" in text
    assert "snapshot etcd 3.5.21 vs image index.docker.io/rancher/hardened-etcd:v3.5.21-k3s1" in text
    check_golden("runbook-rke2.txt", with_scripts(book))


# ------------------------------------------------------------------------------------------------ detection
def test_distribution_detection() -> None:
    kubeadm = members_from_pods(kubeadm_pods())
    plain = [node_from_api(node(f"cp{i}", "v1.33.1", etcd=False)) for i in range(3)]
    assert detect_distribution(plain, kubeadm) == (KUBEADM, "etcd static pods (etcd-cp0, etcd-cp1, etcd-cp2)")
    assert detect_distribution([], kubeadm)[0] == KUBEADM  # Nodes not readable (RBAC): the pods tell
    by_label = [node_from_api(node("a", "v1.30.0", instance="k3s"))]
    assert detect_distribution(by_label, [])[0] == K3S
    assert detect_distribution([node_from_api(node("a", "v1.33.1+rke2r1"))], [])[0] == RKE2
    mixed = [node_from_api(node("a", "v1.33.1+k3s1")), node_from_api(node("b", "v1.33.1+rke2r1"))]
    assert detect_distribution(mixed, [])[0] is None
    assert detect_distribution(plain, []) == (None, "no etcd pods (see --etcd-namespace/--etcd-selector) and no "
                                                    "node names k3s or RKE2")
    operator_pods = kubeadm_pods()
    for p in operator_pods:
        p["metadata"].pop("ownerReferences")
        p["metadata"]["annotations"].pop("kubernetes.io/config.source")
    assert detect_distribution(plain, members_from_pods(operator_pods))[0] is None
    assert [image_etcd_version(i) for i in ("registry.k8s.io/etcd:3.5.21-0", "quay.io/coreos/etcd:v3.4.3",
                                            "etcd@sha256:" + "a" * 64, "localhost:5000/etcd", "etcd:latest")] == [
        (3, 5, 21), (3, 4, 3), None, None, None]
    no_etcd = [node_from_api(node("k", "v1.33.1+k3s1", etcd=False))]  # k3s on sqlite: nothing to restore
    with pytest.raises(UsageError, match="no k3s server runs etcd"):
        build_runbook([], snapshot(), [], RunbookOptions(store_url="file:///b", distribution=K3S),
                      etcd_servers(no_etcd, []))


def test_server_choice_warnings() -> None:
    joined = [node_from_api(node(f"s{i}", "v1.33.1+k3s1", "--server", "https://lb:6443")) for i in range(2)]
    book = build_runbook([], snapshot(), [], RunbookOptions(store_url="file:///b", distribution=K3S), joined)
    assert any("every server was started with --server: remove `server:`" in w for w in book.warnings)
    unknown = [ServerNode("x", "v1.33.1+k3s1", (("node-role.kubernetes.io/etcd", "true"),))]
    book = build_runbook([], snapshot(), [], RunbookOptions(store_url="file:///b", distribution=K3S), unknown)
    assert any("flags are unknown" in w for w in book.warnings)


# ------------------------------------------------------------------------------------------------ executed
def _sim_pod(i: int, lay: Any, image: str) -> dict[str, Any]:
    name = lay.names[i]
    pod = etcd_pod(f"cp{i}", name, lay.client_urls[i], lay.peer_urls[i], cluster=lay.initial_cluster)
    c = pod["spec"]["containers"][0]
    c["image"] = image
    c["command"] = [f"--listen-metrics-urls={lay.metrics_urls[i]}" if a.startswith("--listen-metrics-urls=") else a
                    for a in c["command"]]
    return pod


def _wait_healthy(cluster: Any, timeout: float) -> float:
    t0 = time.monotonic()
    while True:
        r = cluster.etcdctl_run("endpoint", "health", dial_timeout="1s", command_timeout="2s", timeout=10)
        if r.returncode == 0:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"etcd not healthy after {timeout}s: {r.stderr}")
        time.sleep(0.1)


@pytest.mark.slow
@needs_kubectl
@pytest.mark.skipif(not unshare_works(), reason="needs unshare -rm (mount + user namespaces) for the node chroots")
def test_kubeadm_runbook_runs_on_simulated_nodes(kube: Any, kubeconfig: Path, etcd_cluster_factory: Any,
                                                 etcd_bins_35: EtcdBinaries, tls_certs: TLSCerts,
                                                 capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The runbook's own lines, unchanged: `snapshot download` and the copies on the operator's machine (ssh to
    the simulated nodes), then every phase of every node's script, on three nodes whose kubelet runs real etcd
    3.5.1 from static pod manifests. etcdutl 3.5.1 has no --bump-revision: the plan is made with
    --bump-revision 0 (the default, 1e9 with --mark-compacted, needs etcd 3.5.10+)."""
    t_start = time.monotonic()
    image = f"registry.k8s.io/etcd:{etcd_bins_35.version}-0"
    lay = etcd_cluster_factory.layout(3, True, "cp")
    cluster = etcd_cluster_factory("3.5", 3, True, layout=lay, start=False)  # etcdctl helpers; the kubelet runs etcd
    pods = [_sim_pod(i, lay, image) for i in range(3)]
    nodes = {f"cp{i}": make_node(tmp_path / "nodes" / f"cp{i}", {
        "etcd.yaml": pods[i], "kube-apiserver.yaml": apiserver_pod(f"cp{i}")}, tls_certs, [image]) for i in range(3)}
    for p in pods:
        add_running(kube, p)
    for n in nodes:
        add_running(kube, apiserver_pod(n))
    opbin = operator_bin(tmp_path / "opbin")
    env = {"PATH": f"{opbin}:{BIN}:{KUBECTL.parent}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path),
           "LANG": "C.UTF-8", "SIM_NODES": str(tmp_path / "nodes"), "SIM_ETCD_BIN": str(etcd_bins_35.etcdutl.parent),
           "KUBECONFIG": str(kubeconfig)}
    store, key = tmp_path / "store", write_key(tmp_path / "key")
    with Kubelet(nodes, etcd_bins_35.etcd) as kubelet:
        _wait_healthy(cluster, 30)
        before_id = cluster.endpoint_status()[0]["Status"]["header"]["cluster_id"]
        cluster.put_many("/registry/configmaps/default/cm-", 200, 512)
        expected = cluster.get_all("")
        r = run_cli(capsys, *backup_args(cluster, f"file://{store}", key))
        assert r.rc == 0, r.err
        sid = r.json()["id"]
        cluster.put_many("/registry/configmaps/default/cm-", 20, 512, start=200)  # after the snapshot: must go
        cluster.etcdctl("del", "--prefix", "/registry/configmaps/default/cm-00000")
        t_plan = time.monotonic()

        plan = run_cli(capsys, "restore", sid, "--plan", "--store", f"file://{store}", "--encryption-key-file", key,
                       "--kubeconfig", kubeconfig, "--bump-revision", "0", "-o", "json",
                       "--write-dir", tmp_path / "runbook")
        assert plan.rc == 0, plan.err
        book = plan.json()
        assert book["distribution"] == KUBEADM and book["phases"] == list(NODE_PHASES)
        assert any("has no --bump-revision" in w for w in build_runbook(
            members_from_pods(pods), snapshot(etcd_version="3.5.1"), [], RunbookOptions(
                store_url="file:///b")).warnings)  # what the default would have said about this image
        operator = tmp_path / "operator"
        operator.mkdir()
        for line in book["steps"][0]["commands"][""]:  # prepare: download + check here, copy to the nodes
            p = subprocess.run(["sh", "-c", line], cwd=operator, env=env, capture_output=True, text=True,
                               timeout=60, check=False)
            assert p.returncode == 0, (line, p.stdout, p.stderr)
        assert stat.S_IMODE((operator / f"{sid}.db").stat().st_mode) == 0o600
        for root in nodes.values():
            copy = root / f"var/lib/etcdbackup-restore/{sid}.db"
            assert stat.S_IMODE(copy.stat().st_mode) == 0o600
            assert stat.S_IMODE(copy.parent.stat().st_mode) == 0o700
        t_phases = time.monotonic()
        timings = {}
        for phase in NODE_PHASES:
            t0 = time.monotonic()
            for n, root in nodes.items():
                script = (tmp_path / "runbook" / f"{n}.sh").read_text()
                (root / "root/runbook.sh").write_text(script)  # as if copied there with scp
                p = run_on_node(root, ["/bin/sh", "/root/runbook.sh", phase], env, timeout=120)
                assert p.returncode == 0, (n, phase, p.stdout, p.stderr, kubelet.errors)
                assert f"{n}: phase {phase} done" in p.stdout
            timings[phase] = round(time.monotonic() - t0, 1)
        restored = time.monotonic()
        _wait_healthy(cluster, 30)
        assert kubelet.errors == []
        assert cluster.get_all("") == expected
        status = cluster.endpoint_status()
        assert len({s["Status"]["leader"] for s in status}) == 1
        assert status[0]["Status"]["header"]["cluster_id"] != before_id  # a new cluster (new token)
        assert sorted(m["name"] for m in cluster.members()) == ["cp0", "cp1", "cp2"]
        for root in nodes.values():
            aside = list((root / "var/lib").glob("etcd.before-restore-*"))
            assert len(aside) == 1 and (aside[0] / "member/snap/db").is_file()  # the old data dir, kept
            assert not list((root / "var/lib").glob("etcd.restoring-*"))
            assert (root / "etc/kubernetes/manifests/kube-apiserver.yaml").is_file()
    total = time.monotonic() - t_start
    print(f"\nsimulated kubeadm restore: setup+backup {t_plan - t_start:.1f}s, plan+prepare {t_phases - t_plan:.1f}s, "
          f"phases {restored - t_phases:.1f}s {timings}, total {total:.1f}s", file=sys.stderr)
    assert total < 90
