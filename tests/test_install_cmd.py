"""`kubectl etcdbackup manifests|install|uninstall` end to end: real kubectl (plugin discovery) -> the plugin ->
the real `kubernetes` client -> the fake API server; and the options they build (usecases/install.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from k8s_agent import install, target_line
from k8s_fake import FakeKubeServer
from k8s_helpers import KUBECTL, needs_kubectl, plugin_env, run_plugin

from kubectl_etcdbackup.errors import UsageError
from kubectl_etcdbackup.k8s.manifests import ManifestOptions, render_manifests, to_yaml
from kubectl_etcdbackup.usecases.install import key_secret, manifest_options

pytestmark = [needs_kubectl, pytest.mark.timeout(180)]
KINDS = {"Namespace": "namespaces", "ServiceAccount": "serviceaccounts", "ConfigMap": "configmaps",
         "PersistentVolumeClaim": "persistentvolumeclaims", "CronJob": "cronjobs", "Deployment": "deployments",
         "Service": "services", "Secret": "secrets", "Job": "jobs"}


@pytest.fixture
def env(kubeconfig: Path, tmp_path: Path) -> dict[str, str]:
    return plugin_env(kubeconfig, tmp_path)


def live(kube: FakeKubeServer, kind: str, name: str, ns: str | None) -> dict | None:
    return kube.get(KINDS[kind], name, ns)


def run_with_stdin(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`kubectl etcdbackup ARGS` with stdin a pipe (never a terminal)."""
    return subprocess.run([str(KUBECTL), "etcdbackup", *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=90, check=False)


# ------------------------------------------------------------------------------------------------ options
def test_manifest_options_from_file_and_flags(tmp_path: Path) -> None:
    f = tmp_path / "values.yaml"
    f.write_text(yaml.safe_dump({"schedule": "0 * * * *", "keep_last": 5, "namespace": "ops"}))
    opts = manifest_options(str(f), {"schedule": "*/5 * * * *", "etcd_endpoints": "https://a:2379, https://b:2379",
                                     "store": None})
    assert (opts.schedule, opts.keep_last, opts.namespace) == ("*/5 * * * *", 5, "ops")
    assert opts.etcd_endpoints == ["https://a:2379", "https://b:2379"] and opts.store == "file:///backups"
    assert manifest_options(None, {}).namespace == "etcd-backup"
    f.write_text("bogus_option: 1\n")
    with pytest.raises(UsageError, match="unknown option"):
        manifest_options(str(f), {})
    f.write_text("- a list\n")
    with pytest.raises(UsageError, match="must be a mapping"):
        manifest_options(str(f), {})


def test_generated_key_secret() -> None:
    secret = key_secret(ManifestOptions(namespace="ops", key_secret="k", key_secret_key="key.b64"), "c2VjcmV0")
    assert secret["stringData"] == {"key.b64": "c2VjcmV0"} and secret["metadata"]["namespace"] == "ops"
    assert secret["metadata"]["labels"] == {"app.kubernetes.io/part-of": "kubectl-etcdbackup"}


# ------------------------------------------------------------------------------------------------ manifests
def test_manifests_prints_render_manifests_as_yaml(env: dict[str, str]) -> None:
    r = run_plugin(env, "manifests", "--store", "s3://bkt/etcd", "--schedule", "*/5 * * * *", "--image",
                   "example.com/agent:1.2.3", "-n", "ops", "--s3-secret", "creds", "--no-exporter")
    assert r.rc == 0, r
    want = render_manifests(ManifestOptions(store="s3://bkt/etcd", schedule="*/5 * * * *", namespace="ops",
                                            image="example.com/agent:1.2.3", s3_existing_secret="creds",
                                            exporter_enabled=False))
    assert r.out == to_yaml(want)
    assert [d["kind"] for d in yaml.safe_load_all(r.out)] == [o["kind"] for o in want]
    bad = run_plugin(env, "manifests", "--schedule", "every minute")
    assert bad.rc == 2 and bad.err.count("\n") == 1 and "schedule" in bad.err


# ------------------------------------------------------------------------------------------------ install
def test_install_is_idempotent(env: dict[str, str], kube: FakeKubeServer) -> None:
    r = run_plugin(env, "install", "-n", "idem", "--generate-key")
    assert r.rc == 0, r
    first = r.out
    assert "namespace/idem created" in first and "cronjob/etcd-backup created" in first
    assert r.err.splitlines()[0] == target_line(kube)  # which cluster, before anything changes
    objs = render_manifests(ManifestOptions(namespace="idem"))

    def versions() -> dict[str, str]:
        out = {}
        for o in objs:
            obj = live(kube, o["kind"], o["metadata"]["name"], o["metadata"].get("namespace"))
            assert obj is not None, o["kind"]
            out[o["kind"]] = obj["metadata"]["resourceVersion"]
        return out

    before = versions()
    key = kube.get("secrets", "etcd-backup-key", "idem")["data"]["key"]
    second = run_plugin(env, "install", "-n", "idem", "--generate-key")
    assert second.rc == 0, second
    assert second.out.splitlines() == [f"{o['kind'].lower()}/{o['metadata']['name']} unchanged" for o in objs]
    assert versions() == before
    assert kube.get("secrets", "etcd-backup-key", "idem")["data"]["key"] == key  # never replaced
    assert any("fieldManager=kubectl-etcdbackup" in r and "force=true" in r for r in kube.requests)
    changed = run_plugin(env, "install", "-n", "idem", "--schedule", "0 * * * *")
    assert changed.rc == 0 and "cronjob/etcd-backup configured" in changed.out, changed
    assert kube.get("cronjobs", "etcd-backup", "idem")["spec"]["schedule"] == "0 * * * *"


def test_install_without_a_key_says_how_to_make_one(env: dict[str, str], kube: FakeKubeServer) -> None:
    r = run_plugin(env, "install", "-n", "nokey", "--context", "second")
    assert r.rc == 0, r
    assert r.err.splitlines()[0] == target_line(kube, "second")
    assert "warning: Secret etcd-backup-key (the encryption key) does not exist yet" in r.err
    assert kube.get("secrets", "etcd-backup-key", "nokey") is None


# ------------------------------------------------------------------------------------------------ uninstall
def test_uninstall_keeps_the_store_and_the_key_unless_asked(env: dict[str, str], kube: FakeKubeServer) -> None:
    ns = "gone"
    install(env, ns, "--generate-key")
    job = run_plugin(env, "now", "-n", ns, "--no-wait")  # a Job of the CronJob's (no kubelet: it never runs)
    assert job.rc == 0, job
    objs = render_manifests(ManifestOptions(namespace=ns))

    r = run_with_stdin(env, "uninstall", "-n", ns, "--yes")
    assert r.returncode == 0, r
    assert r.stderr.splitlines()[0] == target_line(kube)
    deleted = [ln.split()[0] for ln in r.stdout.splitlines() if ln.endswith(" deleted")]
    assert deleted == ["service/etcd-backup-exporter", "deployment/etcd-backup-exporter", "cronjob/etcd-backup-drill",
                       "cronjob/etcd-backup", "configmap/etcd-backup-monitor", "serviceaccount/etcd-backup"]
    assert "persistentvolumeclaim/etcd-backup-data kept: the store of the snapshots (--delete-store deletes it)" \
        in r.stdout
    assert "secret/etcd-backup-key kept: the encryption key" in r.stdout
    assert f"namespace/{ns} kept: it holds what is kept" in r.stdout
    for o in objs:
        kept = o["kind"] in ("Namespace", "PersistentVolumeClaim")
        assert (live(kube, o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) is not None) == kept, o
    assert kube.get("secrets", "etcd-backup-key", ns) is not None
    assert kube.get("jobs", job.out.strip(), ns) is None  # owned by the CronJob: deleted with it

    r = run_with_stdin(env, "uninstall", "-n", ns, "--yes", "--delete-store", "--delete-key")
    assert r.returncode == 0, r
    assert r.stdout.splitlines() == ["persistentvolumeclaim/etcd-backup-data deleted",
                                     "secret/etcd-backup-key deleted", f"namespace/{ns} deleted"]
    assert kube.get("namespaces", ns, None) is None and kube.get("secrets", "etcd-backup-key", ns) is None

    r = run_with_stdin(env, "uninstall", "-n", ns, "--yes")  # again: nothing left, nothing to do
    assert r.returncode == 0 and r.stdout == "" and "nothing of kubectl-etcdbackup found" in r.stderr, r


def test_uninstall_asks_first_and_refuses_without_a_terminal(env: dict[str, str], kube: FakeKubeServer) -> None:
    ns = "ask"
    install(env, ns)
    r = run_with_stdin(env, "uninstall", "-n", ns, stdin="y\n")
    assert r.returncode == 2, r
    err = r.stderr.splitlines()
    assert err[0] == target_line(kube)
    assert "  delete cronjob/etcd-backup" in err and any(ln.startswith("  keep   persistentvolumeclaim/") for ln in err)
    assert err[-1] == "error: not asking on a non-interactive input: pass --yes to uninstall"
    assert r.stdout == "" and kube.get("cronjobs", "etcd-backup", ns) is not None  # nothing deleted


def test_uninstall_keeps_what_is_not_its_own(env: dict[str, str], kube: FakeKubeServer) -> None:
    ns = "s3only"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": ns},
                 "stringData": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}})
    args = ["--store", "s3://bkt/etcd", "--s3-secret", "s3-creds", "--no-exporter"]
    install(env, ns, "--generate-key", *args)
    kube.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "etcd-backup-exporter",
                                                                     "namespace": ns},
                 "spec": {"ports": [{"port": 80}]}})  # same name, someone else's
    r = run_with_stdin(env, "uninstall", "-n", ns, *args, "--yes", "--delete-store", "--delete-key")
    assert r.returncode == 0, r
    assert "note: the store s3://bkt/etcd is not in the cluster" in r.stderr
    assert r.stdout.splitlines() == [
        "cronjob/etcd-backup-drill deleted", "cronjob/etcd-backup deleted", "configmap/etcd-backup-monitor deleted",
        "serviceaccount/etcd-backup deleted",
        "secret/etcd-backup-key deleted",
        "service/etcd-backup-exporter kept: not made by kubectl-etcdbackup (its labels say otherwise)",
        f"namespace/{ns} kept: it holds what is kept"]
    assert kube.get("secrets", "s3-creds", ns) is not None and kube.get("services", "etcd-backup-exporter", ns)
    kube.delete("services", "etcd-backup-exporter", ns)
    install(env, ns, *args)
    r = run_with_stdin(env, "uninstall", "-n", ns, *args, "--yes", "--delete-store", "--delete-key")
    assert r.returncode == 0, r
    assert f"namespace/{ns} kept: it holds Secret s3-creds, which install did not make" in r.stdout
    assert kube.get("secrets", "s3-creds", ns) is not None
