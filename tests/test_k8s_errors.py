"""Cluster-side failures give one line on stderr and a non-zero exit: no API server, bad kubeconfig or
context, RBAC 403 (via a reactor on the fake API), the CronJob not installed, no etcd pods, bad usage."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from k8s_fake import FakeKubeServer, KubeContext, write_kubeconfig
from k8s_helpers import add_etcd_pods, needs_kubectl, plugin_env, run_plugin

from kubectl_etcdbackup.k8s.manifests import ManifestOptions, render_manifests

pytestmark = [needs_kubectl, pytest.mark.timeout(120)]


def one_line_error(r: Any, rc: int = 1) -> str:
    assert r.rc == rc, r
    assert r.out == "" and r.err.count("\n") == 1 and r.err.startswith("error: "), r
    return str(r.err.strip())


def forbidden(method: str, path_part: str) -> Any:
    def reactor(m: str, path: str, query: Any, body: bytes) -> tuple[int, dict[str, Any]] | None:
        if m == method and path_part in path:
            return 403, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                         "reason": "Forbidden", "code": 403,
                         "message": f'{path_part} is forbidden: User "dev" cannot do this'}
        return None
    return reactor


@pytest.fixture
def env(kubeconfig: Path, tmp_path: Path) -> dict[str, str]:
    return plugin_env(kubeconfig, tmp_path)


@pytest.fixture
def installed(kube: FakeKubeServer) -> Iterator[str]:
    """Backup objects applied straight into the fake (namespace "rbac"); reactors removed afterwards."""
    for obj in render_manifests(ManifestOptions(namespace="rbac")):
        if kube.get(obj["kind"].lower() + "s", obj["metadata"]["name"], obj["metadata"].get("namespace")) is None:
            kube.apply(obj)
    yield "rbac"
    kube.reactors.clear()


def test_no_cluster_reachable(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = plugin_env(write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}"), tmp_path)
    for args in (["now"], ["status"], ["list"], ["install"], ["restore", "latest", "--plan"]):
        err = one_line_error(run_plugin(env, *args))
        assert err == f"error: cannot reach the Kubernetes API at http://127.0.0.1:{port}: connection refused", args


def test_bad_kubeconfig_and_context(env: dict[str, str], tmp_path: Path, kube: FakeKubeServer) -> None:
    err = one_line_error(run_plugin(env, "status", "--kubeconfig", tmp_path / "missing"))
    assert "kubeconfig" in err and str(tmp_path / "missing") in err
    err = one_line_error(run_plugin(env, "status", "--context", "nope"))
    assert "nope" in err
    # --context picks another cluster entry of the kubeconfig
    kc = write_kubeconfig(tmp_path / "two", "http://127.0.0.1:9", extra_contexts=[KubeContext("real", server=kube.url)])
    assert "no backup CronJob" in one_line_error(run_plugin(env, "now", "--kubeconfig", kc, "--context", "real"))


def test_rbac_denials_name_the_verb_and_resource(env: dict[str, str], kube: FakeKubeServer, installed: str) -> None:
    kube.add_reactor(forbidden("POST", "/jobs"))
    assert one_line_error(run_plugin(env, "now", "-n", installed)) == \
        f"error: no RBAC permission to create jobs in namespace {installed}"
    kube.add_reactor(forbidden("GET", "/cronjobs"))
    assert one_line_error(run_plugin(env, "list", "-n", installed)) == \
        f"error: no RBAC permission to list cronjobs in namespace {installed}"
    kube.add_reactor(forbidden("GET", "/namespaces/kube-system/pods"))
    assert one_line_error(run_plugin(env, "status")) == \
        "error: no RBAC permission to list pods in namespace kube-system"
    kube.reactors.clear()
    add_etcd_pods(kube, ["e0"], ["https://127.0.0.1:1"], ["https://127.0.0.1:2"], nodes=["n0"])
    kube.add_reactor(forbidden("GET", "/pods/etcd-n0/exec"))
    assert one_line_error(run_plugin(env, "status")) == \
        "error: no RBAC permission to create pods/exec in namespace kube-system"
    kube.reactors.clear()
    kube.delete("pods", "etcd-n0", "kube-system")


def test_not_installed_and_no_etcd_pods(env: dict[str, str]) -> None:
    for args in (["now", "-n", "other"], ["list", "-n", "other"], ["snapshot", "get", "latest", "-f", "x", "-n",
                                                                   "other"]):
        assert one_line_error(run_plugin(env, *args)) == \
            "error: no backup CronJob in namespace other: run kubectl etcdbackup install -n other", args
    assert one_line_error(run_plugin(env, "now", "-n", "other", "--cronjob", "mine")) == \
        "error: no backup CronJob mine in namespace other: run kubectl etcdbackup install -n other"
    err = one_line_error(run_plugin(env, "status", "--etcd-namespace", "other"))
    assert err.startswith("error: no etcd pods with label component=etcd in namespace other")
    # restore --plan first tells the distribution: with no etcd pods and no k3s/RKE2 node, that is the question
    err = one_line_error(run_plugin(env, "restore", "latest", "--plan", "--etcd-selector", "app=etcd"), rc=2)
    assert "no etcd pods (see --etcd-namespace/--etcd-selector)" in err and "pass --distribution" in err
    err = one_line_error(run_plugin(env, "restore", "latest", "--plan", "--etcd-selector", "app=etcd",
                                    "--distribution", "kubeadm"))
    assert err.startswith("error: no etcd pods with label app=etcd in namespace kube-system")


def test_usage_errors_exit_2(env: dict[str, str]) -> None:
    err = one_line_error(run_plugin(env, "restore", "latest", "--store", "file:///tmp/x"), rc=2)
    assert "missing option(s) --data-dir, --name, --initial-cluster, --initial-advertise-peer-urls" in err
    assert one_line_error(run_plugin(env, "now", "--timeout", "soon"), rc=2).startswith("error: --timeout:")
    assert "'xml' is not one of 'table', 'json', 'yaml'" in one_line_error(run_plugin(env, "status", "-o", "xml"), rc=2)
