"""Pure parts of the plugin's Kubernetes side: etcd pod specs, etcdctl output, the CronJob's store settings,
the Jobs the plugin creates (valid for Kubernetes 1.29 and 1.33, strict), and the restore runbook."""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate.utils as kv_utils
import pytest
from infra.k8s_schema import k8s_validate_all_versions
from k8s_helpers import etcd_pod

from kubectl_etcdbackup.errors import UsageError
from kubectl_etcdbackup.k8s.etcd_pods import DEFAULT_QUOTA_BYTES, member_from_pod, members_from_pods, parse_flags
from kubectl_etcdbackup.k8s.etcd_status import member_status, warnings_for
from kubectl_etcdbackup.k8s.jobs import (
    INSTANTIATE_ANNOTATION,
    backup_result,
    create_unique,
    job_outcome,
    manual_job,
    reader_job,
)
from kubectl_etcdbackup.k8s.manifests import ManifestOptions, cron_job
from kubectl_etcdbackup.k8s.runbook import NODE_PHASES, RunbookOptions, build_runbook
from kubectl_etcdbackup.k8s.store_config import SecretRef, store_from_cronjob
from kubectl_etcdbackup.manifest import SnapshotManifest
from kubectl_etcdbackup.textutil import extract_json
from kubectl_etcdbackup.usecases.install import key_secret

if not hasattr(kv_utils.schema_contents, "cache_info"):  # the schemas are big: read each once
    kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)

NOW = datetime(2026, 11, 27, 7, 17, 52, tzinfo=UTC)
IPS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def installed_cronjob(**opts: Any) -> dict[str, Any]:
    """The CronJob render_manifests makes, as the API returns it (with a uid)."""
    cj = cron_job(ManifestOptions(**opts))
    cj["metadata"]["uid"] = "0b6f5c9e-1111-2222-3333-444455556666"
    return cj


def kubeadm_members() -> list[Any]:
    pods = [etcd_pod(f"cp{i}", f"cp{i}", f"https://{ip}:2379", f"https://{ip}:2380") for i, ip in enumerate(IPS)]
    for p, ip in zip(pods, IPS, strict=True):  # kubeadm also listens on loopback
        cmd = p["spec"]["containers"][0]["command"]
        i = next(i for i, a in enumerate(cmd) if a.startswith("--listen-client-urls="))
        cmd[i] = f"--listen-client-urls=https://127.0.0.1:2379,https://{ip}:2379"
    return members_from_pods(list(reversed(pods)))


def snapshot(**kw: Any) -> SnapshotManifest:
    base = dict(id="etcd-20261127T071752123Z-3f9a", created_at="2026-11-27T07:17:52.123Z", etcd_revision=4242,
                key_count=1000, etcd_version="3.5.21", cluster_id="c1", member_id="m1",
                member_endpoint="https://10.0.0.1:2379", raw_size=1 << 20, stored_size=1 << 19, raw_sha256="a" * 64,
                stored_sha256="b" * 64, codec="zstd", cipher="aes-256-gcm", key_id="k", duration_seconds=1.0,
                verified=True)
    return SnapshotManifest(**(base | kw))


def validate(obj: dict[str, Any]) -> None:
    k8s_validate_all_versions(obj)


# ----------------------------------------------------------------------------------------------- etcd pods
def test_flags_in_every_form() -> None:
    assert parse_flags(["etcd", "--name=a", "--data-dir", "/d", "--client-cert-auth", "--x=1=2", "stray"]) == {
        "name": "a", "data-dir": "/d", "client-cert-auth": "true", "x": "1=2"}


def test_kubeadm_pod_spec_gives_member_paths_urls_and_etcdctl_argv() -> None:
    members = kubeadm_members()
    assert [m.name for m in members] == ["cp0", "cp1", "cp2"]  # sorted, whatever the pod order
    m = members[1]
    assert (m.pod, m.namespace, m.node, m.container) == ("etcd-cp1", "kube-system", "cp1", "etcd")
    assert m.data_dir == "/var/lib/etcd" and m.on_host(m.data_dir) == "/var/lib/etcd"
    assert m.peer_urls == ("https://10.0.0.2:2380",) and m.static_pod
    assert m.client_url == "https://127.0.0.1:2379"  # loopback listener preferred (kubeadm's cert covers it)
    assert m.quota_backend_bytes == DEFAULT_QUOTA_BYTES
    assert m.etcdctl_argv("endpoint", "status") == [
        "etcdctl", "--endpoints=https://127.0.0.1:2379", "--cacert=/etc/kubernetes/pki/etcd/ca.crt",
        "--cert=/etc/kubernetes/pki/etcd/server.crt", "--key=/etc/kubernetes/pki/etcd/server.key",
        "--dial-timeout=2s", "--command-timeout=4s", "endpoint", "status", "-w", "json"]


