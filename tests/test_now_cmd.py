"""`kubectl etcdbackup now` end to end: real kubectl (plugin discovery) -> the plugin -> the real `kubernetes`
client -> the fake API server; the kubelet simulator runs the backup Job's container (the real agent) against
a real 3-member etcd 3.5 cluster with mTLS."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from infra.certs import TLSCerts
from infra.etcd_binaries import EtcdBinaries
from infra.etcd_cluster import EtcdCluster
from infra.ports import allocate_ports, release_ports
from k8s_agent import etcd_args, install, kubelet, target_line, tool_path
from k8s_fake import FakeKubeServer, KubeletSimulator
from k8s_helpers import kubeadm_pki, needs_kubectl, plugin_env, run_plugin

from kubectl_etcdbackup.run_status import load_drill
from kubectl_etcdbackup.stores.file_store import FileStore

pytestmark = [needs_kubectl, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def pki(tls_certs: TLSCerts, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kubeadm_pki(tls_certs, tmp_path_factory.mktemp("pki"))


@pytest.fixture
def env(kubeconfig: Path, tmp_path: Path) -> dict[str, str]:
    return plugin_env(kubeconfig, tmp_path)


@pytest.fixture
def sim(kube: FakeKubeServer, pki: Path, etcd_bins_35: EtcdBinaries, tmp_path: Path) -> Iterator[KubeletSimulator]:
    with kubelet(kube, pki, tool_path(etcd_bins_35), tmp_path / "kubelet") as s:
        yield s


def test_failed_job_exits_non_zero_with_the_log_tail(env: dict[str, str], kube: FakeKubeServer,
                                                     sim: KubeletSimulator,
                                                     etcd35_tls_cluster: EtcdCluster) -> None:
    ns = "failing"
    install(env, ns, *etcd_args(etcd35_tls_cluster))
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "etcd-backup-key", "namespace": ns},
                 "stringData": {"key": "not a key"}})
    r = run_plugin(env, "now", "-n", ns, "--no-logs", "--timeout", "60s")
    assert r.rc == 1, r
    last = r.err.strip().splitlines()[-1]
    assert last.startswith(f"error: backup job {ns}/etcd-backup-manual-") and "BackoffLimitExceeded" in last
    assert "key" in last.split("BackoffLimitExceeded")[1]  # the agent's own error line
    assert "--- last log lines of pod" in r.err and r.out == ""
    assert r.err.splitlines()[:2] == [target_line(kube), f"job {ns}/{last.split('/')[1].split()[0]} created"]


def test_no_wait_and_timeout(env: dict[str, str], kube: FakeKubeServer) -> None:
    ns = "nowait"
    install(env, ns, "--generate-key")
    r = run_plugin(env, "now", "-n", ns, "--no-wait")
    assert r.rc == 0 and r.out.strip().startswith("etcd-backup-manual-"), r
    assert kube.get("jobs", r.out.strip(), ns) is not None
    assert r.err.splitlines() == [target_line(kube), f"job {ns}/{r.out.strip()} created"]
    r = run_plugin(env, "now", "-n", ns, "--timeout", "2s")  # no kubelet: the Job never runs
    assert r.rc == 1 and r.err.strip().splitlines()[-1].startswith("error: job nowait/etcd-backup-manual-"), r
    assert "did not finish in time" in r.err
    for job in kube.list("jobs", ns):  # not for the kubelet simulators of later tests
        kube.delete("jobs", job["metadata"]["name"], ns, propagation="Background")


def test_now_prints_the_new_snapshot(env: dict[str, str], kube: FakeKubeServer, sim: KubeletSimulator,
                                     etcd35_tls_cluster: EtcdCluster) -> None:
    ns = "table"
    install(env, ns, "--generate-key", *etcd_args(etcd35_tls_cluster))
    r = run_plugin(env, "now", "-n", ns, "--timeout", "90s", "--context", "second")
    assert r.rc == 0, r
    assert r.err.splitlines()[0] == target_line(kube, "second")
    header, row = r.out.splitlines()
    assert header.split() == ["ID", "REVISION", "KEYS", "SIZE", "STORED", "VERIFIED", "MEMBER"]
    assert row.split()[0].startswith("etcd-") and "iB" in row and f'"id": "{row.split()[0]}"' in r.err


def test_drill_runs_the_drill_cronjob_on_a_real_backup(env: dict[str, str], kube: FakeKubeServer, pki: Path,
                                                       etcd_bins_35: EtcdBinaries, tmp_path: Path,
                                                       etcd_cluster_factory: Callable[..., EtcdCluster]) -> None:
    """`now` stores a real backup on the PVC; `drill` makes a Job from the drill CronJob, which the kubelet
    simulator runs (the real `agent drill`, non-root pod spec, key through the fsGroup) on that store: first on
    Kubernetes data without its core objects (the drill fails and says why), then on complete data."""
    cluster = etcd_cluster_factory("3.5", 1, True)
    cluster.put("/registry/pods/default/p-1", "{}")
    ns = "drill"
    install(env, ns, "--generate-key", *etcd_args(cluster))
    ports = allocate_ports(2)
    try:
        with kubelet(kube, pki, tool_path(etcd_bins_35), tmp_path / "kubelet",
                     env={"ETCDBACKUP_DRILL_PORT": str(ports[0])}) as sim:
            store = FileStore(str(sim.claim_dir("etcd-backup-data", ns)), create=True)
            assert run_plugin(env, "now", "-n", ns, "--timeout", "90s", "--no-logs").rc == 0
            bad = run_plugin(env, "drill", "-n", ns, "--timeout", "100s", "--no-logs")
            assert bad.rc == 1 and bad.out == "", bad
            last = bad.err.strip().splitlines()[-1]
            assert last.startswith(f"error: drill job {ns}/etcd-backup-drill-manual-") and \
                "restore drill failed: " in last and "Kubernetes data without /registry/namespaces/default" in last
            assert "--- last log lines of pod" in bad.err
            assert not load_drill(store).last_ok and load_drill(store).failures_total == 1

            for k in ("/registry/namespaces/default", "/registry/namespaces/kube-system",
                      "/registry/services/specs/default/kubernetes"):
                cluster.put(k, "{}")
            backup = run_plugin(env, "now", "-n", ns, "--timeout", "90s", "--no-logs", "-o", "json")
            assert backup.rc == 0, backup
            r = run_plugin(env, "drill", "-n", ns, "--timeout", "100s", "--no-logs")
            assert r.rc == 0, r
    finally:
        release_ports(ports)
    lines = r.err.splitlines()
    assert lines[0] == target_line(kube) and lines[1].startswith(f"job {ns}/etcd-backup-drill-manual-"), r.err
    header, row = r.out.splitlines()
    assert header.split() == ["SNAPSHOT", "RESULT", "RTO", "ESTIMATE", "REVISION", "KEYS"]
    sid = json.loads(backup.out)["id"]
    assert row.split()[:2] == [sid, "passed"] and row.split()[2].endswith("s") and row.split()[-1] == "4"
    record = load_drill(store)
    assert record.last_ok and record.last_snapshot_id == sid and record.estimated_restore_seconds > 0
    assert record.failures_total == 1
    job = kube.get("jobs", lines[1].split("/")[1].split()[0], ns)
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and "hostNetwork" not in pod
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"


def test_drill_without_the_drill_cronjob_says_how_to_install_it(env: dict[str, str], kube: FakeKubeServer) -> None:
    ns = "nodrill"
    install(env, ns, "--no-drill")
    r = run_plugin(env, "drill", "-n", ns, "--no-wait")
    assert r.rc != 0 and r.err.strip().splitlines()[-1] == (
        f"error: no restore drill CronJob etcd-backup-drill in namespace {ns}: install with --drill "
        "(chart: drill.enabled=true)"), r
