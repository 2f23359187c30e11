"""The encryption key is never readable by other users: the modes the manifests give the key Secret volume, as
the kubelet simulator applies them (defaultMode, an item's mode, fsGroup), checked by the agent's real
keys.check_key_file_permissions inside the simulated pod; hostPath type checks; and the restore runbook's lines
that write the key on the operator's machine and on the nodes (mode 0600, even over an existing file)."""

from __future__ import annotations

import copy
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from k8s_fake import FakeKubeServer, KubeletSimulator
from k8s_helpers import KUBECTL, etcd_pod, needs_kubectl

from kubectl_etcdbackup.k8s import manifests as m
from kubectl_etcdbackup.k8s.etcd_pods import members_from_pods
from kubectl_etcdbackup.k8s.runbook import LOCAL, RunbookOptions, build_runbook, write_private
from kubectl_etcdbackup.k8s.store_config import SecretRef
from kubectl_etcdbackup.keys import check_key_file_permissions, generate_key
from kubectl_etcdbackup.manifest import SnapshotManifest

pytestmark = pytest.mark.timeout(60)
NS = "default"
SECRET = "etcd-backup-key"
STAT = "import os, stat, sys; st = os.stat(sys.argv[1]); print(oct(stat.S_IMODE(st.st_mode)), st.st_gid)"
CHECK = STAT + "; from kubectl_etcdbackup.keys import check_key_file_permissions as c; c(sys.argv[1]); print('ok')"


@pytest.fixture
def kubelet(kube: FakeKubeServer, tmp_path: Path) -> Any:
    if kube.get("secrets", SECRET, NS) is None:
        kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NS},
                     "stringData": {"key": generate_key()}})
    with KubeletSimulator(kube, namespace=NS, executables={"python3": sys.executable},
                          env={"PYTHONDONTWRITEBYTECODE": "1"}, workdir=tmp_path / "kubelet", job_timeout=30) as sim:
        yield sim


def run_job(kube: FakeKubeServer, kubelet: KubeletSimulator, name: str, pod: dict[str, Any], code: str,
            mounts: list[dict[str, Any]] | None = None) -> tuple[bool, str]:
    """Run a one-container Job with the volumes and securityContext of `pod`; (succeeded, log)."""
    spec = {"restartPolicy": "Never", "securityContext": copy.deepcopy(pod.get("securityContext", {})),
            "volumes": copy.deepcopy(pod["volumes"]),
            "containers": [{"name": "main", "image": "agent", "command": ["python3", "-c", code, m.KEY_FILE],
                            "volumeMounts": mounts or [{"name": "encryption-key", "mountPath": m.KEY_DIR,
                                                        "readOnly": True}]}]}
    kube.create({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS},
                 "spec": {"backoffLimit": 0, "template": {"spec": spec}}})
    job = kubelet.wait_for_job(name, NS, timeout=30)
    (p,) = kube.list("pods", NS, label_selector=f"job-name={name}")
    return bool(job["status"].get("succeeded")), kube.pod_log(p["metadata"]["name"], NS).decode()


def key_only(pod: dict[str, Any], **secret: Any) -> dict[str, Any]:
    """`pod` with just its key volume, the volume's secret fields updated."""
    (vol,) = [copy.deepcopy(v) for v in pod["volumes"] if v["name"] == "encryption-key"]
    vol["secret"] |= secret
    return pod | {"volumes": [vol]}


