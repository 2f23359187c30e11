"""The fake Kubernetes (tests/k8s_fake) against the real `kubernetes` client and the real kubectl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, dynamic, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

try:
    from tests.k8s_fake import FakeKubeServer, KubeletSimulator, LocalExec
except ImportError:  # tests/ itself is on sys.path (pytest rootdir-less import)
    from k8s_fake import FakeKubeServer, KubeletSimulator, LocalExec

KUBECTL = Path(__file__).resolve().parents[1] / ".ci" / "bin" / "kubectl"
needs_kubectl = pytest.mark.skipif(not os.access(KUBECTL, os.X_OK), reason="run .ci/get-kubectl-helm.sh first")
NS = "default"

pytestmark = pytest.mark.timeout(60)


# fixtures kube, kubeconfig, api, kubectl: tests/conftest.py


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


# ------------------------------------------------------------------------------------------------- discovery
def test_server_listens_below_32768_and_serves_discovery(kube: FakeKubeServer) -> None:
    assert kube.host == "127.0.0.1" and 1024 < kube.port < 32768
    assert _get_json(kube.url + "/api")["versions"] == ["v1"]
    assert _get_json(kube.url + "/api/v1")["groupVersion"] == "v1"
    groups = {g["name"]: g for g in _get_json(kube.url + "/apis")["groups"]}
    assert {"batch", "apps", "rbac.authorization.k8s.io", "monitoring.coreos.com"} <= set(groups)
    assert groups["autoscaling"]["preferredVersion"]["version"] == "v2"
    batch = {r["name"] for r in _get_json(kube.url + "/apis/batch/v1")["resources"]}
    assert {"cronjobs", "jobs", "jobs/status"} <= batch
    assert _get_json(kube.url + "/version")["gitVersion"].startswith("v1.")
    nss = _get_json(kube.url + "/api/v1/namespaces")
    assert (nss["kind"], nss["apiVersion"]) == ("NamespaceList", "v1") and int(nss["metadata"]["resourceVersion"])
    assert {"default", "kube-system"} <= {n["metadata"]["name"] for n in nss["items"]}


# ----------------------------------------------------------------------------------------- official client
def _kinds(api: client.ApiClient) -> list[tuple[Any, str, dict[str, Any], dict[str, Any]]]:
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    apps, rbac = client.AppsV1Api(api), client.RbacAuthorizationV1Api(api)
    pod_spec = {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}
    return [
        (core, "config_map", {"data": {"k": "v"}}, {"data": {"k2": "v2"}}),
        (core, "secret", {"stringData": {"password": "s3cret"}}, {"stringData": {"user": "me"}}),
        (core, "persistent_volume_claim", {"spec": {"accessModes": ["ReadWriteOnce"],
                                                    "resources": {"requests": {"storage": "1Gi"}}}},
         {"metadata": {"annotations": {"a": "b"}}}),
        (core, "service_account", {}, {"automountServiceAccountToken": False}),
        (rbac, "role", {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
         {"rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}]}),
        (rbac, "role_binding", {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
                                "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": NS}]},
         {"metadata": {"labels": {"extra": "yes"}}}),
        (batch, "cron_job", {"spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": {
            "spec": pod_spec}}}}}, {"spec": {"suspend": True}}),
        (batch, "job", {"spec": {"backoffLimit": 0, "template": {"spec": pod_spec}}},
         {"metadata": {"annotations": {"x": "y"}}}),
        (core, "pod", {"spec": pod_spec}, {"metadata": {"labels": {"patched": "1"}}}),
        (apps, "deployment", {"spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}}, "template": {
            "metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}},
         {"spec": {"replicas": 3}}),
        (core, "service", {"spec": {"ports": [{"port": 80}], "selector": {"app": "d"}}},
         {"spec": {"ports": [{"port": 8080}]}}),
    ]


def test_client_crud_on_many_kinds(api: client.ApiClient) -> None:
    for obj_api, kind, spec, patch in _kinds(api):
        name = f"crud-{kind.replace('_', '-')}"
        body = {"metadata": {"name": name, "labels": {"suite": "crud", "kind": kind}}, **spec}
        create = getattr(obj_api, f"create_namespaced_{kind}")
        read = getattr(obj_api, f"read_namespaced_{kind}")
        created = create(NS, body)
        md = created.metadata
        assert (md.name, md.namespace) == (name, NS) and md.uid and md.creation_timestamp, kind
        rv1 = int(md.resource_version)
        patched = getattr(obj_api, f"patch_namespaced_{kind}")(name, NS, patch)
        assert int(patched.metadata.resource_version) > rv1, kind
        assert patched.metadata.uid == md.uid
        current = read(name, NS)
        current.metadata.labels["replaced"] = "true"
        replaced = getattr(obj_api, f"replace_namespaced_{kind}")(name, NS, current)
        assert replaced.metadata.labels["replaced"] == "true", kind
        listed = getattr(obj_api, f"list_namespaced_{kind}")(NS, label_selector=f"suite=crud,kind={kind}")
        assert [o.metadata.name for o in listed.items] == [name], kind
        assert int(listed.metadata.resource_version) >= int(replaced.metadata.resource_version)
        getattr(obj_api, f"delete_namespaced_{kind}")(name, NS)
        with pytest.raises(ApiException) as e:
            read(name, NS)
        assert e.value.status == 404, kind
    secret = client.CoreV1Api(api).create_namespaced_secret(NS, {"metadata": {"name": "sd"},
                                                                 "stringData": {"k": "v"}})
    assert secret.data == {"k": "dg=="} and secret.string_data is None  # stringData is folded into data


def test_client_errors_are_status_objects(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("nope", NS)
    assert e.value.status == 404 and json.loads(e.value.body)["reason"] == "NotFound"
    core.create_namespaced_config_map(NS, {"metadata": {"name": "dup"}})
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "dup"}})
    assert e.value.status == 409 and json.loads(e.value.body)["reason"] == "AlreadyExists"
    stale = core.read_namespaced_config_map("dup", NS)
    core.patch_namespaced_config_map("dup", NS, {"data": {"a": "1"}})
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("dup", NS, stale)
    assert e.value.status == 409 and json.loads(e.value.body)["reason"] == "Conflict"
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("no-such-ns", {"metadata": {"name": "x"}})
    assert e.value.status == 404
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "Bad_Name"}})
    assert e.value.status == 422
    with pytest.raises(ApiException) as e:
        client.BatchV1Api(api).create_namespaced_job(NS, {"metadata": {"name": "j"}, "spec": {"template": {
            "spec": {"containers": [{"name": "c", "image": "i"}]}}}})  # restartPolicy Always is invalid
    assert e.value.status == 422


def test_label_and_field_selectors(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    for name, labels in (("sel-a", {"tier": "db", "env": "prod"}), ("sel-b", {"tier": "web", "env": "prod"}),
                         ("sel-c", {"tier": "db"})):
        core.create_namespaced_config_map(NS, {"metadata": {"name": name, "labels": {"sel": "1", **labels}}})

    def names(label_selector: str = "sel=1", field_selector: str | None = None) -> list[str]:
        return [c.metadata.name for c in core.list_namespaced_config_map(
            NS, label_selector=label_selector, field_selector=field_selector).items]

    assert names("sel=1,tier=db") == ["sel-a", "sel-c"]
    assert names("sel=1,tier!=db") == ["sel-b"]
    assert names("sel=1,tier in (web, cache)") == ["sel-b"]
    assert names("sel=1,tier notin (web)") == ["sel-a", "sel-c"]
    assert names("sel=1,env") == ["sel-a", "sel-b"]
    assert names("sel=1,!env") == ["sel-c"]
    assert names(field_selector="metadata.name=sel-b") == ["sel-b"]
    assert names(field_selector="metadata.name!=sel-b") == ["sel-a", "sel-c"]
    page = core.list_namespaced_config_map(NS, label_selector="sel=1", limit=2)
    rest = core.list_namespaced_config_map(NS, label_selector="sel=1", limit=2, _continue=page.metadata._continue)
    assert [c.metadata.name for c in page.items + rest.items] == ["sel-a", "sel-b", "sel-c"]
    all_ns = core.list_config_map_for_all_namespaces(label_selector="sel=1")
    assert len(all_ns.items) == 3


def test_status_subresource_and_server_side_apply(api: client.ApiClient, kube: FakeKubeServer) -> None:
    batch = client.BatchV1Api(api)
    job = {"metadata": {"name": "st"}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "i", "command": ["true"]}]}}}}
    created = batch.create_namespaced_job(NS, job)
    assert created.spec.template.metadata.labels["job-name"] == "st"  # defaulted like the real API
    assert created.spec.backoff_limit == 6
    batch.patch_namespaced_job_status("st", NS, {"status": {"succeeded": 1}})
    batch.patch_namespaced_job("st", NS, {"status": {"succeeded": 5}, "metadata": {"labels": {"l": "v"}}})
    got = batch.read_namespaced_job("st", NS)
    assert got.status.succeeded == 1 and got.metadata.labels["l"] == "v"  # main resource ignores status
    # server-side apply: create, then merge (PATCH application/apply-patch+yaml)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "namespace": NS}, "data": {"a": "1"}}
    core = client.CoreV1Api(api)
    core.patch_namespaced_config_map("ssa", NS, cm, field_manager="test", _content_type="application/apply-patch+yaml")
    cm["data"] = {"b": "2"}
    out = core.patch_namespaced_config_map("ssa", NS, cm, field_manager="test",
                                           _content_type="application/apply-patch+yaml")
    assert out.data == {"a": "1", "b": "2"}
    assert kube.get("configmaps", "ssa")["data"] == {"a": "1", "b": "2"}


def test_watch_delivers_later_changes_and_honours_resource_version(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(NS, {"metadata": {"name": "w-before", "labels": {"w": "1"}}})
    start_rv = core.list_namespaced_config_map(NS, label_selector="w=1").metadata.resource_version
    seen: list[tuple[str, str]] = []

    def later() -> None:
        time.sleep(0.3)
        core.create_namespaced_config_map(NS, {"metadata": {"name": "w-new", "labels": {"w": "1"}}})
        core.patch_namespaced_config_map("w-new", NS, {"data": {"x": "y"}})
        core.delete_namespaced_config_map("w-new", NS)

    t = threading.Thread(target=later)
    t.start()
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, NS, label_selector="w=1", timeout_seconds=5):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED":
            w.stop()
    t.join(5)
    assert seen == [("ADDED", "w-before"), ("ADDED", "w-new"), ("MODIFIED", "w-new"), ("DELETED", "w-new")]
    # from a resourceVersion: only what happened after it, no synthetic ADDED for existing objects
    replay = [(ev["type"], ev["object"].metadata.name) for ev in watch.Watch().stream(
        core.list_namespaced_config_map, NS, label_selector="w=1", resource_version=start_rv, timeout_seconds=1)]
    assert replay == [("ADDED", "w-new"), ("MODIFIED", "w-new"), ("DELETED", "w-new")]


def test_exec_output_stdin_and_exit_code(api: client.ApiClient, kube: FakeKubeServer) -> None:
    core = client.CoreV1Api(api)
    kube.add_pod("etcd-0", labels={"component": "etcd"}, containers=["etcd"])
    calls: list[tuple[str, list[str], bytes | None]] = []

    def handler(ns: str, pod: str, container: str, cmd: list[str], stdin: bytes | None) -> tuple[int, bytes, bytes]:
        calls.append((container, cmd, stdin))
        if cmd[:1] == ["cat"]:
            return 0, stdin or b"", b""
        return (0, b"hello " + " ".join(cmd).encode() + b"\n", b"") if cmd[0] == "echo" else (3, b"", b"boom\n")

    kube.set_exec_handler(handler, pod="etcd-0")
    out = stream(core.connect_get_namespaced_pod_exec, "etcd-0", NS, command=["echo", "a", "b"],
                 stderr=True, stdin=False, stdout=True, tty=False)
    assert out == "hello echo a b\n"
    r = stream(core.connect_get_namespaced_pod_exec, "etcd-0", NS, command=["cat"], stderr=True, stdin=True,
               stdout=True, tty=False, _preload_content=False)
    r.write_stdin(b"snapshot-bytes\x00\xff")
    r.close_channel(0)  # v5: stdin EOF
    r.run_forever(timeout=5)
    assert r.read_stdout() == "snapshot-bytes\x00\ufffd" and r.returncode == 0
    r = stream(core.connect_get_namespaced_pod_exec, "etcd-0", NS, command=["false"], stderr=True, stdin=False,
               stdout=True, tty=False, _preload_content=False)
    r.run_forever(timeout=5)
    assert r.returncode == 3 and r.read_stderr() == "boom\n"
    assert calls[1] == ("etcd", ["cat"], b"snapshot-bytes\x00\xff")
    # the default handler runs the command locally
    kube.add_pod("local-0")
    r = stream(core.connect_get_namespaced_pod_exec, "local-0", NS, stderr=True, stdin=False, stdout=True,
               tty=False, _preload_content=False,
               command=[sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(7)"])
    r.run_forever(timeout=10)
    assert (r.read_stdout(), r.read_stderr(), r.returncode) == ("out\n", "err\n", 7)
    with pytest.raises(ApiException):  # a pod that is not Running cannot be exec'ed into
        kube.add_pod("pending-0", phase="Pending")
        stream(core.connect_get_namespaced_pod_exec, "pending-0", NS, command=["true"], stderr=True, stdin=False,
               stdout=True, tty=False)


def test_default_exec_handler_runs_commands_from_the_test_path(api: client.ApiClient, kube: FakeKubeServer,
                                                                tmp_path: Path) -> None:
    """How `etcdctl endpoint status` in a fake etcd pod reaches a real local etcdctl: LocalExec(path=...)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    etcdctl = bindir / "etcdctl"
    etcdctl.write_text('#!/bin/sh\necho "etcdctl $* ETCDCTL_API=$ETCDCTL_API"\n')
    etcdctl.chmod(0o755)
    kube.add_pod("etcd-local", namespace="kube-system", containers=["etcd"])
    kube.set_exec_handler(LocalExec(path=f"{bindir}:/usr/bin:/bin", env={"ETCDCTL_API": "3"}), pod="etcd-local")
    out = stream(client.CoreV1Api(api).connect_get_namespaced_pod_exec, "etcd-local", "kube-system",
                 command=["etcdctl", "endpoint", "status"], stderr=True, stdin=False, stdout=True, tty=False)
    assert out == "etcdctl endpoint status ETCDCTL_API=3\n"
    assert kube.exec_calls[-1].command == ["etcdctl", "endpoint", "status"]
    assert kube.exec_calls[-1].exit_code == 0


