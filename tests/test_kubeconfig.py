"""The plugin resolves kubeconfig files exactly as the real kubectl does: KUBECONFIG with several files (first
file wins per cluster/user/context name, current-context from the first file that sets one), relative paths
against their own file's directory, --kubeconfig meaning that one file, --context overriding."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from infra.certs import TLSCerts
from infra.ports import allocate_port, release_ports
from k8s_fake import FakeKubeServer
from k8s_helpers import KUBECTL, needs_kubectl, plugin_env, run_plugin

from kubectl_etcdbackup.k8s.api import ClusterUnreachable, KubeConfigError, connect

pytestmark = [needs_kubectl, pytest.mark.timeout(120)]


def _config(current: str | None, clusters: dict[str, dict[str, str]], contexts: dict[str, tuple[str, str]],
            token: str) -> dict[str, Any]:
    """A kubeconfig: contexts map name -> (cluster, namespace); one user per file, named "user"."""
    cfg: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in clusters.items()],
        "users": [{"name": "user", "user": {"token": token}}],
        "contexts": [{"name": n, "context": {"cluster": c, "user": "user", "namespace": ns}}
                     for n, (c, ns) in contexts.items()]}
    return cfg | ({"current-context": current} if current else {})


@pytest.fixture
def dead_port() -> Iterator[int]:
    port = allocate_port()
    yield port
    release_ports([port])


@pytest.fixture
def files(tmp_path: Path, kube: FakeKubeServer, tls_certs: TLSCerts, other_tls_certs: TLSCerts,
          dead_port: int, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """a/config (current ctx-a -> the fake API), b/config (current ctx-b -> a dead https server whose CA is the
    relative path certs/ca.crt), c/config (no current-context). a, b and c each define a context "shared".
    The working directory is elsewhere, so a relative path only works if it is resolved against its file."""
    for d in ("a/certs", "b/certs", "c", "work", "home"):
        (tmp_path / d).mkdir(parents=True)
    shutil.copy(tls_certs.ca, tmp_path / "a/certs/ca.crt")
    shutil.copy(other_tls_certs.ca, tmp_path / "b/certs/ca.crt")
    dead = f"https://127.0.0.1:{dead_port}"
    docs = {
        "a": _config("ctx-a", {"cluster-a": {"server": kube.url}, "shared": {"server": kube.url}},
                     {"ctx-a": ("cluster-a", "ns-a"), "shared": ("shared", "shared-a")}, "token-a"),
        "b": _config("ctx-b", {"cluster-b": {"server": dead, "certificate-authority": "certs/ca.crt"},
                               "shared": {"server": dead, "certificate-authority": "certs/ca.crt"}},
                     {"ctx-b": ("cluster-b", "ns-b"), "shared": ("shared", "shared-b")}, "token-b"),
        "c": _config(None, {"cluster-c": {"server": "http://127.0.0.1:1"}},
                     {"ctx-c": ("cluster-c", "ns-c"), "shared": ("cluster-c", "shared-c")}, "token-c"),
    }
    paths = {}
    for name, doc in docs.items():
        paths[name] = tmp_path / name / "config"
        paths[name].write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return paths


def kubectl(kubeconfig_env: str, *args: str) -> str:
    """stdout of the real kubectl with KUBECONFIG=kubeconfig_env."""
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ["HOME"], "KUBECONFIG": kubeconfig_env}
    return subprocess.run([str(KUBECTL), *args], capture_output=True, text=True, env=env, timeout=30,
                          check=True).stdout


def kubectl_view(kubeconfig_env: str, *args: str) -> dict[str, Any]:
    """What the real kubectl resolves (`config view --minify`): context, server, namespace, CA (PEM) or None."""
    view = json.loads(kubectl(kubeconfig_env, "config", "view", "--minify", "--flatten", "-o", "json", *args))
    cluster = view["clusters"][0]["cluster"]
    ca = cluster.get("certificate-authority-data")
    return {"context": view["current-context"], "server": cluster["server"],
            "namespace": view["contexts"][0]["context"].get("namespace"),
            "ca": base64.b64decode(ca).decode() if ca else None}


def plugin_view(kubeconfig: str | None = None, context: str | None = None) -> dict[str, Any]:
    """What the plugin resolves, from the client it builds."""
    kube = connect(kubeconfig, context)
    try:
        ca_file = kube.api.configuration.ssl_ca_cert
        return {"context": kube.context_name, "server": kube.host,
                "namespace": kube.context_namespace, "ca": Path(ca_file).read_text() if ca_file else None}
    finally:
        kube.close()


@pytest.mark.parametrize("order,context,expected", [
    ("a:b", None, "ctx-a"),       # current-context of the first file
    ("b:a", None, "ctx-b"),
    ("c:b", None, "ctx-b"),       # the first file sets none: the next one's
    ("c:b:a", None, "ctx-b"),
    ("a:b", "ctx-b", "ctx-b"),    # --context; its CA is relative to b/, not to the working directory
    ("a:b", "shared", "shared"),  # the same name in both files: a's entry, whole
    ("b:a", "shared", "shared"),  # ... or b's
    ("c:a", "shared", "shared"),  # c's context "shared" names c's cluster
])
def test_kubeconfig_list_resolves_like_kubectl(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, order: str,
                                               context: str | None, expected: str) -> None:
    env = os.pathsep.join(str(files[n]) for n in order.split(":"))
    monkeypatch.setenv("KUBECONFIG", env)
    want = kubectl_view(env, *(["--context", context] if context else []))
    assert want["context"] == expected
    assert plugin_view(context=context) == want
    assert plugin_view()["context"] == kubectl(env, "config", "current-context").strip()


def test_kubeconfig_flag_means_that_file_only(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    env = os.pathsep.join(str(files[n]) for n in ("a", "b"))
    monkeypatch.setenv("KUBECONFIG", env)
    want = kubectl_view(env, "--kubeconfig", str(files["b"]))
    assert want["context"] == "ctx-b" and want["ca"] == (files["b"].parent / "certs/ca.crt").read_text()
    assert plugin_view(str(files["b"])) == want
    with pytest.raises(KubeConfigError, match="no context ctx-a in kubeconfig .*b/config"):
        connect(str(files["b"]), "ctx-a")  # a's contexts are not merged in
    with pytest.raises(KubeConfigError, match="sets no current context: use --context"):
        connect(str(files["c"]))


def test_the_plugin_talks_to_the_cluster_kubectl_talks_to(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                          kube: FakeKubeServer) -> None:
    """KUBECONFIG=a:b: kubectl uses a's current context (the fake API); the plugin used b's (a dead server)."""
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(str(files[n]) for n in ("a", "b")))
    k = connect()
    try:
        assert k.list_pods("default", "app=none") == []
        assert (k.context_name, k.host, k.context_namespace) == ("ctx-a", kube.url, "ns-a")
    finally:
        k.close()
    k = connect(context="ctx-b")
    try:
        with pytest.raises(ClusterUnreachable):
            k.list_pods("default", "app=none")
    finally:
        k.close()


def test_the_plugin_command_uses_the_first_files_context(files: dict[str, Path], tmp_path: Path,
                                                        dead_port: int) -> None:
    """End to end through kubectl's plugin mechanism: `status` reaches the fake API (a's context), where it
    finds no etcd pods; before, it went to b's dead server."""
    env = plugin_env(files["a"], tmp_path / "home") | {"KUBECONFIG": os.pathsep.join(str(files[n]) for n in "ab")}
    r = run_plugin(env, "status")
    assert r.rc == 1 and f":{dead_port}" not in r.err, r.err
    assert r.err.startswith("error: no etcd pods with label component=etcd in namespace kube-system"), r.err


def test_missing_files_in_the_list_are_skipped(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    env = os.pathsep.join([str(tmp_path / "missing"), str(files["b"]), str(files["a"])])
    monkeypatch.setenv("KUBECONFIG", env)
    assert plugin_view() == kubectl_view(env)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(KubeConfigError, match="missing: no such file"):
        connect()