def test_host_paths_env_flags_and_defaults() -> None:
    pod = etcd_pod("n1", "a", "https://10.0.0.9:2379", "https://10.0.0.9:2380", quota=8 << 30, data_dir="/data/etcd")
    c = pod["spec"]["containers"][0]
    c["volumeMounts"][0]["mountPath"] = "/data"  # the container sees the hostPath /data/etcd at /data
    c["command"] = [a.replace("--data-dir=/data/etcd", "--data-dir=/data/member-dir") for a in c["command"]]
    c["env"] = [{"name": "ETCD_WAL_DIR", "value": "/data/wal"}]
    m = member_from_pod(pod)
    assert m.on_host("/data/member-dir") == "/data/etcd/member-dir" and m.wal_dir == "/data/wal"
    assert m.on_host("/elsewhere") is None and m.quota_backend_bytes == 8 << 30
    bare = member_from_pod({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "etcd", "command": ["etcd"]}]}})
    assert (bare.name, bare.data_dir, bare.client_url, bare.static_pod) == (
        "default", "default.etcd", "http://localhost:2379", False)


# ----------------------------------------------------------------------------------------------- etcdctl output
STATUS_OK = json.dumps([{"Endpoint": "https://127.0.0.1:2379", "Status": {
    "header": {"cluster_id": 14841639068965178418, "member_id": 10276657743932975437, "revision": 4242,
               "raft_term": 3}, "version": "3.5.21", "dbSize": 1800 << 20, "leader": 10276657743932975437,
    "raftIndex": 9001, "raftTerm": 3, "raftAppliedIndex": 9001, "dbSizeInUse": 900 << 20}}])
HEALTH_OK = '[{"endpoint":"https://127.0.0.1:2379","health":true,"took":"8ms"}]'
HEALTH_BAD = '[{"endpoint":"https://127.0.0.1:2379","health":false,"took":"5s","error":"context deadline exceeded"}]'


def test_status_rows_leader_health_and_quota_warning() -> None:
    members = kubeadm_members()
    leader = member_status(members[0], (0, STATUS_OK, ""), (0, HEALTH_OK, ""))
    assert (leader.member_id, leader.leader, leader.healthy, leader.version) == ("8e9e05c52164694d", True, True,
                                                                                 "3.5.21")
    assert (leader.db_size, leader.db_size_in_use, leader.raft_index, leader.revision) == (
        1800 << 20, 900 << 20, 9001, 4242)
    follower_out = STATUS_OK.replace('"leader": 10276657743932975437', '"leader": 1')
    follower = member_status(members[1], (0, follower_out, ""), (0, HEALTH_OK, ""))
    down = member_status(members[2], (1, "[]", '{"level":"warn"}\nFailed to get the status of endpoint '
                                      "https://127.0.0.1:2379 (context deadline exceeded)\n"),
                         (1, HEALTH_BAD, "Error: unhealthy cluster\n"))
    assert follower.leader is False and down.leader is None and not down.healthy
    assert "context deadline exceeded" in down.error
    warnings = warnings_for([leader, follower, down])
    assert any("member cp0: db size" in w and "88% of its quota" in w for w in warnings)  # 1800 MiB of 2 GiB
    assert any(w.startswith("member cp2 on cp2 is unhealthy") for w in warnings)
    assert not any("leader" in w for w in warnings)  # exactly one leader among those that answered
    two = warnings_for([leader, member_status(members[1], (0, STATUS_OK, ""), (0, HEALTH_OK, ""))])
    assert any(w.startswith("2 members say they are the leader") for w in two)


