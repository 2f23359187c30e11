"""End to end through several commands at once (`install`, `now`, `list`, `status`, `restore --plan`, `snapshot
get`): real kubectl (plugin discovery) -> the plugin -> the real `kubernetes` client -> the fake API server; the
kubelet simulator runs the backup Job's container (the real agent) against a real 3-member etcd 3.5 cluster with
mTLS. Each command's own tests are in tests/test_<command>_cmd.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from infra.certs import TLSCerts
from infra.etcd_binaries import EtcdBinaries
from infra.etcd_cluster import EtcdCluster
from infra.s3_server import ACCESS_KEY, SECRET_KEY, S3Server
from k8s_agent import EXE, etcd_args, install, kubelet, tool_path
from k8s_fake import FakeKubeServer, KubeletSimulator, LocalExec
from k8s_helpers import (
    PKI,
    PLUGIN,
    add_etcd_pods,
    add_running,
    apiserver_pod,
    exporter_pod,
    kubeadm_pki,
    needs_kubectl,
    plugin_env,
    run_plugin,
)

pytestmark = [needs_kubectl, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def path(etcd_bins_35: EtcdBinaries) -> str:
    return tool_path(etcd_bins_35)


@pytest.fixture(scope="module")
def pki(tls_certs: TLSCerts, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kubeadm_pki(tls_certs, tmp_path_factory.mktemp("pki"))


@pytest.fixture
def env(kubeconfig: Path, tmp_path: Path) -> dict[str, str]:
    return plugin_env(kubeconfig, tmp_path)


@pytest.fixture(name="kubelet")
def kubelet_fixture(kube: FakeKubeServer, pki: Path, path: str, tmp_path: Path) -> Iterator[KubeletSimulator]:
    with kubelet(kube, pki, path, tmp_path / "kubelet") as sim:
        yield sim


# ------------------------------------------------------------------------------------------------ file store (PVC)
def test_now_list_status_and_plan_with_a_pvc_store(env: dict[str, str], kube: FakeKubeServer,
                                                   kubelet: KubeletSimulator, etcd35_tls_cluster: EtcdCluster,
                                                   pki: Path, path: str, tmp_path: Path) -> None:
    ns, cluster = "pvc", etcd35_tls_cluster
    install(env, ns, "--generate-key", *etcd_args(cluster))
    r = run_plugin(env, "now", "-n", ns, "--timeout", "90s")
    assert r.rc == 0, r
    job = next(j for j in kube.list("jobs", ns) if "-manual-" in j["metadata"]["name"])
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    header, row = r.out.splitlines()
    assert header.split()[:3] == ["ID", "REVISION", "KEYS"]
    sid, revision, keys = row.split()[0], int(row.split()[1]), int(row.split()[2])
    assert sid.startswith("etcd-") and revision == cluster.revision() and keys >= len(cluster.preloaded_keys)
    assert f'"id": "{sid}"' in r.err  # the pod's log was streamed
    claim = kubelet.claim_dir("etcd-backup-data", ns)
    assert (claim / f"{sid}.etcdbak").is_file() and json.loads((claim / f"{sid}.json").read_text())["verified"]
    run = next(x for x in kubelet.runs if x.job == job["metadata"]["name"])
    assert run.argv[:3] == [str(PLUGIN), "agent", "backup"] and run.exit_code == 0

    # list: exec (argv, no shell) in the exporter pod that mounts the PVC
    exporter = exporter_pod(kube, ns)["metadata"]["name"]
    key_dir = tmp_path / "key"  # the exporter pod's mount of the key Secret
    key_dir.mkdir()
    (key_dir / "key").write_bytes(base64.b64decode(kube.get("secrets", "etcd-backup-key", ns)["data"]["key"]))
    (key_dir / "key").chmod(0o600)
    kube.set_exec_handler(LocalExec(path=path, path_map={"/backups": str(claim), "/etc/etcdbackup/key": str(key_dir)},
                                    executables=EXE), namespace=ns)
    r = run_plugin(env, "list", "-n", ns, "-o", "json")
    assert r.rc == 0, r
    assert [s["id"] for s in json.loads(r.out)] == [sid]
    call = kube.exec_calls[-1]
    assert (call.pod, call.command) == (exporter, ["kubectl-etcdbackup", "list", "-o", "json", "--store",
                                                   "file:///backups", "--encryption-key-file",
                                                   "/etc/etcdbackup/key/key"])
    table = run_plugin(env, "list", "-n", ns)
    assert table.rc == 0 and sid in table.out and "file:///backups" in table.err, table

    # status: three real members through their (fake) etcd pods, plus the backups' run record
    kube.set_exec_handler(LocalExec(path=path, path_map={PKI: str(pki)}), namespace="kube-system")
    add_etcd_pods(kube, cluster.names, cluster.endpoints, cluster.peer_urls, nodes=["cp0", "cp1", "cp2"])
    for node in ("cp0", "cp1", "cp2"):
        add_running(kube, apiserver_pod(node))
    st = run_plugin(env, "status", "-n", ns, "-o", "json")
    assert st.rc == 0, st
    doc = json.loads(st.out)
    assert [m["member"] for m in doc["members"]] == cluster.names
    assert all(m["healthy"] for m in doc["members"]) and sum(m["leader"] for m in doc["members"]) == 1
    assert doc["backups"]["last_backup_id"] == sid and doc["backups"]["ok"]
    assert doc["backups"]["last_failure_time"] is None
    assert doc["warnings"] == ["no restore drill recorded yet: run kubectl etcdbackup drill"]  # a new install
    etcd_calls = [c for c in kube.exec_calls if c.namespace == "kube-system"]
    assert {c.pod for c in etcd_calls} == {"etcd-cp0", "etcd-cp1", "etcd-cp2"}
    assert all(c.command[0] == "etcdctl" and c.command[-2:] == ["-w", "json"] for c in etcd_calls)
    assert kube.exec_calls[-1].command == ["kubectl-etcdbackup", "agent", "catalog", "--store", "file:///backups",
                                           "--encryption-key-file", "/etc/etcdbackup/key/key"]

    # restore --plan: 'latest' resolved through the cluster's store, members from the pods
    plan = run_plugin(env, "restore", "latest", "--plan", "-n", ns, "--write-dir", tmp_path / "runbook")
    assert plan.rc == 0, plan
    assert f"snapshot {sid} (revision {revision}" in plan.out and " latest " not in plan.out
    assert plan.out.count(f"--initial-cluster-token restore-{sid}") == 3
    assert sorted(p.name for p in (tmp_path / "runbook").iterdir()) == ["README.txt", "cp0.sh", "cp1.sh", "cp2.sh"]

    # without an exporter pod the store is read by a short-lived reader Job (then deleted)
    kube.delete("pods", exporter, ns)
    r = run_plugin(env, "list", "-n", ns, "-o", "yaml")
    assert r.rc == 0, r
    assert [s["id"] for s in yaml.safe_load(r.out)] == [sid]
    readers = [x for x in kubelet.runs if "-reader-" in x.job]
    assert readers and readers[-1].exit_code == 0
    assert not [j for j in kube.list("jobs", ns) if "-reader-" in j["metadata"]["name"]]


# ------------------------------------------------------------------------------------------------ S3 store
def test_now_list_and_get_with_an_s3_store(env: dict[str, str], kube: FakeKubeServer, kubelet: KubeletSimulator,
                                           etcd35_tls_cluster: EtcdCluster, s3_server: S3Server, s3_bucket: str,
                                           kubeconfig: Path, tmp_path: Path) -> None:
    ns = "s3"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": ns},
                 "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}})
    install(env, ns, "--generate-key", "--store", f"s3://{s3_bucket}/etcd", "--s3-endpoint-url",
            s3_server.endpoint_url, "--s3-secret", "s3-creds", *etcd_args(etcd35_tls_cluster))
    r = run_plugin(env, "now", "-n", ns, "-o", "json", "--timeout", "90s")
    assert r.rc == 0, r
    result = json.loads(r.out)
    assert result["id"].startswith("etcd-") and result["raw_size"] > 0 and result["job"].startswith("etcd-backup-")
    keys = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert f"etcd/{result['id']}.etcdbak" in keys

    # directly with the local AWS credentials, then with none: the CronJob's Secret is used
    for aws in (True, False):
        r = run_plugin(plugin_env(kubeconfig, tmp_path, aws=aws), "list", "-n", ns, "-o", "json")
        assert r.rc == 0, r
        assert [s["id"] for s in json.loads(r.out)] == [result["id"]]
    assert not kube.exec_calls or kube.exec_calls[-1].namespace != ns  # S3 needs no exec

    # snapshot get falls back to the cluster's (S3) store
    key = tmp_path / "key"
    key.write_text(kube.get("secrets", "etcd-backup-key", ns)["data"]["key"])
    key.write_bytes(base64.b64decode(key.read_text()))
    key.chmod(0o600)  # like ssh: a key file others can read is refused
    out = tmp_path / "snap.db"
    r = run_plugin(env, "snapshot", "get", "latest", "-n", ns, "-f", out, "--key-file", key)
    assert r.rc == 0, r
    assert out.stat().st_size == result["raw_size"] and result["id"] in r.out

    st = run_plugin(env, "status", "-n", ns, "--etcd-namespace", "nowhere")
    assert st.rc == 1 and "no etcd pods" in st.err, st