def test_dynamic_client_and_custom_resources(api: client.ApiClient, kube: FakeKubeServer) -> None:
    dyn = dynamic.DynamicClient(api)
    smon = dyn.resources.get(api_version="monitoring.coreos.com/v1", kind="ServiceMonitor")
    smon.create(namespace=NS, body={"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                                    "metadata": {"name": "sm"}, "spec": {"endpoints": [{"port": "metrics"}]}})
    assert smon.get(namespace=NS, name="sm").spec.endpoints[0].port == "metrics"
    # a CRD created through the API becomes a served resource
    client.ApiextensionsV1Api(api).create_custom_resource_definition({
        "metadata": {"name": "widgets.example.com"}, "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": True, "storage": True,
                          "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "example.com", "v1", NS, "widgets", {"apiVersion": "example.com/v1", "kind": "Widget",
                                            "metadata": {"name": "w"}})
    assert kube.get("widgets.example.com", "w")["kind"] == "Widget"


def test_garbage_collection_and_finalizers(api: client.ApiClient, kube: FakeKubeServer) -> None:
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    spec = {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i", "command": ["true"]}]}
    for name in ("gc-bg", "gc-orphan"):
        job = batch.create_namespaced_job(NS, {"metadata": {"name": name}, "spec": {"suspend": True,
                                                                                  "template": {"spec": spec}}})
        core.create_namespaced_pod(NS, {"metadata": {"name": f"{name}-pod", "ownerReferences": [
            {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job.metadata.uid}]}, "spec": spec})
    batch.delete_namespaced_job("gc-bg", NS, propagation_policy="Background")
    batch.delete_namespaced_job("gc-orphan", NS)  # batch/v1 Jobs orphan their pods by default
    assert kube.get("pods", "gc-bg-pod") is None and kube.get("pods", "gc-orphan-pod") is not None
    core.create_namespaced_config_map(NS, {"metadata": {"name": "fin", "finalizers": ["example.com/keep"]}})
    core.delete_namespaced_config_map("fin", NS)
    assert core.read_namespaced_config_map("fin", NS).metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("fin", NS, {"metadata": {"finalizers": None}})
    assert kube.get("configmaps", "fin") is None


def test_pod_logs_read_and_follow(api: client.ApiClient, kube: FakeKubeServer) -> None:
    core = client.CoreV1Api(api)
    kube.add_pod("logger")
    kube.set_pod_log("logger", "line 1\nline 2\n")
    assert core.read_namespaced_pod_log("logger", NS) == "line 1\nline 2\n"
    assert core.read_namespaced_pod_log("logger", NS, tail_lines=1) == "line 2\n"

    def writer() -> None:
        for i in range(3, 6):
            time.sleep(0.1)
            kube.append_pod_log("logger", f"line {i}\n")
        kube.set_status("pods", "logger", {"phase": "Succeeded"})

    t = threading.Thread(target=writer)
    t.start()
    resp = core.read_namespaced_pod_log("logger", NS, follow=True, _preload_content=False)
    body = b"".join(resp.stream(1024))
    t.join(5)
    assert body.decode().splitlines() == [f"line {i}" for i in range(1, 6)]


# ----------------------------------------------------------------------------------------------------- kubectl
@needs_kubectl
def test_kubectl_get_apply_exec_logs_delete(kubectl: Callable[..., subprocess.CompletedProcess[str]],
                                            kube: FakeKubeServer, tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: k-cm, labels: {app: k}}\ndata: {a: '1'}\n---\n"
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: k-cron, labels: {app: k}}\nspec:\n"
        "  schedule: '0 * * * *'\n  jobTemplate:\n    spec:\n      backoffLimit: 0\n      template:\n"
        "        spec:\n          restartPolicy: Never\n          containers:\n"
        "          - {name: agent, image: x, command: [python3, -c, 'print(42)']}\n")
    assert "serverside-applied" in kubectl("apply", "--server-side", "-f", str(manifest)).stdout
    assert kube.get("cronjobs", "k-cron")["spec"]["schedule"] == "0 * * * *"
    manifest.write_text(manifest.read_text().replace("a: '1'", "a: '2'"))
    assert "configmap/k-cm configured" in kubectl("apply", "--validate=false", "-f", str(manifest)).stdout
    assert kube.get("configmaps", "k-cm")["data"] == {"a": "2"}
    assert kubectl("get", "cm", "k-cm", "-o", "jsonpath={.data.a}").stdout == "2"
    assert kubectl("get", "cm,cronjobs", "-l", "app=k", "-o", "name").stdout.split() == [
        "configmap/k-cm", "cronjob.batch/k-cron"]
    assert "k-cm" in kubectl("get", "configmaps").stdout
    # protobuf bodies (typed clients): create job --from, create secret
    assert "job.batch/k-manual created" in kubectl("create", "job", "k-manual", "--from=cronjob/k-cron").stdout
    job = kube.get("jobs", "k-manual")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["python3", "-c", "print(42)"]
    assert job["spec"]["backoffLimit"] == 0
    assert job["metadata"]["ownerReferences"][0]["name"] == "k-cron"
    kubectl("create", "secret", "generic", "k-secret", "--from-literal=key=value")
    assert kube.get("secrets", "k-secret")["data"] == {"key": "dmFsdWU="}
    # exec (websocket v5), with stdin; logs
    kube.add_pod("k-pod", containers=["main"])
    kube.set_exec_handler(lambda ns, pod, c, cmd, stdin: (0, (stdin or b"").upper(), b""), pod="k-pod")
    assert kubectl("exec", "-i", "k-pod", "--", "tr", "a-z", "A-Z", input="hello\n").stdout == "HELLO\n"
    kube.set_exec_handler(lambda ns, pod, c, cmd, stdin: (4, b"", b"bad\n"), pod="k-pod")
    p = kubectl("exec", "k-pod", "--", "false", check=False)
    assert p.returncode == 4 and "bad" in p.stderr
    kube.set_pod_log("k-pod", "hello from the pod\n")
    assert kubectl("logs", "k-pod").stdout == "hello from the pod\n"
    # delete (kubectl waits for the object to disappear via a watch with fieldSelector)
    assert 'configmap "k-cm" deleted' in kubectl("delete", "cm", "k-cm").stdout
    assert kube.get("configmaps", "k-cm") is None
    assert kubectl("get", "cm", "k-cm", check=False).returncode == 1


@needs_kubectl
def test_kubectl_second_context(kubectl: Callable[..., subprocess.CompletedProcess[str]],
                                kube: FakeKubeServer) -> None:
    kubectl("--context", "second", "create", "configmap", "ctx-cm")
    assert kube.get("configmaps", "ctx-cm", "other") is not None
    assert kubectl("config", "current-context").stdout.strip() == "fake"


@needs_kubectl
def test_kubectl_finds_plugins_on_path(tmp_path: Path, kubeconfig: Path) -> None:
    """`kubectl <name> ARGS` runs the first executable `kubectl-<name>` on PATH with ARGS and kubectl's own
    environment (so KUBECONFIG reaches the plugin); dashes in the executable's name become sub-commands
    (kubectl-etcdbackup-x would answer `kubectl etcdbackup x`). `kubectl plugin list` shows what is found."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    plugin = bindir / "kubectl-hello"
    plugin.write_text(f'#!/bin/sh\necho "hello $*"\nexec {KUBECTL} get namespace default -o name\n')
    plugin.chmod(0o755)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig)}
    p = subprocess.run([str(KUBECTL), "hello", "world", "--flag"], capture_output=True, text=True, env=env,
                       timeout=30, check=True)
    assert p.stdout == "hello world --flag\nnamespace/default\n"
    listed = subprocess.run([str(KUBECTL), "plugin", "list"], capture_output=True, text=True, env=env, timeout=30,
                            check=False)
    assert str(plugin) in listed.stdout


# ----------------------------------------------------------------------------------------------------- kubelet
@needs_kubectl
def test_kubelet_runs_jobs_locally(kube: FakeKubeServer, kubectl: Callable[..., subprocess.CompletedProcess[str]],
                                   tmp_path: Path) -> None:
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                 "stringData": {"token": "t0ken", "key": "KEYDATA"}})

    def job(name: str, code: str, **container: Any) -> dict[str, Any]:
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": {
            "backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "volumes": [
                {"name": "key", "secret": {"secretName": "creds", "items": [{"key": "key", "path": "key"}]}}],
                "containers": [{"name": "main", "image": "python", "command": ["python3", "-c", code],
                                **container}]}}}}

    ok_code = ("import os; print('token', os.environ['TOKEN'], os.environ['MODE']); "
               "print('key', open(os.environ['KEY_FILE']).read())")
    with KubeletSimulator(kube, namespace=NS, executables={"python3": sys.executable},
                          env={"PYTHONDONTWRITEBYTECODE": "1"}, workdir=tmp_path / "kubelet") as kubelet:
        kube.create(job("ok", ok_code, volumeMounts=[{"name": "key", "mountPath": "/etc/backup/key"}], env=[
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "MODE", "value": "fast"}, {"name": "KEY_FILE", "value": "/etc/backup/key/key"}]))
        kube.create(job("bad", "import sys; print('about to fail'); sys.exit(3)"))
        done = kubelet.wait_for_job("ok", timeout=15)
        assert done["status"]["succeeded"] == 1 and done["status"]["completionTime"]
        assert {c["type"]: c["status"] for c in done["status"]["conditions"]}["Complete"] == "True"
        pods = kube.list("pods", NS, label_selector="job-name=ok")
        assert len(pods) == 1 and pods[0]["status"]["phase"] == "Succeeded"
        assert pods[0]["metadata"]["ownerReferences"][0]["uid"] == done["metadata"]["uid"]
        assert pods[0]["metadata"]["labels"]["controller-uid"] == done["metadata"]["uid"]
        log = kube.pod_log(pods[0]["metadata"]["name"])
        assert log == b"token t0ken fast\nkey KEYDATA\n"
        failed = kubelet.wait_for_job("bad", timeout=15)
        assert failed["status"]["failed"] == 1 and "succeeded" not in failed["status"]
        assert {c["type"]: c["status"] for c in failed["status"]["conditions"]}["Failed"] == "True"
        bad_pod = kube.list("pods", NS, label_selector="job-name=bad")[0]
        assert bad_pod["status"]["phase"] == "Failed"
        assert bad_pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
        # the same through kubectl: trigger a CronJob by hand, wait for it, read its logs
        kube.apply({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cron"}, "spec": {
            "schedule": "0 * * * *", "jobTemplate": {"spec": job("x", "print('from cron')")["spec"]}}})
        kubectl("create", "job", "cron-manual", "--from=cronjob/cron")
        kubectl("wait", "--for=condition=complete", "job/cron-manual", "--timeout=15s")
        assert kubectl("logs", "job/cron-manual").stdout == "from cron\n"
    mine = sorted((r.job, r.exit_code) for r in kubelet.runs if r.job in ("ok", "bad", "cron-manual"))
    assert mine == [("bad", 3), ("cron-manual", 0), ("ok", 0)]
