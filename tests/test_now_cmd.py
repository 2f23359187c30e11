"""`kubectl etcdbackup now` end to end: real kubectl (plugin discovery) -> the plugin -> the real `kubernetes`
client -> the fake API server; the kubelet simulator runs the backup Job's container (the real agent) against
a real 3-member etcd 3.5 cluster with mTLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from infra.certs import TLSCerts
from infra.etcd_binaries import EtcdBinaries
from infra.etcd_cluster import EtcdCluster
from k8s_agent import etcd_args, install, kubelet, target_line, tool_path
from k8s_fake import FakeKubeServer, KubeletSimulator
from k8s_helpers import kubeadm_pki, needs_kubectl, plugin_env, run_plugin

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
