"""Helpers for the plugin's Kubernetes tests: run `kubectl etcdbackup ...` through real kubectl plugin discovery
against the fake API, and kubeadm-like objects (etcd and kube-apiserver static pods, a kubeadm PKI dir)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from infra.certs import TLSCerts

ROOT = Path(__file__).resolve().parents[1]
KUBECTL = ROOT / ".ci" / "bin" / "kubectl"
BIN = Path(sys.executable).parent  # the venv's bin: kubectl-etcdbackup, etcdctl, etcdutl
PLUGIN = BIN / "kubectl-etcdbackup"
PKI = "/etc/kubernetes/pki/etcd"  # kubeadm's etcd PKI dir, as pods see it
needs_kubectl = pytest.mark.skipif(not os.access(KUBECTL, os.X_OK), reason="run .ci/get-kubectl-helm.sh first")


class PluginResult:
    def __init__(self, p: subprocess.CompletedProcess[str]) -> None:
        self.rc, self.out, self.err = p.returncode, p.stdout, p.stderr

    def __repr__(self) -> str:
        return f"rc={self.rc}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def plugin_env(kubeconfig: Path, home: Path, *, aws: bool = True, extra: Mapping[str, str] | None = None
               ) -> dict[str, str]:
    """kubectl's environment: the venv's bin on PATH (plugin discovery), KUBECONFIG, and (unless aws=False) the
    session's dummy AWS credentials; nothing else from this process."""
    env = {"PATH": f"{BIN}:{KUBECTL.parent}:/usr/bin:/bin", "HOME": str(home), "KUBECONFIG": str(kubeconfig),
           "LANG": "C.UTF-8", "AWS_EC2_METADATA_DISABLED": "true"}
    if aws:
        env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    else:
        env.update({"AWS_CONFIG_FILE": str(home / "no-aws-config"),
                    "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials")})
    return env | dict(extra or {})


def run_plugin(env: Mapping[str, str], *args: str | Path, timeout: float = 90) -> PluginResult:
    """`kubectl etcdbackup ARGS`: kubectl finds kubectl-etcdbackup on PATH and runs it."""
    p = subprocess.run([str(KUBECTL), "etcdbackup", *map(str, args)], capture_output=True, text=True,
                       env=dict(env), timeout=timeout, check=False)
    return PluginResult(p)


def kubeadm_pki(certs: TLSCerts, directory: Path) -> Path:
    """A directory laid out like kubeadm's /etc/kubernetes/pki/etcd, holding the test certificates."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, src in (("ca.crt", certs.ca), ("server.crt", certs.server_cert), ("server.key", certs.server_key),
                      ("peer.crt", certs.server_cert), ("peer.key", certs.server_key),
                      ("healthcheck-client.crt", certs.client_cert), ("healthcheck-client.key", certs.client_key)):
        link = directory / name
        if not link.exists():
            link.symlink_to(src)
    return directory


def etcd_pod(node: str, member: str, client_url: str, peer_url: str, *, cluster: str = "",
             quota: int | None = None, data_dir: str = "/var/lib/etcd") -> dict[str, Any]:
    """An etcd static (mirror) pod as kubeadm writes it (kube-system, label component=etcd)."""
    command = ["etcd", f"--advertise-client-urls={client_url}", f"--cert-file={PKI}/server.crt",
               "--client-cert-auth=true", f"--data-dir={data_dir}", "--experimental-initial-corrupt-check=true",
               f"--initial-advertise-peer-urls={peer_url}", f"--initial-cluster={cluster or f'{member}={peer_url}'}",
               f"--key-file={PKI}/server.key", f"--listen-client-urls={client_url}",
               "--listen-metrics-urls=http://127.0.0.1:2381", f"--listen-peer-urls={peer_url}", f"--name={member}",
               f"--peer-cert-file={PKI}/peer.crt", "--peer-client-cert-auth=true", f"--peer-key-file={PKI}/peer.key",
               f"--peer-trusted-ca-file={PKI}/ca.crt", "--snapshot-count=10000", f"--trusted-ca-file={PKI}/ca.crt"]
    if quota:
        command.append(f"--quota-backend-bytes={quota}")
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"etcd-{node}", "namespace": "kube-system",
                     "labels": {"component": "etcd", "tier": "control-plane"},
                     "annotations": {"kubeadm.kubernetes.io/etcd.advertise-client-urls": client_url,
                                     "kubernetes.io/config.source": "file", "kubernetes.io/config.hash": "abc"},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": f"uid-{node}",
                                          "controller": True}]},
        "spec": {"nodeName": node, "hostNetwork": True, "priorityClassName": "system-node-critical",
                 "containers": [{"name": "etcd", "image": "registry.k8s.io/etcd:3.5.21-0", "command": command,
                                 "volumeMounts": [{"mountPath": data_dir, "name": "etcd-data"},
                                                  {"mountPath": PKI, "name": "etcd-certs"}]}],
                 "volumes": [{"name": "etcd-certs", "hostPath": {"path": PKI, "type": "DirectoryOrCreate"}},
                             {"name": "etcd-data", "hostPath": {"path": data_dir, "type": "DirectoryOrCreate"}}]},
    }


def apiserver_pod(node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"kube-apiserver-{node}", "namespace": "kube-system",
                         "labels": {"component": "kube-apiserver", "tier": "control-plane"}},
            "spec": {"nodeName": node, "containers": [{"name": "kube-apiserver", "image": "kube-apiserver:v1.33.0",
                                                       "command": ["kube-apiserver"]}]}}


def add_running(kube: Any, pod: dict[str, Any]) -> dict[str, Any]:
    """Create a pod and mark it Running (so it can be exec'ed into)."""
    created = kube.create(pod)
    md = created["metadata"]
    return kube.set_status("pods", md["name"], {"phase": "Running", "containerStatuses": [
        {"name": c["name"], "ready": True, "restartCount": 0, "image": c.get("image", ""),
         "state": {"running": {"startedAt": md["creationTimestamp"]}}} for c in pod["spec"]["containers"]]},
        md["namespace"])


def add_etcd_pods(kube: Any, names: Sequence[str], client_urls: Sequence[str], peer_urls: Sequence[str],
                  nodes: Sequence[str] | None = None, **kw: Any) -> list[dict[str, Any]]:
    cluster = ",".join(f"{n}={u}" for n, u in zip(names, peer_urls, strict=True))
    nodes = nodes or names
    return [add_running(kube, etcd_pod(node, n, c, p, cluster=cluster, **kw))
            for node, n, c, p in zip(nodes, names, client_urls, peer_urls, strict=True)]


def exporter_pod(kube: Any, namespace: str, deployment: str = "etcd-backup-exporter") -> dict[str, Any]:
    """A running pod of the installed exporter Deployment (the fake runs no ReplicaSets)."""
    dep = kube.get("deployments", deployment, namespace)
    tmpl = dep["spec"]["template"]
    return add_running(kube, {"apiVersion": "v1", "kind": "Pod",
                              "metadata": {"name": f"{deployment}-7d9f-abcde", "namespace": namespace,
                                           "labels": dict(tmpl["metadata"]["labels"])},
                              "spec": {**tmpl["spec"], "nodeName": "cp0"}})