# ----------------------------------------------------------------------------------------------- CronJob store
def test_store_settings_from_the_installed_cronjob() -> None:
    f = store_from_cronjob(installed_cronjob())
    assert (f.url, f.claim, f.mount_path, f.is_s3) == ("file:///backups", "etcd-backup-data", "/backups", False)
    assert f.key_secret == SecretRef("etcd-backup-key", "key") and f.aws_secret_env == {}
    old = installed_cronjob()  # installed by a release whose agent flag was --key-file
    args = old["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    args[args.index("--encryption-key-file")] = "--key-file"
    assert store_from_cronjob(old).key_secret == SecretRef("etcd-backup-key", "key")
    s3 = store_from_cronjob(installed_cronjob(store="s3://bkt/etcd", s3_endpoint_url="http://minio:9000",
                                              s3_region="eu-west-1", s3_existing_secret="s3-creds"))
    assert (s3.url, s3.s3_endpoint_url, s3.s3_region, s3.claim) == ("s3://bkt/etcd", "http://minio:9000",
                                                                    "eu-west-1", None)
    assert s3.aws_secret_env["AWS_ACCESS_KEY_ID"] == SecretRef("s3-creds", "AWS_ACCESS_KEY_ID")
    assert s3.store_args() == ["--store", "s3://bkt/etcd", "--s3-endpoint-url", "http://minio:9000",
                               "--s3-region", "eu-west-1"]
    env_only = installed_cronjob()
    c = env_only["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    i = c["args"].index("--store")
    del c["args"][i:i + 2]
    c["env"] = [{"name": "ETCDBACKUP_STORE", "value": "s3://other/p"}]
    assert store_from_cronjob(env_only).url == "s3://other/p"
    c["env"] = []
    with pytest.raises(UsageError, match="cannot find the store"):
        store_from_cronjob(env_only)


# ----------------------------------------------------------------------------------------------- Jobs
def test_manual_job_is_what_kubectl_create_job_from_makes_and_valid() -> None:
    cj = installed_cronjob(name="a" * 52)
    job = manual_job(cj, NOW)
    md = job["metadata"]
    assert md["name"].endswith("-manual-20261127071752") and len(md["name"]) <= 63
    assert md["annotations"][INSTANTIATE_ANNOTATION] == "manual"
    assert md["labels"] == cj["spec"]["jobTemplate"]["metadata"]["labels"]
    assert md["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "a" * 52,
                                      "uid": cj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
    assert job["spec"] == cj["spec"]["jobTemplate"]["spec"]
    validate(job)


def test_a_taken_job_name_gets_a_random_suffix() -> None:
    cj = installed_cronjob()
    taken = {manual_job(cj, NOW)["metadata"]["name"]}
    created: list[dict[str, Any]] = []

    def create(job: dict[str, Any]) -> None:
        if job["metadata"]["name"] in taken:
            raise KeyError(job["metadata"]["name"])
        created.append(job)

    job = create_unique(create, lambda u: manual_job(cj, NOW, u), KeyError)
    assert created == [job] and re.fullmatch(r"etcd-backup-manual-20261127071752-[0-9a-f]{4}", job["metadata"]["name"])


def test_reader_job_mounts_the_pvc_read_only_unprivileged_and_valid() -> None:
    cj = installed_cronjob()
    job = reader_job(cj, store_from_cronjob(cj), ["list", "--store", "file:///backups", "-o", "json"], NOW)
    spec = job["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["command"] == ["kubectl-etcdbackup", "list", "--store", "file:///backups", "-o", "json"]
    assert {"name": "backups", "mountPath": "/backups", "readOnly": True} in c["volumeMounts"]
    assert spec["volumes"][0]["persistentVolumeClaim"] == {"claimName": "etcd-backup-data", "readOnly": True}
    assert spec["securityContext"]["runAsNonRoot"] and "hostNetwork" not in spec
    assert spec["nodeSelector"] == cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["nodeSelector"]
    assert job["spec"]["ttlSecondsAfterFinished"] > 0 and job["spec"]["backoffLimit"] == 0
    validate(job)


def test_generated_key_secret_is_valid() -> None:
    secret = key_secret(ManifestOptions(namespace="ops", key_secret="k", key_secret_key="key.b64"), "c2VjcmV0")
    assert secret["stringData"] == {"key.b64": "c2VjcmV0"} and secret["metadata"]["namespace"] == "ops"
    validate(secret)


def test_job_outcome_and_output_parsing() -> None:
    assert job_outcome({"status": {"active": 1}}) == (None, "")
    failed = {"status": {"conditions": [{"type": "FailureTarget", "status": "True"}, {
        "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "limit reached"}]}}
    assert job_outcome(failed) == ("Failed", "BackoffLimitExceeded: limit reached")
    log = 'progress 10%\n{"id": "etcd-1", "revision": 5}\nwarning: pruned\n'
    assert backup_result(log) == {"id": "etcd-1", "revision": 5} and backup_result("error: x\n") is None
    mixed = 'warning: a\n[\n  {"id": "x"}\n]\nnote: 1 object(s) without a manifest\n'
    assert extract_json(mixed, "[") == [{"id": "x"}] and extract_json("nothing", "{") is None


# ----------------------------------------------------------------------------------------------- runbook
def test_runbook_order_flags_token_and_scripts() -> None:
    """--node-python: the nodes run kubectl-etcdbackup restore (the default path: tests/test_runbook.py)."""
    members = kubeadm_members()
    snap = snapshot()
    book = build_runbook(members, snap, ["cp0", "cp1", "cp2"], RunbookOptions(
        store_url="s3://bkt/etcd", s3_endpoint_url="http://minio:9000", key_secret=SecretRef("k", "key"),
        node_python=True))
    assert [s.phase for s in book.steps] == ["prepare", *NODE_PHASES, "verify"]
    cluster = "cp0=https://10.0.0.1:2380,cp1=https://10.0.0.2:2380,cp2=https://10.0.0.3:2380"
    restore = next(s for s in book.steps if s.phase == "restore").commands
    assert sorted(restore) == ["cp0", "cp1", "cp2"]
    for i, node in enumerate(["cp0", "cp1", "cp2"]):
        (cmd,) = restore[node]
        assert cmd == (f"kubectl-etcdbackup restore {snap.id} --store s3://bkt/etcd --s3-endpoint-url "
                       f"http://minio:9000 --encryption-key-file /etc/kubernetes/etcdbackup.key --name {node} "
                       f"--data-dir /var/lib/etcd --initial-cluster {cluster} --initial-advertise-peer-urls "
                       f"https://{IPS[i]}:2380 --initial-cluster-token restore-{snap.id} --move-aside")
    text = book.text()
    assert text.count(f"--initial-cluster-token restore-{snap.id}") == 3 and "latest" not in text
    # stop apiservers before etcd, start etcd before waiting, apiservers last
    order = [text.index(s) for s in ("mv /etc/kubernetes/manifests/kube-apiserver.yaml",
                                     "mv /etc/kubernetes/manifests/etcd.yaml", "kubectl-etcdbackup restore",
                                     "mv /etc/kubernetes/etcdbackup-stopped/etcd.yaml", "endpoint health",
                                     "mv /etc/kubernetes/etcdbackup-stopped/kube-apiserver.yaml")]
    assert order == sorted(order)
    assert "get secret k -o jsonpath='{.data.key}'" in text
    health = next(s for s in book.steps if s.phase == "wait-etcd").commands["cp0"][0]
    assert "--endpoints=https://10.0.0.1:2379,https://10.0.0.2:2379,https://10.0.0.3:2379" in health
    default = build_runbook(members, snap, ["cp0", "cp1", "cp2"], RunbookOptions(store_url="s3://bkt/etcd"))
    assert [s.phase for s in default.steps] == ["prepare", *NODE_PHASES, "verify"]
    dtext = default.text()
    order = [dtext.index(s) for s in ("kubectl etcdbackup snapshot download", "ssh cp2 ",
                                      "mv /etc/kubernetes/manifests/kube-apiserver.yaml",
                                      "mv /etc/kubernetes/manifests/etcd.yaml", "etcdutl snapshot restore",
                                      "mv /etc/kubernetes/etcdbackup-stopped/etcd.yaml", "endpoint health",
                                      "mv /etc/kubernetes/etcdbackup-stopped/kube-apiserver.yaml")]
    assert order == sorted(order) and dtext.count(f"--initial-cluster-token restore-{snap.id}") == 3
    scripts = book.node_scripts()
    assert sorted(scripts) == ["cp0", "cp1", "cp2"]
    assert "  restore)\n    kubectl-etcdbackup restore" in scripts["cp1"]
    assert "nothing to do on cp1 in phase wait-etcd" in scripts["cp1"]
    assert json.loads(json.dumps(book.as_dict()))["token"] == f"restore-{snap.id}"


def test_runbook_file_store_external_apiservers_and_warnings() -> None:
    members = kubeadm_members()
    book = build_runbook(members, snapshot(cipher="none", verified=False), [],
                         RunbookOptions(store_url="file:///backups", token="tok", node_python=True))
    restore = next(s for s in book.steps if s.phase == "restore").commands["cp0"][0]
    assert "--store file:///var/lib/etcdbackup-restore" in restore and "--key-file" not in restore
    assert "--initial-cluster-token tok" in restore
    assert any("never verified" in w for w in book.warnings)
    assert any("no kube-apiserver pods" in w for w in book.warnings)
    assert "copy etcd-20261127T071752123Z-3f9a.etcdbak" in book.steps[0].note
    local = build_runbook(members, snapshot(cipher="none"), [], RunbookOptions(store_url="file:///backups",
                                                                               store_in_cluster=True))
    download = local.steps[0].commands[""][0]  # a PVC store: copied out first, then downloaded from the copy
    assert download.endswith('--store "file://$PWD/etcd-backup-store" -f etcd-20261127T071752123Z-3f9a.db')
    assert "--encryption-key-file" not in download and "copy etcd-20261127T071752123Z-3f9a.etcdbak" in \
        local.steps[0].note
    with pytest.raises(UsageError, match="not unique"):
        build_runbook(members + members[:1], snapshot(), [], RunbookOptions(store_url="file:///b"))