def rendered_pods() -> dict[str, dict[str, Any]]:
    objs = m.render_manifests(m.ManifestOptions(namespace=NS))
    (cj,) = [o for o in objs if o["kind"] == "CronJob" and o["metadata"]["name"] != m.drill_name_of("etcd-backup")]
    (dep,) = [o for o in objs if o["kind"] == "Deployment"]
    return {"backup": cj["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            "exporter": dep["spec"]["template"]["spec"]}


# ---------------------------------------------------------------------------------- key volumes in simulated pods
def test_root_backup_pod_key_passes_the_agents_check(kube: FakeKubeServer, kubelet: KubeletSimulator) -> None:
    ok, log = run_job(kube, kubelet, "backup-key", key_only(rendered_pods()["backup"]), CHECK)
    assert ok and log == "0o400 0\nok\n", log


def test_world_readable_key_is_refused_in_the_pod(kube: FakeKubeServer, kubelet: KubeletSimulator) -> None:
    ok, log = run_job(kube, kubelet, "open-key", key_only(rendered_pods()["backup"], defaultMode=0o644), CHECK)
    assert not ok and "0o644 0\n" in log and "readable by others (mode 0644)" in log, log


def test_fs_group_gives_the_key_its_group_and_group_read(kube: FakeKubeServer, kubelet: KubeletSimulator) -> None:
    """The exporter's layout: owner root, group = fsGroup 65532, 0440, as the kubelet leaves it. (Only the layout:
    the simulator runs containers as root, the file's owner, not as uid 65532 in group 65532.)"""
    ok, log = run_job(kube, kubelet, "exporter-key", key_only(rendered_pods()["exporter"]), STAT)
    assert ok and log == f"0o440 {m.NONROOT_ID}\n", log
    # the kubelet adds group read to whatever mode was asked for once an fsGroup is set
    ok, log = run_job(kube, kubelet, "fsgroup-0400", key_only(rendered_pods()["exporter"], defaultMode=0o400), STAT)
    assert ok and log == f"0o440 {m.NONROOT_ID}\n", log


def test_an_items_mode_wins_over_default_mode(kube: FakeKubeServer, kubelet: KubeletSimulator) -> None:
    pod = key_only(rendered_pods()["backup"])
    pod["volumes"][0]["secret"]["items"][0]["mode"] = 0o600
    ok, log = run_job(kube, kubelet, "item-mode", pod, STAT)
    assert ok and log == "0o600 0\n", log


def test_host_path_type_is_checked(kube: FakeKubeServer, kubelet: KubeletSimulator, tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("cert")
    mounts = [{"name": "pki", "mountPath": "/etc/kubernetes/pki/etcd/ca.crt", "readOnly": True}]
    pod = {"volumes": [{"name": "pki", "hostPath": {"path": str(tmp_path / "ca.crt"), "type": "File"}}]}
    assert run_job(kube, kubelet, "host-file", pod, "print('ran')", mounts) == (True, "ran\n")
    pod = {"volumes": [{"name": "pki", "hostPath": {"path": str(tmp_path), "type": "File"}}]}
    ok, log = run_job(kube, kubelet, "host-dir", pod, "print('ran')", mounts)
    assert not ok and f"hostPath type check failed: {tmp_path} is not a file" in log, log


# ------------------------------------------------------------------------------------------------ the runbook
def runbook_prepare(namespace: str = "etcd-backup") -> list[str]:
    pods = [etcd_pod(f"cp{i}", f"cp{i}", f"https://10.0.0.{i + 1}:2379", f"https://10.0.0.{i + 1}:2380")
            for i in range(2)]
    snap = SnapshotManifest(
        id="etcd-20261127T071752123Z-3f9a", created_at="2026-11-27T07:17:52.123Z", etcd_revision=4242,
        key_count=1000, etcd_version="3.5.21", cluster_id="c1", member_id="m1", member_endpoint="https://10.0.0.1:2379",
        raw_size=1 << 20, stored_size=1 << 19, raw_sha256="a" * 64, stored_sha256="b" * 64, codec="zstd",
        cipher="aes-256-gcm", key_id="k", duration_seconds=1.0, verified=True)
    book = build_runbook(members_from_pods(pods), snap, ["cp0", "cp1"], RunbookOptions(
        store_url="s3://bkt/etcd", namespace=namespace, key_secret=SecretRef(SECRET, "key"), node_python=True))
    assert book.steps[0].phase == "prepare" and "mode 0600" in book.steps[0].note
    return book.steps[0].commands[LOCAL]


def test_runbook_writes_the_key_with_mode_0600() -> None:
    install = "(umask 077 && install -m 600 /dev/stdin {})"
    assert runbook_prepare() == [
        f"kubectl -n etcd-backup get secret {SECRET} -o jsonpath='{{.data.key}}' | base64 -d | "
        + install.format("etcdbackup.key"),
        f"ssh cp0 '{install.format('/etc/kubernetes/etcdbackup.key')}' < etcdbackup.key",
        f"ssh cp1 '{install.format('/etc/kubernetes/etcdbackup.key')}' < etcdbackup.key",
    ]


@needs_kubectl
def test_runbook_key_lines_create_private_files_even_over_open_ones(kube: FakeKubeServer, kubeconfig: Path,
                                                                    tmp_path: Path) -> None:
    """The operator's line, run as is (real kubectl, the fake API's Secret), and the node's command (what ssh
    runs there, here locally) leave 0600 files, also where a world-readable file was before."""
    key = generate_key()
    if kube.get("secrets", SECRET, NS) is not None:
        kube.delete("secrets", SECRET, NS)
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NS},
                 "stringData": {"key": key}})
    local_line = runbook_prepare(NS)[0]
    for f in ("etcdbackup.key", "node.key"):
        (tmp_path / f).write_text("old")
        (tmp_path / f).chmod(0o644)
    env = {"PATH": f"{KUBECTL.parent}:/usr/bin:/bin", "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}
    subprocess.run(["sh", "-c", local_line], cwd=tmp_path, env=env, check=True, timeout=30)
    node_line = f"{write_private(str(tmp_path / 'node.key'))} < etcdbackup.key"
    subprocess.run(["sh", "-c", node_line], cwd=tmp_path, env=env, check=True, timeout=30)
    for f in ("etcdbackup.key", "node.key"):
        path = tmp_path / f
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and path.read_text() == key, f
        check_key_file_permissions(str(path))
    assert shlex.split(local_line)[:6] == ["kubectl", "-n", NS, "get", "secret", SECRET]
