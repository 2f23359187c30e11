"""kubectl_etcdbackup.k8s.manifests: the in-cluster objects, their safety properties, schema validity for
Kubernetes 1.29 and 1.33 (kubernetes-validate --strict, offline), the agent CLI contract, manifests/ freshness."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from infra.k8s_schema import K8S_VERSIONS, k8s_validate

from kubectl_etcdbackup import __version__
from kubectl_etcdbackup.k8s import manifests as m
from kubectl_etcdbackup.k8s.manifests import ManifestError, ManifestOptions, render_manifests, to_yaml

ROOT = Path(__file__).resolve().parents[1]



S3_OPTS = dict(store="s3://etcd-backups/cluster-1/", s3_region="eu-west-1", s3_existing_secret="etcd-backup-s3",
               s3_endpoint_url="https://minio.example:9000", s3_sse="aws:kms", s3_sse_kms_key_id="alias/etcd")
VARIANTS: dict[str, ManifestOptions] = {
    "pvc": ManifestOptions(),
    "s3": ManifestOptions(**S3_OPTS),
    "everything": ManifestOptions(
        name="prod-etcd", namespace="ops", store="file:///var/backups/etcd", pvc_storage_class="local-path",
        pvc_size="50Gi", time_zone="Etc/UTC", image_pull_secrets=["regcred"], priority_class_name="high",
        run_as_non_root=True, run_as_user=1000, run_as_group=1000, work_dir_size_limit="16Gi",
        pushgateway_url="http://pushgateway.monitoring:9091", operator_role=True,
        operator_subjects=[{"kind": "Group", "name": "sre", "apiGroup": "rbac.authorization.k8s.io"}],
        service_account_annotations={"example.com/owner": "sre"},
        etcd_endpoints=["https://10.0.0.1:2379", "https://10.0.0.2:2379"], verify="restore", keep_last=10,
        keep_within=None, keep_hourly=24, keep_daily=None, keep_weekly=4, keep_monthly=12, command_timeout="20m",
        idle_timeout="1m", active_deadline_seconds=1800),
    "s3-irsa-no-exporter": ManifestOptions(store="s3://etcd-backups", exporter_enabled=False, create_namespace=False,
                                           service_account_annotations={
                                               "eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/etcd"}),
    "k3s-continuous": ManifestOptions(distribution="k3s", continuous=True),
    "rke2-client-cert-secret-s3": ManifestOptions(
        distribution="rke2", etcd_client_cert_secret="etcd-client", run_as_non_root=True, run_as_user=65532,
        run_as_group=65532, continuous=True, exporter_s3_existing_secret="etcd-backup-s3-ro", exporter_node_selector={},
        exporter_tolerations=[], **S3_OPTS),
}


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Objects of a kind; "CronJob" is the backup's (the drill's is "drill")."""
    if kind == "drill":
        return [o for o in objs if o["kind"] == "CronJob" and o["metadata"]["name"].endswith("-drill")]
    return [o for o in objs if o["kind"] == kind and not (kind == "CronJob" and o in by_kind(objs, "drill"))]


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def backup_pod(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def pod_specs(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """kind -> pod spec of every object that runs pods."""
    out = {"CronJob": backup_pod(objs)}
    for cj in by_kind(objs, "drill"):
        out["drill"] = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    for dep in by_kind(objs, "Deployment"):
        kind = "stream" if dep["metadata"]["name"].endswith("-stream") else "Deployment"
        out[kind] = dep["spec"]["template"]["spec"]
    return out


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_objects_pass_strict_kubernetes_schema(variant: str, version: str) -> None:
    for obj in render_manifests(VARIANTS[variant]):
        k8s_validate(obj, version)


def test_validator_rejects_what_it_should() -> None:
    cj = copy.deepcopy(one(render_manifests(), "CronJob"))
    cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnly"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cj, "1.29.0", strict=True)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(cj | {"apiVersion": "batch/v1beta1"}, "1.29.0", strict=True)


def test_default_objects_and_names() -> None:
    objs = render_manifests()
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("Namespace", "etcd-backup"), ("ServiceAccount", "etcd-backup"), ("ConfigMap", "etcd-backup-monitor"),
        ("PersistentVolumeClaim", "etcd-backup-data"), ("CronJob", "etcd-backup"), ("CronJob", "etcd-backup-drill"),
        ("Deployment", "etcd-backup-exporter"), ("Service", "etcd-backup-exporter")]
    for o in objs[1:]:
        assert o["metadata"]["namespace"] == "etcd-backup"
        assert o["metadata"]["labels"]["app.kubernetes.io/version"] == __version__
        assert o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubectl-etcdbackup"
    ns = objs[0]["metadata"]["labels"]
    assert ns["pod-security.kubernetes.io/enforce"] == "privileged"  # hostPath + hostNetwork + uid 0


def test_cronjob_schedule_and_job_policy() -> None:
    spec = one(render_manifests(), "CronJob")["spec"]
    assert spec["schedule"] == "*/15 * * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert "timeZone" not in spec
    for k in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        assert isinstance(spec[k], int)
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 1 and job["activeDeadlineSeconds"] == 900
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_backup_pod_runs_on_control_plane_next_to_etcd() -> None:
    pod = backup_pod(render_manifests())
    assert pod["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    assert {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
            "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_backup_container_is_locked_down(variant: str) -> None:
    opts = VARIANTS[variant]
    pod = backup_pod(render_manifests(opts))
    (c,) = pod["containers"]
    assert c["command"] == ["kubectl-etcdbackup", "agent", "backup"]
    assert c["image"] == opts.image and "etcd:" not in c["image"]
    assert not any(a in ("sh", "/bin/sh", "bash", "-c") for a in c["command"] + c["args"])
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    psc = pod["securityContext"]
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    if opts.run_as_non_root:
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == opts.run_as_user
        assert psc["fsGroup"] == opts.run_as_group  # makes the 0400 key file readable by the group
    else:  # kubeadm's etcd client key is root-only
        assert psc["runAsNonRoot"] is False and psc["runAsUser"] == 0 and "fsGroup" not in psc
    assert c["resources"] == opts.resources
    mounts = {v["name"]: v for v in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in vols["tmp"]
    r = m.resolve(opts)
    pki = r.etcd_pki_dir
    args = c["args"]
    files = (("etcd-ca", "--cacert", r.etcd_ca_file, "ca.crt"), ("etcd-cert", "--cert", r.etcd_cert_file, "tls.crt"),
             ("etcd-key", "--key", r.etcd_key_file, "tls.key"))
    if opts.etcd_client_cert_secret:  # the Secret's files, no host volume, no host network
        for _, arg, _, key in files:
            assert flag(args, arg) == f"/etc/etcdbackup/etcd/{key}"
        assert mounts["etcd-client"] == {"name": "etcd-client", "mountPath": "/etc/etcdbackup/etcd", "readOnly": True}
        assert vols["etcd-client"]["secret"]["secretName"] == opts.etcd_client_cert_secret
        assert not [v for v in pod["volumes"] if "hostPath" in v] and "hostNetwork" not in pod
    else:
        for volume, arg, file, _ in files:
            assert flag(args, arg) == f"{pki}/{file}"
            assert mounts[volume] == {"name": volume, "mountPath": f"{pki}/{file}", "readOnly": True}
            assert vols[volume]["hostPath"] == {"path": f"{pki}/{file}", "type": "File"}
    assert flag(args, "--endpoints") == ",".join(r.etcd_endpoints or [])
    assert "--retain-count" not in args and "--retain-age" not in args


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_encryption_key_only_as_a_mounted_file(variant: str) -> None:
    opts = VARIANTS[variant]
    objs = render_manifests(opts)
    pod = backup_pod(objs)
    (c,) = pod["containers"]
    assert flag(c["args"], "--encryption-key-file") == "/etc/etcdbackup/key/key"
    assert "--key-env" not in c["args"] and "--no-encryption" not in c["args"]
    key_vol = next(v for v in pod["volumes"] if v["name"] == "encryption-key")
    # The agent refuses a key file others can read: 0400 for root; 0440 with an fsGroup for a non-root user.
    mode = 0o440 if opts.run_as_non_root else 0o400
    assert key_vol["secret"] == {"secretName": opts.key_secret, "defaultMode": mode,
                                 "items": [{"key": opts.key_secret_key, "path": "key"}]}
    assert {"name": "encryption-key", "mountPath": "/etc/etcdbackup/key", "readOnly": True} in c["volumeMounts"]
    # The key Secret is referenced by that volume, the exporter's, the stream's and the drill's, nothing else.
    text = json.dumps(objs)
    assert text.count(f'"{opts.key_secret}"') == 1 + opts.exporter_enabled + opts.continuous + opts.drill_enabled
    for env in c.get("env", []):
        assert env["name"].startswith("AWS_") or env == {"name": "HOST_IP", "valueFrom": {
            "fieldRef": {"fieldPath": "status.hostIP"}}}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_key_volume_modes_fit_the_agents_permission_check(variant: str) -> None:
    """Owner-only for a root pod; a group-readable file only in a pod whose fsGroup owns it."""
    for kind, pod in pod_specs(render_manifests(VARIANTS[variant])).items():
        (vol,) = [v for v in pod["volumes"] if v["name"] == "encryption-key"]
        mode, sc = vol["secret"]["defaultMode"], pod["securityContext"]
        assert mode & 0o077 == 0 or (mode == 0o440 and "fsGroup" in sc), kind
        assert (sc["runAsUser"] == 0) == (mode == 0o400), kind
        assert "items" in vol["secret"] and all("mode" not in it for it in vol["secret"]["items"])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_no_pod_mounts_a_pki_directory(variant: str) -> None:
    """Only the three etcd client files, each a read-only hostPath of type File: never ca.key or the
    server/peer keys beside them."""
    opts = VARIANTS[variant]
    r = m.resolve(opts)
    for kind, pod in pod_specs(render_manifests(opts)).items():
        host = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
        mounts = {mt["name"]: mt for c in pod["containers"] for mt in c["volumeMounts"]}
        if kind not in ("CronJob", "stream") or opts.etcd_client_cert_secret:
            assert not host, kind
            continue
        files = [f"{r.etcd_pki_dir}/{getattr(r, f)}" for f in ("etcd_ca_file", "etcd_cert_file", "etcd_key_file")]
        assert sorted(h["path"] for h in host.values()) == sorted(files)
        for name, h in host.items():
            assert h["type"] == "File" and mounts[name] == {"name": name, "mountPath": h["path"], "readOnly": True}
        for mt in mounts.values():
            assert not (mt["mountPath"] + "/").startswith("/etc/kubernetes/pki/") or mt["mountPath"] in files


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_scratch_dirs_are_size_limited(variant: str) -> None:
    opts = VARIANTS[variant]
    limit = {"CronJob": opts.work_dir_size_limit, "Deployment": opts.exporter_work_dir_size_limit,
             "stream": opts.continuous_work_dir_size_limit, "drill": opts.drill_work_dir_size_limit}
    for kind, pod in pod_specs(render_manifests(opts)).items():
        empty = [v["emptyDir"] for v in pod["volumes"] if "emptyDir" in v]
        assert empty == [{"sizeLimit": limit[kind]}], kind
        for c in pod["containers"]:  # and every container requests and limits ephemeral storage
            assert c["resources"]["requests"]["ephemeral-storage"] and c["resources"]["limits"]["ephemeral-storage"]
    assert ManifestOptions().work_dir_size_limit == "3Gi"  # verify=status needs about the db size (quota 2 GiB)
    limits = ManifestOptions().resources
    assert limits["requests"]["ephemeral-storage"] and limits["limits"]["ephemeral-storage"] == "4Gi"


def test_retention_and_timeout_flags() -> None:
    args = backup_pod(render_manifests())["containers"][0]["args"]
    retention = args[args.index("--encryption-key-file") + 2:args.index("--verify")]
    assert retention == ["--keep-within", "24h", "--keep-daily", "7"]
    assert flag(args, "--command-timeout") == "10m" and flag(args, "--idle-timeout") == "30s"
    args = backup_pod(render_manifests(VARIANTS["everything"]))["containers"][0]["args"]
    assert args[args.index("--encryption-key-file") + 2:args.index("--verify")] == [
        "--keep-last", "10", "--keep-hourly", "24", "--keep-weekly", "4", "--keep-monthly", "12"]
    assert flag(args, "--command-timeout") == "20m" and flag(args, "--idle-timeout") == "1m"
    none = ManifestOptions(keep_within=None, keep_daily=None)  # every rule off: the agent deletes nothing
    assert not [a for a in backup_pod(render_manifests(none))["containers"][0]["args"] if a.startswith("--keep")]


def test_pvc_mode() -> None:
    objs = render_manifests(ManifestOptions(pvc_storage_class="fast", pvc_size="5Gi"))
    pvc = one(objs, "PersistentVolumeClaim")
    assert pvc["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}},
                           "storageClassName": "fast"}
    pod = backup_pod(objs)
    (c,) = pod["containers"]
    assert flag(c["args"], "--store") == "file:///backups"
    assert {"name": "backups", "mountPath": "/backups"} in c["volumeMounts"]
    assert {"name": "backups", "persistentVolumeClaim": {"claimName": "etcd-backup-data"}} in pod["volumes"]
    assert "env" not in c and "--s3-region" not in c["args"]
    # An existing claim: referenced, not created.
    objs = render_manifests(ManifestOptions(pvc_create=False, pvc_name="my-claim"))
    assert not by_kind(objs, "PersistentVolumeClaim")
    assert {"name": "backups", "persistentVolumeClaim": {"claimName": "my-claim"}} in backup_pod(objs)["volumes"]


def test_s3_mode() -> None:
    objs = render_manifests(VARIANTS["s3"])
    assert not by_kind(objs, "PersistentVolumeClaim")
    pod = backup_pod(objs)
    (c,) = pod["containers"]
    args = c["args"]
    assert flag(args, "--store") == "s3://etcd-backups/cluster-1"  # normalised
    assert flag(args, "--s3-endpoint-url") == "https://minio.example:9000"
    assert flag(args, "--s3-region") == "eu-west-1"
    assert flag(args, "--s3-sse") == "aws:kms" and flag(args, "--s3-sse-kms-key-id") == "alias/etcd"
    assert [e["name"] for e in c["env"]] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
    for e in c["env"]:
        ref = e["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "etcd-backup-s3" and ref["key"] == e["name"]
        assert ref.get("optional", False) == (e["name"] == "AWS_SESSION_TOKEN")
    assert "backups" not in {v["name"] for v in pod["volumes"]}
    # No Secret: the default AWS credential chain (IRSA); no credentials env at all.
    objs = render_manifests(VARIANTS["s3-irsa-no-exporter"])
    assert "env" not in backup_pod(objs)["containers"][0]
    assert one(objs, "ServiceAccount")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert not by_kind(objs, "Deployment") and not by_kind(objs, "Namespace")


@pytest.mark.parametrize("variant", ["pvc", "s3"])
def test_exporter_reads_the_store_as_non_root(variant: str) -> None:
    opts = VARIANTS[variant]
    objs = render_manifests(opts)
    cm, dep, svc = one(objs, "ConfigMap"), one(objs, "Deployment"), one(objs, "Service")
    store = m.parse_store(opts.store)
    expected = {"ETCDBACKUP_STORE": store.url, "ETCDBACKUP_MAX_AGE": "1h", "ETCDBACKUP_LISTEN": "0.0.0.0:9101",
                "ETCDBACKUP_DRILL_MAX_AGE": "62d"}
    if variant == "s3":
        expected |= {"ETCDBACKUP_S3_ENDPOINT_URL": opts.s3_endpoint_url, "ETCDBACKUP_S3_REGION": opts.s3_region}
    assert cm["data"] == expected
    tmpl = dep["spec"]["template"]
    assert tmpl["metadata"]["annotations"]["checksum/config"] == m.config_checksum(cm["data"])
    assert dep["spec"]["selector"]["matchLabels"].items() <= tmpl["metadata"]["labels"].items()
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    pod = tmpl["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["kubectl-etcdbackup", "agent", "exporter"]
    assert c["args"] == ["--encryption-key-file", m.KEY_FILE]
    assert c["envFrom"] == [{"configMapRef": {"name": cm["metadata"]["name"]}}]
    assert c["ports"] == [{"name": "metrics", "containerPort": 9101, "protocol": "TCP"}]
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    sc = pod["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532 and sc["fsGroup"] == 65532
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert "hostNetwork" not in pod
    # the key authenticates the manifests: 0440, readable through the fsGroup (owner root)
    assert pod["volumes"][0] == {"name": "encryption-key", "secret": {
        "secretName": opts.key_secret, "defaultMode": 0o440, "items": [{"key": "key", "path": "key"}]}}
    assert {"name": "encryption-key", "mountPath": "/etc/etcdbackup/key", "readOnly": True} in c["volumeMounts"]
    if variant == "pvc":
        assert {"name": "backups", "mountPath": "/backups", "readOnly": True} in c["volumeMounts"]
        assert pod["volumes"][-1]["persistentVolumeClaim"]["readOnly"] is True


def test_config_checksum_matches_go_json() -> None:
    # Helm: toJson (sorted keys, compact, <>& escaped as \u00XX) | sha256sum
    data = {"b": "x<y&z>", "a": "é"}
    go_json = '{"a":"é","b":"x\\u003cy\\u0026z\\u003e"}'
    import hashlib

    assert m.config_checksum(data) == hashlib.sha256(go_json.encode()).hexdigest()


def test_agent_needs_no_rbac_and_operator_role_is_optional() -> None:
    objs = render_manifests()
    assert not by_kind(objs, "Role") and not by_kind(objs, "RoleBinding")
    assert one(objs, "ServiceAccount")["automountServiceAccountToken"] is False
    objs = render_manifests(VARIANTS["everything"])
    role, binding = one(objs, "Role"), one(objs, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert "secrets" not in resources and "jobs" in resources
    assert binding["subjects"] == [{"kind": "Group", "name": "sre", "apiGroup": "rbac.authorization.k8s.io"}]


@pytest.mark.parametrize(("changes", "field"), [
    ({"schedule": "every 15 minutes"}, "schedule"),
    ({"schedule": "*/15 * * *"}, "schedule"),
    ({"store": "nfs://server/x"}, "store"),
    ({"store": "file://relative/x"}, "store"),
    ({"store": "file:///tmp/backups"}, "store"),
    ({"store": "s3://"}, "store"),
    ({"store": "s3://Bad_Bucket/x"}, "store"),
    ({"keep_within": "a day"}, "duration"),
    ({"max_age": "soon"}, "duration"),
    ({"keep_last": 0}, "keep_last"),
    ({"keep_monthly": -1}, "keep_monthly"),
    ({"idle_timeout": "never"}, "duration"),
    ({"command_timeout": "15m"}, "command_timeout"),
    ({"etcd_cert_file": "client.pem", "etcd_key_file": "client.pem"}, "three different files"),
    ({"work_dir_size_limit": "lots"}, "work_dir_size_limit"),
    ({"verify": "maybe"}, "verify"),
    ({"time_zone": "UTC +1"}, "time_zone"),
    ({"concurrency_policy": "Sometimes"}, "concurrency_policy"),
    ({"name": "Etcd_Backup"}, "name"),
    ({"name": "x" * 53}, "name"),
    ({"image": "ghcr.io/kubectl-etcdbackup/agent"}, "image"),
    ({"pvc_create": False}, "pvc_name"),
    ({"pvc_size": "lots"}, "pvc_size"),
    ({"etcd_endpoints": []}, "etcd_endpoints"),
    ({"etcd_endpoints": ["10.0.0.1:2379"]}, "etcd_endpoints"),
    ({"run_as_non_root": True}, "run_as_user"),
    ({"store": "s3://bucket", "s3_sse": "yes"}, "s3_sse"),
    ({"store": "s3://bucket", "s3_sse_kms_key_id": "k"}, "s3_sse_kms_key_id"),
    ({"exporter_port": 0}, "exporter_port"),
])
def test_invalid_options_are_rejected_with_the_option_name(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ManifestError, match=field):
        render_manifests(ManifestOptions(**changes))


def test_to_yaml_is_stable_multi_document() -> None:
    objs = render_manifests(VARIANTS["s3"])
    text = to_yaml(objs)
    assert text == to_yaml(render_manifests(VARIANTS["s3"]))
    assert text.count("---\n") == len(objs)
    assert list(yaml.safe_load_all(text)) == objs
    first = text.split("---\n")[1].splitlines()
    assert first[:2] == ["apiVersion: v1", "kind: Namespace"]


def test_duration_seconds() -> None:
    assert [m.duration_seconds(d) for d in ("90s", "15m", "1h", "7d", "2w")] == [90, 900, 3600, 604800, 1209600]
    with pytest.raises(ManifestError):
        m.duration_seconds("0h")


def test_manifests_dir_is_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("gen_manifests", ROOT / "scripts" / "gen-manifests.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    expected = gen.render_all()
    assert sorted(expected) == ["pvc.yaml", "s3.yaml"]
    for name, text in expected.items():
        path = ROOT / "manifests" / name
        assert path.exists() and path.read_text() == text, \
            f"manifests/{name} is out of date: run scripts/gen-manifests.py"
    for name in expected:  # and what is committed is valid
        for obj in yaml.safe_load_all((ROOT / "manifests" / name).read_text()):
            for version in K8S_VERSIONS:
                k8s_validate(obj, version)


# --- the flags and variables we emit exist in the agent's CLI (parsed, not run) --------------------------

def _cli_command(*path: str) -> Any:
    cli = pytest.importorskip("kubectl_etcdbackup.cli", reason="the CLI package is not importable")
    import typer

    cmd: Any = typer.main.get_command(cli.app)
    for name in path:
        assert name in getattr(cmd, "commands", {}), f"no command {name!r} in the CLI"
        cmd = cmd.commands[name]
    return cmd


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_backup_args_parse_with_the_agent_cli(variant: str) -> None:
    c = backup_pod(render_manifests(VARIANTS[variant]))["containers"][0]
    assert c["command"][0] == "kubectl-etcdbackup"
    cmd = _cli_command(*c["command"][1:])
    ctx = cmd.make_context("backup", list(c["args"]))
    store = m.parse_store(VARIANTS[variant].store)
    assert ctx.params["store"] == store.url and ctx.params["encryption_key_file"] == "/etc/etcdbackup/key/key"


def test_exporter_config_is_read_by_the_agent_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    objs = render_manifests(VARIANTS["s3"])
    for k, v in one(objs, "ConfigMap")["data"].items():
        monkeypatch.setenv(k, v)
    c = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    cmd = _cli_command(*c["command"][1:])
    ctx = cmd.make_context("exporter", list(c["args"]))
    assert ctx.params["encryption_key_file"] == m.KEY_FILE
    assert ctx.params["store"] == "s3://etcd-backups/cluster-1"
    assert ctx.params["listen"] == "0.0.0.0:9101" and ctx.params["max_age"] == "1h"
    assert ctx.params["s3_endpoint_url"] == "https://minio.example:9000" and ctx.params["s3_region"] == "eu-west-1"


# --- distributions, the client certificate Secret, continuous backup --------------------------------------

@pytest.mark.parametrize(("distribution", "pki", "files", "label"), [
    ("kubeadm", "/etc/kubernetes/pki/etcd", ("ca.crt", "healthcheck-client.crt", "healthcheck-client.key"), ""),
    ("k3s", "/var/lib/rancher/k3s/server/tls/etcd", ("server-ca.crt", "client.crt", "client.key"), "true"),
    ("rke2", "/var/lib/rancher/rke2/server/tls/etcd", ("server-ca.crt", "client.crt", "client.key"), "true"),
])
def test_distribution_presets(distribution: str, pki: str, files: tuple[str, ...], label: str) -> None:
    pod = backup_pod(render_manifests(ManifestOptions(distribution=distribution)))
    args = pod["containers"][0]["args"]
    assert [flag(args, f) for f in ("--cacert", "--cert", "--key")] == [f"{pki}/{f}" for f in files]
    assert flag(args, "--endpoints") == "https://127.0.0.1:2379"
    assert pod["nodeSelector"] == {"node-role.kubernetes.io/control-plane": label}
    # explicit values override the preset
    opts = ManifestOptions(distribution=distribution, etcd_pki_dir="/srv/pki", etcd_cert_file="me.crt",
                           node_selector={"example.com/etcd": "yes"}, tolerations=[])
    pod = backup_pod(render_manifests(opts))
    args = pod["containers"][0]["args"]
    assert flag(args, "--cert") == "/srv/pki/me.crt" and flag(args, "--cacert") == f"/srv/pki/{files[0]}"
    assert pod["nodeSelector"] == {"example.com/etcd": "yes"} and "tolerations" not in pod
    with pytest.raises(ManifestError, match="distribution"):
        render_manifests(ManifestOptions(distribution="openshift"))


def test_client_cert_secret_reaches_the_nodes_etcd_without_host_access() -> None:
    opts = ManifestOptions(etcd_client_cert_secret="etcd-client", run_as_non_root=True, run_as_user=65532,
                           run_as_group=65532, continuous=True)
    objs = render_manifests(opts)
    assert one(objs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for kind in ("CronJob", "stream"):
        pod = pod_specs(objs)[kind]
        (c,) = pod["containers"]
        assert flag(c["args"], "--endpoints") == "https://$(HOST_IP):2379"
        assert c["env"][0] == {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}
        (vol,) = [v for v in pod["volumes"] if v["name"] == "etcd-client"]
        assert vol["secret"] == {"secretName": "etcd-client", "defaultMode": 0o440, "items": [
            {"key": "ca.crt", "path": "ca.crt"}, {"key": "tls.crt", "path": "tls.crt"},
            {"key": "tls.key", "path": "tls.key"}]}
        assert pod["securityContext"]["fsGroup"] == 65532 and "hostNetwork" not in pod
    # given endpoints: no HOST_IP; a root pod: 0400 and the namespace stays privileged
    objs = render_manifests(ManifestOptions(etcd_client_cert_secret="etcd-client",
                                            etcd_endpoints=["https://etcd.example:2379"]))
    (c,) = backup_pod(objs)["containers"]
    assert "env" not in c and flag(c["args"], "--endpoints") == "https://etcd.example:2379"
    (vol,) = [v for v in backup_pod(objs)["volumes"] if v["name"] == "etcd-client"]
    assert vol["secret"]["defaultMode"] == 0o400
    assert one(objs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_exporter_reads_s3_with_its_own_credentials_anywhere() -> None:
    objs = render_manifests(VARIANTS["rke2-client-cert-secret-s3"])
    exporter = [d for d in by_kind(objs, "Deployment") if d["metadata"]["name"].endswith("-exporter")][0]
    pod = exporter["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in pod["containers"][0]["env"]}
    assert refs == {"etcd-backup-s3-ro"}
    backup_refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in backup_pod(objs)["containers"][0]["env"]
                   if e["name"].startswith("AWS_")}
    assert backup_refs == {"etcd-backup-s3"}


def test_stream_deployment_and_its_args_parse_with_the_agent_cli() -> None:
    opts = VARIANTS["k3s-continuous"]
    objs = render_manifests(opts)
    (dep,) = [d for d in by_kind(objs, "Deployment") if d["metadata"]["name"] == "etcd-backup-stream"]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    assert dep["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "stream"
    pod, backup = dep["spec"]["template"]["spec"], backup_pod(objs)
    for k in ("nodeSelector", "tolerations", "hostNetwork", "securityContext", "volumes"):
        if k == "volumes":  # the same certificate, key and store; its own /tmp limit
            assert [v for v in pod[k] if v["name"] != "tmp"] == [v for v in backup[k] if v["name"] != "tmp"]
        else:
            assert pod[k] == backup[k], k
    (c,) = pod["containers"]
    assert c["command"] == ["kubectl-etcdbackup", "agent", "stream"]
    assert flag(c["args"], "--flush-interval") == "5s" and flag(c["args"], "--cacert").endswith("/server-ca.crt")
    ctx = _cli_command(*c["command"][1:]).make_context("stream", list(c["args"]))
    assert ctx.params["encryption_key_file"] == m.KEY_FILE and ctx.params["flush_interval"] == "5s"
    assert not [d for d in by_kind(render_manifests(), "Deployment") if d["metadata"]["name"].endswith("-stream")]


def test_pod_options_and_common_labels() -> None:
    opts = ManifestOptions(common_labels={"example.com/team": "sre"}, backup_pod_labels={"example.com/x": "1"},
                           backup_pod_annotations={"a": "b"}, backup_extra_env=[{"name": "TZ", "value": "UTC"}],
                           backup_extra_volumes=[{"name": "ca", "configMap": {"name": "ca"}}],
                           backup_extra_volume_mounts=[{"name": "ca", "mountPath": "/etc/ssl/custom"}])
    objs = render_manifests(opts)
    for o in objs:
        assert o["metadata"]["labels"]["example.com/team"] == "sre"
    tmpl = one(objs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]
    assert tmpl["metadata"]["labels"]["example.com/x"] == "1" and tmpl["metadata"]["annotations"] == {"a": "b"}
    (c,) = tmpl["spec"]["containers"]
    assert c["env"] == [{"name": "TZ", "value": "UTC"}] and c["volumeMounts"][-1]["name"] == "ca"
    assert tmpl["spec"]["volumes"][-1] == {"name": "ca", "configMap": {"name": "ca"}}
    for bad, match in (({"common_labels": {"app.kubernetes.io/name": "x"}}, "common_labels"),
                       ({"backup_extra_env": [{"name": "AWS_ACCESS_KEY_ID"}]}, "backup_extra_env"),
                       ({"exporter_extra_volumes": [{"name": "tmp"}]}, "exporter_extra_volumes"),
                       ({"continuous_flush_interval": "soon"}, "duration")):
        with pytest.raises(ManifestError, match=match):
            render_manifests(ManifestOptions(**bad))


def test_drill_cronjob_runs_agent_drill_non_root_without_etcd_access() -> None:
    for variant in ("pvc", "rke2-client-cert-secret-s3", "everything"):
        opts = VARIANTS[variant]
        objs = render_manifests(opts)
        cj = one(objs, "drill")
        assert cj["metadata"]["labels"]["app.kubernetes.io/component"] == "drill"
        assert cj["spec"]["schedule"] == "0 3 1 * *" and cj["spec"]["concurrencyPolicy"] == "Forbid"
        job = cj["spec"]["jobTemplate"]["spec"]
        assert job["backoffLimit"] == 0 and job["activeDeadlineSeconds"] == 3600
        pod, backup = job["template"]["spec"], backup_pod(objs)
        assert "hostNetwork" not in pod and not [v for v in pod["volumes"] if "hostPath" in v]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["fsGroup"] == m.NONROOT_ID
        for k in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets", "priorityClassName"):
            assert pod.get(k) == backup.get(k), (variant, k)
        (c,) = pod["containers"]
        assert c["command"] == ["kubectl-etcdbackup", "agent", "drill"]
        assert not [a for a in c["args"] if a.startswith(("--endpoints", "--cacert", "--cert", "--key"))]
        ctx = _cli_command("agent", "drill").make_context("drill", list(c["args"]))
        assert ctx.params["encryption_key_file"] == m.KEY_FILE and ctx.params["work_dir"] == "/tmp"
        assert ctx.params["store"] == m.parse_store(opts.store).url
        assert ctx.params["pushgateway"] == opts.pushgateway_url
        key = next(v for v in pod["volumes"] if v["name"] == "encryption-key")
        assert key["secret"]["defaultMode"] == m.KEY_MODE_FS_GROUP
        store_mounts = [mt for mt in c["volumeMounts"] if mt["name"] == "backups"]
        assert store_mounts == ([{"name": "backups", "mountPath": m.parse_store(opts.store).path}]
                                if opts.store.startswith("file:") else [])
        aws = {e["name"] for e in c.get("env", []) if e["name"].startswith("AWS_")}
        assert aws == ({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
                       if opts.s3_existing_secret else set())
    config = one(render_manifests(), "ConfigMap")["data"]
    assert config["ETCDBACKUP_DRILL_MAX_AGE"] == "62d"
    off = render_manifests(ManifestOptions(drill_enabled=False))
    assert not by_kind(off, "drill") and "ETCDBACKUP_DRILL_MAX_AGE" not in one(off, "ConfigMap")["data"]
    for bad, match in (({"drill_schedule": "monthly"}, "drill_schedule"), ({"drill_max_age": "2 months"}, "duration"),
                       ({"drill_work_dir_size_limit": "lots"}, "drill_work_dir_size_limit")):
        with pytest.raises(ManifestError, match=match):
            render_manifests(ManifestOptions(**bad))
