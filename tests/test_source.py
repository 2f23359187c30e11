"""One snapshot source: every command that reads snapshots (list, describe, verify, prune, delete, snapshot
download, restore) finds the cluster's store without --store. A file store on a PVC is reached by running the
same command next to the volume: reads by exec in the exporter pod (with the cluster's key), changes in a Job made
from the CronJob's own pod. Real kubectl -> plugin -> real `kubernetes` client -> the fake API server; the kubelet
simulator runs the Jobs (the real agent) against a real 3-member etcd 3.5 with mTLS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from infra.certs import TLSCerts
from infra.etcd_binaries import EtcdBinaries
from infra.etcd_cluster import EtcdCluster
from k8s_fake import FakeKubeServer, KubeletSimulator, LocalExec
from k8s_helpers import PKI, PLUGIN, exporter_pod, kubeadm_pki, needs_kubectl, plugin_env, run_plugin

from kubectl_etcdbackup.k8s.manifests import KEY_DIR

pytestmark = [needs_kubectl, pytest.mark.timeout(240)]
EXE = {"kubectl-etcdbackup": str(PLUGIN)}
NS = "src"


@pytest.fixture(scope="module")
def path(etcd_bins_35: EtcdBinaries) -> str:
    return f"{etcd_bins_35.etcdutl.parent}:/usr/bin:/bin"  # type: ignore[union-attr]


@pytest.fixture
def kubelet(kube: FakeKubeServer, tls_certs: TLSCerts, path: str, tmp_path: Path) -> Iterator[KubeletSimulator]:
    pki = kubeadm_pki(tls_certs, tmp_path / "pki")
    with KubeletSimulator(kube, path_map={PKI: str(pki)}, executables=EXE, path=path,
                          workdir=tmp_path / "kubelet", job_timeout=120) as sim:
        yield sim


def _ids(r) -> list[str]:  # noqa: ANN001
    assert r.rc == 0, r
    return [s["id"] for s in json.loads(r.out)]


def test_pvc_store_is_read_and_changed_next_to_the_volume(kube: FakeKubeServer, kubelet: KubeletSimulator,
                                                          etcd35_tls_cluster: EtcdCluster, kubeconfig: Path,
                                                          path: str, tmp_path: Path) -> None:
    env = plugin_env(kubeconfig, tmp_path)
    assert run_plugin(env, "install", "-n", NS, "--generate-key", "--etcd-endpoints",
                      ",".join(etcd35_tls_cluster.endpoints)).rc == 0
    for _ in range(2):
        r = run_plugin(env, "now", "-n", NS, "--timeout", "90s", "-o", "json")
        assert r.rc == 0, r
    claim = kubelet.claim_dir("etcd-backup-data", NS)
    key_dir = tmp_path / "key"
    key_dir.mkdir()
    secret = kube.get("secrets", "etcd-backup-key", NS)
    import base64

    (key_dir / "key").write_bytes(base64.b64decode(secret["data"]["key"]))
    (key_dir / "key").chmod(0o600)
    exporter_pod(kube, NS)
    kube.set_exec_handler(LocalExec(path=path, path_map={"/backups": str(claim), KEY_DIR: str(key_dir)},
                                    executables=EXE), namespace=NS)

    # list and describe: exec in the exporter, which authenticates with the cluster's key
    listed = run_plugin(env, "list", "-n", NS, "-o", "json")
    newest, older = _ids(listed)
    assert all(s["authenticated"] for s in json.loads(listed.out))
    assert kube.exec_calls[-1].command[-2:] == ["--encryption-key-file", f"{KEY_DIR}/key"]
    d = run_plugin(env, "describe", "latest", "-n", NS, "-o", "json")
    assert d.rc == 0 and json.loads(d.out)["id"] == newest and json.loads(d.out)["trust"] == "authenticated", d

    # verify: next to the volume too
    v = run_plugin(env, "verify", "latest", "-n", NS, "-o", "json")
    assert v.rc == 0 and json.loads(v.out)[0]["id"] == newest and json.loads(v.out)[0]["status"] == "ok", v
    assert kube.exec_calls[-1].command[:3] == ["kubectl-etcdbackup", "verify", "latest"]

    # prune --dry-run reads (exec); prune deletes in a Job with the backup's own access
    dry = run_plugin(env, "prune", "-n", NS, "--keep-last", "1", "--dry-run", "-o", "json")
    assert dry.rc == 0 and {r["id"]: r["action"] for r in json.loads(dry.out)}[older] == "would delete", dry
    done = run_plugin(env, "prune", "-n", NS, "--keep-last", "1", "-o", "json")
    assert done.rc == 0 and {r["id"]: r["action"] for r in json.loads(done.out)}[older] == "deleted", done
    assert not (claim / f"{older}.etcdbak").exists() and (claim / f"{newest}.etcdbak").exists()
    runs = [x for x in kubelet.runs if "-run-" in x.job]
    assert runs and runs[-1].argv[1] == "prune" and runs[-1].exit_code == 0
    assert not [j for j in kube.list("jobs", NS) if "-run-" in j["metadata"]["name"]]  # cleaned up

    # delete: the last good snapshot only with --force; through a Job as well
    refused = run_plugin(env, "delete", newest, "--yes", "-n", NS)
    assert refused.rc == 1 and "last good one" in refused.err, refused
    gone = run_plugin(env, "delete", newest, "--yes", "--force", "-n", NS)
    assert gone.rc == 0 and f"deleted {newest}" in gone.out, gone
    assert not (claim / f"{newest}.json").exists()
    assert _ids(run_plugin(env, "list", "-n", NS, "-o", "json")) == []

    # what needs the snapshot here says so in one line
    dl = run_plugin(env, "snapshot", "download", "latest", "-f", tmp_path / "x.db", "-n", NS)
    assert dl.rc == 2 and "volume inside the cluster" in dl.err and len(dl.err.strip().splitlines()) == 1, dl
