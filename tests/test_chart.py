"""chart/ (Helm): lint --strict, strict Kubernetes schemas (1.29, 1.33) for every rendered object, the values
schema rejecting bad input, and the contract with kubectl_etcdbackup.k8s.manifests: for the same options,
`helm template` renders the very same objects as render_manifests().

The value sets are chart/ci/*-values.yaml (what chart testing tools lint and install too).
ServiceMonitor and PrometheusRule (Prometheus Operator CRDs) have no schema in kubernetes-validate: they are
checked structurally here instead. The normalisation in the contract: the PVC's Helm-only annotation
`helm.sh/resource-policy: keep`, and the labels that name the manager (`helm.sh/chart`, and
`app.kubernetes.io/managed-by`: Helm in the chart, kubectl-etcdbackup in render_manifests).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from infra.k8s_schema import K8S_VERSIONS, k8s_validate

from kubectl_etcdbackup import __version__
from kubectl_etcdbackup.defaults import DISTRIBUTIONS
from kubectl_etcdbackup.k8s import manifests as m
from kubectl_etcdbackup.k8s.manifests import ManifestOptions, render_manifests, to_helm_values

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "chart"
HELM = ROOT / ".ci" / "bin" / "helm"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}



@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if not os.access(HELM, os.X_OK):
        pytest.fail(f"{HELM} is missing: run .ci/get-kubectl-helm.sh", pytrace=False)
    home = tmp_path_factory.mktemp("helm-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG"))}
    env |= {"HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_DATA_HOME": str(home / "data"), "KUBECONFIG": str(home / "no-kubeconfig")}
    return env


def helm(env: dict[str, str], *args: str, tmp: Path | None = None, values: dict[str, Any] | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [str(HELM), *args]
    if values is not None:
        assert tmp is not None
        f = tmp / f"values-{len(list(tmp.glob('values-*')))}.yaml"
        f.write_text(yaml.safe_dump(values))
        cmd += ["-f", str(f)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert r.returncode == 0, f"{' '.join(cmd)}:\n{r.stderr}"
    return r


def template(env: dict[str, str], tmp: Path, values: dict[str, Any] | None = None, *, release: str = "etcd-backup",
             namespace: str = "etcd-backup", chart: Path = CHART, extra: tuple[str, ...] = ()) -> list[dict]:
    r = helm(env, "template", release, str(chart), "-n", namespace, *extra, tmp=tmp, values=values or {})
    return [o for o in yaml.safe_load_all(r.stdout) if o]


# chart/ci/<name>-values.yaml: default, s3, pvc, k3s, rke2, client-cert-secret, continuous.
CI_DIR = CHART / "ci"
VALUE_SETS: dict[str, dict[str, Any]] = {
    f.name.removesuffix("-values.yaml"): yaml.safe_load(f.read_text()) or {}
    for f in sorted(CI_DIR.glob("*-values.yaml"))}


def test_ci_value_sets() -> None:
    assert sorted(VALUE_SETS) == sorted(["default", "s3", "pvc", "k3s", "rke2", "client-cert-secret", "continuous"])


def preset(values: dict[str, Any]) -> dict[str, Any]:
    return DISTRIBUTIONS[values.get("distribution", "kubeadm")]


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_helm_lint_strict(helm_env: dict[str, str], tmp_path: Path, name: str) -> None:
    r = helm(helm_env, "lint", "--strict", str(CHART), tmp=tmp_path, values=VALUE_SETS[name])
    assert "0 chart(s) failed" in r.stdout


def structural_check_crd(obj: dict[str, Any]) -> None:
    """What the Prometheus Operator would reject: wrong group/version, missing selector/rules/fields."""
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"])
    spec = obj["spec"]
    if obj["kind"] == "ServiceMonitor":
        assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
        assert spec["selector"]["matchLabels"]
        for ep in spec["endpoints"]:
            assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme"} and ep["port"]
            assert all(re.fullmatch(r"[0-9]+(ms|s|m|h)", ep[k]) for k in ("interval", "scrapeTimeout") if k in ep)
    else:
        for group in spec["groups"]:
            assert set(group) <= {"name", "interval", "rules"} and group["rules"]
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
                assert rule["alert"] and isinstance(rule["expr"], str) and rule["expr"].strip()
                assert "{{" not in rule["expr"] and rule["expr"].count("(") == rule["expr"].count(")")
                assert rule["labels"]["severity"] in ("critical", "warning")
                assert all(isinstance(v, str) for v in rule["annotations"].values())
                if "for" in rule:
                    assert re.fullmatch(r"[0-9]+[smhdw]", rule["for"])


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_rendered_objects_pass_strict_kubernetes_schema(helm_env: dict[str, str], tmp_path: Path, name: str,
                                                        version: str) -> None:
    objs = template(helm_env, tmp_path, VALUE_SETS[name])
    assert {"CronJob", "Pod"} <= {o["kind"] for o in objs}
    for obj in objs:
        if obj["kind"] in CRD_KINDS:
            structural_check_crd(obj)
        else:
            k8s_validate(obj, version)


@pytest.mark.parametrize(("values", "expected"), [
    ({"store": {"type": "nfs"}}, ["store.type", '"file", "s3"']),
    ({"backup": {"schedule": "every 15 minutes"}}, ["backup.schedule", "pattern"]),
    ({"backup": {"schedule": "*/15 * * *"}}, ["backup.schedule"]),
    ({"store": {"type": "s3"}}, ["store.s3", "bucket is required"]),
    ({"store": {"type": "s3", "s3": {"bucket": "Not_A_Bucket"}}}, ["store.s3.bucket"]),
    ({"store": {"pvc": {"create": False}}}, ["store.pvc.name"]),
    ({"retention": {"keepWithin": "1.5h"}}, ["retention.keepWithin"]),
    ({"retention": {"keepDaily": 0}}, ["retention.keepDaily"]),
    ({"retention": {"count": 96}}, ["Additional property count is not allowed"]),
    ({"backup": {"commandTimeout": "ten minutes"}}, ["backup.commandTimeout"]),
    ({"backup": {"workDirSizeLimit": ""}}, ["backup.workDirSizeLimit"]),
    ({"monitor": {"maxAge": ""}}, ["monitor.maxAge"]),
    ({"backup": {"verify": "maybe"}}, ["backup.verify"]),
    ({"backup": {"securityContext": {"runAsNonRoot": True}}}, ["backup.securityContext.runAsUser"]),
    ({"store": {"s3": {"sse": "yes"}}}, ["store.s3.sse"]),
    ({"etcd": {"endpoints": ["10.0.0.1:2379"]}}, ["etcd.endpoints"]),
    ({"distribution": "openshift"}, ["distribution"]),
    ({"commonLabels": {"app.kubernetes.io/name": "x"}}, ["commonLabels"]),
    ({"backup": {"podLabels": {"helm.sh/chart": "x"}}}, ["backup.podLabels"]),
    ({"backup": {"extraEnv": [{"name": "AWS_ACCESS_KEY_ID", "value": "x"}]}}, ["backup.extraEnv"]),
    ({"exporter": {"extraVolumes": [{"name": "tmp", "emptyDir": {}}]}}, ["exporter.extraVolumes"]),
    ({"etcd": {"clientCertSecret": "Not_A_Secret"}}, ["etcd.clientCertSecret"]),
    ({"continuous": {"flushInterval": "5 seconds"}}, ["continuous.flushInterval"]),
    ({"continuous": {"maxLag": ""}}, ["continuous.maxLag"]),
    ({"schedule": "*/5 * * * *"}, ["Additional property schedule is not allowed"]),
])
def test_values_schema_rejects_bad_values(helm_env: dict[str, str], tmp_path: Path, values: dict[str, Any],
                                          expected: list[str]) -> None:
    r = helm(helm_env, "template", "x", str(CHART), tmp=tmp_path, values=values, check=False)
    assert r.returncode != 0
    assert "values don't meet the specifications of the schema" in r.stderr
    for text in expected:
        assert text in r.stderr


# --- contract: helm template == render_manifests ------------------------------------------------------------

CONTRACT_OPTIONS: dict[str, ManifestOptions] = {
    "defaults": ManifestOptions(),
    "s3": ManifestOptions(store="s3://etcd-backups/cluster-1", s3_region="us-east-1",
                          s3_existing_secret="etcd-backup-s3", s3_sse="AES256"),
    "s3-everything": ManifestOptions(
        name="prod-backup", namespace="ops", store="s3://etcd-backups/prod/", s3_endpoint_url="http://minio:9000",
        s3_region="us-east-1", s3_existing_secret="creds", s3_sse="aws:kms", s3_sse_kms_key_id="arn:aws:kms:k",
        exporter_port=9200, time_zone="Etc/UTC", operator_role=True,
        operator_subjects=[{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
        image_pull_secrets=["regcred"], priority_class_name="high", run_as_non_root=True, run_as_user=1000,
        run_as_group=2000, work_dir_size_limit="10Gi", pushgateway_url="http://pgw:9091", keep_last=1_000_000,
        keep_within="30d", keep_hourly=48, keep_daily=None, keep_weekly=8, keep_monthly=24, command_timeout="1h",
        idle_timeout="2m", active_deadline_seconds=7200, max_age="45m", verify="hash", schedule="@hourly",
        suspend=True, backoff_limit=0,
        tolerations=[{"key": "dedicated", "operator": "Equal", "value": "etcd", "effect": "NoExecute",
                      "tolerationSeconds": 60}],
        resources={"requests": {"cpu": "1"}}, image="registry.example:5000/etcd-agent:dev-1"),
    "pvc-existing-claim": ManifestOptions(
        pvc_create=False, pvc_name="backups", store="file:///var/backups/etcd/", exporter_enabled=False,
        node_selector={}, tolerations=[], service_account_annotations={"a": "b"}, etcd_pki_dir="/etc/etcd/pki/",
        etcd_endpoints=["https://10.0.0.1:2379", "https://10.0.0.2:2379"], etcd_cert_file="client.crt",
        etcd_key_file="client.key", image="ghcr.io/x/agent@sha256:" + "a" * 64, keep_within=None, keep_daily=None),
    "pvc-class": ManifestOptions(pvc_storage_class="local-path", pvc_size="100Gi",
                                 pvc_access_modes=["ReadWriteOncePod"], concurrency_policy="Replace"),
    "drill-options": ManifestOptions(
        drill_schedule="@weekly", drill_max_age="2w", drill_active_deadline_seconds=600,
        drill_work_dir_size_limit="1Gi",
        drill_resources={"requests": {"cpu": "1", "ephemeral-storage": "1Gi"}, "limits": {"ephemeral-storage": "2Gi"}},
        store="s3://etcd-backups/d", s3_existing_secret="rw", s3_sse="AES256", time_zone="Etc/UTC",
        pushgateway_url="http://pgw:9091", backup_extra_env=[{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        backup_extra_volumes=[{"name": "ca-bundle", "configMap": {"name": "ca-bundle"}}],
        backup_extra_volume_mounts=[{"name": "ca-bundle", "mountPath": "/etc/ssl/custom", "readOnly": True}],
        backup_pod_labels={"example.com/x": "one"}, backup_affinity={"podAntiAffinity": {}}),
    "no-drill": ManifestOptions(drill_enabled=False),
}


CONTRACT_OPTIONS |= {
    "k3s": ManifestOptions(distribution="k3s"),
    "rke2-s3-exporter-anywhere": ManifestOptions(
        distribution="rke2", store="s3://etcd-backups/c", s3_existing_secret="rw", exporter_s3_existing_secret="ro",
        exporter_node_selector={}, exporter_tolerations=[], common_labels={"example.com/team": "sre"},
        etcd_pki_dir="/srv/rke2/server/tls/etcd"),
    "client-cert-secret": ManifestOptions(
        etcd_client_cert_secret="etcd-client", run_as_non_root=True, run_as_user=65532, run_as_group=65532),
    "client-cert-secret-endpoints": ManifestOptions(
        etcd_client_cert_secret="etcd-client", etcd_endpoints=["https://etcd-0.etcd:2379", "https://etcd-1.etcd:2379"],
        node_selector={}, tolerations=[]),
    "continuous": ManifestOptions(
        continuous=True, continuous_flush_interval="10s", continuous_pod_annotations={"a": "b"},
        continuous_pod_labels={"example.com/tier": "stream"}, distribution="k3s"),
    "continuous-s3-secret": ManifestOptions(
        continuous=True, store="s3://etcd-backups/c", s3_existing_secret="rw", s3_sse="AES256",
        s3_endpoint_url="http://minio:9000", etcd_client_cert_secret="etcd-client",
        continuous_resources={"requests": {"cpu": "1", "ephemeral-storage": "1Gi"},
                              "limits": {"ephemeral-storage": "2Gi"}}),
    "pod-options": ManifestOptions(
        backup_pod_annotations={"a": "1"}, backup_pod_labels={"example.com/x": "one"},
        backup_node_selector={"kubernetes.io/hostname": "cp-1"},
        backup_tolerations=[{"operator": "Exists"}],
        backup_affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "node-role.kubernetes.io/etcd", "operator": "Exists"}]}]}}},
        backup_extra_env=[{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        backup_extra_volumes=[{"name": "ca-bundle", "configMap": {"name": "ca-bundle"}}],
        backup_extra_volume_mounts=[{"name": "ca-bundle", "mountPath": "/etc/ssl/custom", "readOnly": True}],
        exporter_pod_annotations={"b": "2"}, exporter_pod_labels={"example.com/y": "two"},
        exporter_affinity={"podAntiAffinity": {}}, exporter_extra_env=[{"name": "X", "value": "1"}],
        exporter_extra_volumes=[{"name": "extra", "emptyDir": {"sizeLimit": "1Mi"}}],
        exporter_extra_volume_mounts=[{"name": "extra", "mountPath": "/extra"}], exporter_work_dir_size_limit="1Gi",
        common_labels={"example.com/team": "sre"}, node_selector={"example.com/pool": "system"}),
}

MANAGER_LABELS = {"app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": f"etcd-backup-{__version__}"}


def _normalise_labels(node: Any, manager: dict[str, str]) -> None:
    """Every labels map (objects, job and pod templates): the manager labels must be `manager`; then dropped."""
    if isinstance(node, dict):
        if isinstance(node.get("labels"), dict) and "app.kubernetes.io/part-of" in node["labels"]:
            for k, v in manager.items():
                assert node["labels"].pop(k) == v, (k, node["labels"])
        for v in node.values():
            _normalise_labels(v, manager)
    elif isinstance(node, list):
        for v in node:
            _normalise_labels(v, manager)


def _normalise_helm(obj: dict[str, Any]) -> dict[str, Any]:
    ann = obj["metadata"].get("annotations", {})
    if obj["kind"] == "PersistentVolumeClaim" and ann.pop("helm.sh/resource-policy", None) and not ann:
        del obj["metadata"]["annotations"]
    _normalise_labels(obj, MANAGER_LABELS)
    return obj


def _normalise_python(obj: dict[str, Any]) -> dict[str, Any]:
    _normalise_labels(obj, {"app.kubernetes.io/managed-by": m.MANAGED_BY})
    return obj


@pytest.mark.parametrize("name", list(CONTRACT_OPTIONS))
def test_helm_renders_what_render_manifests_renders(helm_env: dict[str, str], tmp_path: Path, name: str) -> None:
    opts = CONTRACT_OPTIONS[name]
    rendered = template(helm_env, tmp_path, to_helm_values(opts), release=opts.name, namespace=opts.namespace,
                        extra=("--skip-tests",))
    from_helm = {(o["kind"], o["metadata"]["name"]): _normalise_helm(o) for o in rendered}
    from_python = {(o["kind"], o["metadata"]["name"]): _normalise_python(o) for o in render_manifests(opts)
                   if o["kind"] != "Namespace"}
    assert sorted(from_helm) == sorted(from_python)
    key = ("CronJob", opts.name)
    assert from_helm[key] == from_python[key], "CronJob differs:\n" + _diff(from_python[key], from_helm[key])
    for k, obj in from_python.items():
        assert from_helm[k] == obj, f"{k} differs:\n" + _diff(obj, from_helm[k])


def _diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    import difflib

    return "\n".join(difflib.unified_diff(yaml.safe_dump(a).splitlines(), yaml.safe_dump(b).splitlines(),
                                          "render_manifests", "helm template", lineterm=""))


def test_chart_defaults_equal_python_defaults() -> None:
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    python_values = to_helm_values(ManifestOptions())
    assert python_values.pop("fullnameOverride") == "etcd-backup" and chart_values["fullnameOverride"] == ""
    assert python_values["image"].pop("tag") == __version__ and chart_values["image"].pop("tag") == ""
    chart_values.pop("global")
    chart_values.pop("fullnameOverride")

    def subset(python: Any, chart: Any, path: str) -> None:  # what the chart has beyond: Helm-only values
        if isinstance(python, dict) and python:
            assert isinstance(chart, dict), path
            for k, v in python.items():
                subset(v, chart.get(k), f"{path}.{k}")
        else:
            assert chart == python, path

    subset(python_values, chart_values, "")
    helm_only = {k for k in chart_values if k not in python_values}
    assert helm_only == {"serviceMonitor", "prometheusRule", "dashboards", "test"}, helm_only


def test_chart_version_and_schema_follow_the_python_module() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["name"] == m.APP_NAME and chart["appVersion"] == __version__
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["backup"]["properties"]["schedule"]["pattern"] == m.CRON_RE.pattern
    keep_within = props["retention"]["properties"]["keepWithin"]
    assert keep_within["anyOf"] == [{"maxLength": 0}, {"pattern": m.DURATION_RE.pattern}]
    kebab = [re.sub("([A-Z])", r"-\1", k).lower() for k in props["retention"]["properties"]]
    assert [f"--{k}" for k in kebab] == [flag for _, flag in m.RETENTION_FLAGS]
    for k in ("commandTimeout", "idleTimeout"):
        assert props["backup"]["properties"][k]["pattern"] == m.DURATION_RE.pattern
    assert props["backup"]["properties"]["workDirSizeLimit"]["pattern"] == m.QUANTITY_RE.pattern
    assert props["monitor"]["properties"]["maxAge"]["pattern"] == m.DURATION_RE.pattern
    assert props["store"]["properties"]["type"]["enum"] == ["file", "s3"]
    assert props["backup"]["properties"]["verify"]["enum"] == list(m.VERIFY_MODES)
    # empty: the distribution's
    pki = props["etcd"]["properties"]["pki"]["properties"]
    assert pki["hostPath"]["pattern"] == f"^({m.ABS_DIR_RE.pattern[1:-1]})?$"
    mount = props["store"]["properties"]["pvc"]["properties"]["mountPath"]
    assert mount["pattern"] == m.ABS_DIR_RE.pattern and mount["not"]["pattern"] == m.RESERVED_PATH_RE.pattern
    assert props["encryption"]["properties"]["key"]["pattern"] == m.SECRET_KEY_RE.pattern
    assert props["distribution"]["enum"] == list(DISTRIBUTIONS)
    assert props["commonLabels"]["propertyNames"]["not"]["pattern"] == m.RESERVED_LABEL_RE.pattern
    for comp in ("backup", "exporter", "test"):
        pod = props[comp]["properties"]
        assert pod["podLabels"]["propertyNames"]["not"]["pattern"] == m.RESERVED_LABEL_RE.pattern
        assert pod["extraEnv"]["items"]["not"]["properties"]["name"]["pattern"] == m.RESERVED_ENV_RE.pattern
        assert set(pod["extraVolumes"]["items"]["not"]["properties"]["name"]["enum"]) == set(m._OWN_VOLUMES)
    for k in ("flushInterval", "maxLag"):
        assert props["continuous"]["properties"][k]["pattern"] == m.DURATION_RE.pattern
    assert props["global"] == {"type": "object", "description": props["global"]["description"]}

    def strict(node: Any, path: str) -> None:  # every object with properties is closed
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, path
            for k, v in node.items():
                strict(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                strict(v, f"{path}[{i}]")

    strict(schema, "$")


# --- safety properties of every pod the chart renders -------------------------------------------------------

def _pod_specs(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for o in objs:
        if o["kind"] == "CronJob":
            kind = "drill" if o["metadata"]["name"].endswith("-drill") else "CronJob"
            out[kind] = o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif o["kind"] == "Deployment":
            kind = "stream" if o["metadata"]["name"].endswith("-stream") else "Deployment"
            out[kind] = o["spec"]["template"]["spec"]
        elif o["kind"] == "Pod":
            out["Pod"] = o["spec"]
    return out


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_pods_mount_pki_files_alone_limit_scratch_and_guard_the_key(helm_env: dict[str, str], tmp_path: Path,
                                                                    name: str) -> None:
    values = VALUE_SETS[name]
    pods = _pod_specs(template(helm_env, tmp_path, values))
    assert "CronJob" in pods and "Pod" in pods and "drill" in pods
    p = preset(values)
    pki = p["pki_dir"]
    secret = values.get("etcd", {}).get("clientCertSecret")
    for kind, pod in pods.items():
        host = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
        mounts = {mt["name"]: mt for c in pod["containers"] for mt in c["volumeMounts"]}
        # never the PKI directory (ca.key, server and peer keys): only the three client files, type File
        agent = kind in ("CronJob", "stream") and not secret
        assert sorted(h["path"] for h in host.values()) == (
            sorted(f"{pki}/{p[f]}" for f in ("ca_file", "cert_file", "key_file")) if agent else []), kind
        assert ("hostNetwork" in pod) == agent, kind
        for vol, h in host.items():
            assert h["type"] == "File" and mounts[vol] == {"name": vol, "mountPath": h["path"], "readOnly": True}
        assert not [mt for mt in mounts.values() if mt["mountPath"].startswith("/etc/kubernetes/pki")
                    and mt["name"] not in host]
        # every emptyDir is size-limited; the backup's /tmp as backup.workDirSizeLimit
        assert all(v["emptyDir"].get("sizeLimit") for v in pod["volumes"] if "emptyDir" in v), kind
        (tmp,) = [v for v in pod["volumes"] if v["name"] == "tmp"]
        if kind in ("CronJob", "Pod"):
            assert tmp["emptyDir"]["sizeLimit"] == (values.get("backup", {}).get("workDirSizeLimit") or "3Gi")
        if kind == "drill":  # its own etcd on 127.0.0.1: no certificate, non-root
            assert tmp["emptyDir"]["sizeLimit"] == (values.get("drill", {}).get("workDirSizeLimit") or "5Gi")
            assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["fsGroup"] == 65532
        # the key and the client certificate Secret: owner-only for root, group-readable only through fsGroup
        sc = pod["securityContext"]
        expected = 0o400 if sc["runAsUser"] == 0 else 0o440
        for vol in pod["volumes"]:
            if "secret" in vol:
                assert vol["secret"]["defaultMode"] == expected and (expected == 0o400 or "fsGroup" in sc), kind
        # ephemeral-storage requested and limited in every container
        for c in pod["containers"]:
            assert {"ephemeral-storage"} <= set(c["resources"]["requests"]) & set(c["resources"]["limits"]), kind
    if "Deployment" in pods:
        (exporter,) = pods["Deployment"]["containers"]
        assert exporter["args"] == ["--encryption-key-file", "/etc/etcdbackup/key/key"]


def test_retention_and_timeout_args(helm_env: dict[str, str], tmp_path: Path) -> None:
    def args(values: dict[str, Any]) -> list[str]:
        (cj,) = [o for o in template(helm_env, tmp_path, values) if o["kind"] == "CronJob"
                 and not o["metadata"]["name"].endswith("-drill")]
        a = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
        return a[a.index("--encryption-key-file") + 2:]

    assert args({})[:6] == ["--keep-within", "24h", "--keep-daily", "7", "--verify", "status"]
    assert args({})[-4:] == ["--command-timeout", "10m", "--idle-timeout", "30s"]
    assert args(VALUE_SETS["pvc"])[:4] == ["--keep-last", "10", "--keep-monthly", "1000000"]
    off = {"retention": {"keepWithin": None, "keepDaily": None}}
    assert not [a for a in args(off) if a.startswith(("--keep", "--retain"))]


@pytest.mark.parametrize(("values", "message"), [
    ({"etcd": {"pki": {"certFile": "client.pem", "keyFile": "client.pem"}}}, "three different files"),
    ({"backup": {"commandTimeout": "15m"}}, "commandTimeout must be below"),
])
def test_chart_refuses_what_cannot_be_mounted_or_run(helm_env: dict[str, str], tmp_path: Path,
                                                     values: dict[str, Any], message: str) -> None:
    r = helm(helm_env, "template", "x", str(CHART), tmp=tmp_path, values=values, check=False)
    assert r.returncode != 0 and message in r.stderr


# --- Helm-only objects --------------------------------------------------------------------------------------

def test_helm_test_pod_verifies_latest_with_the_key(helm_env: dict[str, str], tmp_path: Path) -> None:
    for name, values in VALUE_SETS.items():
        (pod,) = [o for o in template(helm_env, tmp_path, values) if o["kind"] == "Pod"]
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test", name
        (c,) = pod["spec"]["containers"]
        assert c["command"] == ["kubectl-etcdbackup", "verify", "latest"]
        args = c["args"]
        assert args[args.index("--encryption-key-file") + 1] == "/etc/etcdbackup/key/key"
        store = args[args.index("--store") + 1]
        if name == "s3":  # reads with the exporter's read-only credentials
            assert store == "s3://etcd-backups/prod/cluster-1" and "--s3-endpoint-url" in args
            assert {e["name"] for e in c["env"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
            assert {e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"]} == {"etcd-backup-s3-readonly"}
        else:
            assert store.startswith("file:///")
        sc = pod["spec"]["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["fsGroup"] == 65532  # reads the 0440 key through fsGroup
        (key,) = [v for v in pod["spec"]["volumes"] if v["name"] == "encryption-key"]
        assert key["secret"]["defaultMode"] == 0o440
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["spec"]["nodeSelector"] == preset(values)["node_selector"]
    assert not [o for o in template(helm_env, tmp_path, {"test": {"enabled": False}}) if o["kind"] == "Pod"]


def test_test_pod_args_parse_with_the_cli(helm_env: dict[str, str], tmp_path: Path) -> None:
    cli = pytest.importorskip("kubectl_etcdbackup.cli", reason="the CLI package is not importable")
    import typer

    (pod,) = [o for o in template(helm_env, tmp_path, VALUE_SETS["s3"]) if o["kind"] == "Pod"]
    (c,) = pod["spec"]["containers"]
    group: Any = typer.main.get_command(cli.app)
    ctx = group.commands[c["command"][1]].make_context("verify", c["command"][2:] + c["args"])
    assert ctx.params["encryption_key_file"] == "/etc/etcdbackup/key/key"


def test_prometheus_rule_alerts(helm_env: dict[str, str], tmp_path: Path) -> None:
    objs = template(helm_env, tmp_path, VALUE_SETS["s3"], namespace="ops")
    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"EtcdBackupTooOld", "EtcdBackupFailing", "EtcdDbSizeNearQuota"} <= set(alerts)
    assert alerts["EtcdBackupTooOld"]["expr"] == ('time() - max by (namespace, store) '
                                                  '(etcd_backup_last_success_timestamp{namespace="ops"}) > 7200')
    assert "increase(etcd_backup_failures_total{namespace=\"ops\"}[1h]) > 0" in alerts["EtcdBackupFailing"]["expr"]
    assert alerts["EtcdDbSizeNearQuota"]["expr"] == (
        '(etcd_mvcc_db_total_size_in_bytes{job="kube-etcd"} / etcd_server_quota_backend_bytes{job="kube-etcd"}) > 0.8')
    assert "{{ $labels.store }}" in alerts["EtcdBackupTooOld"]["annotations"]["description"]
    assert rule["metadata"]["labels"]["team"] == "sre"
    (sm,) = [o for o in objs if o["kind"] == "ServiceMonitor"]
    (svc,) = [o for o in objs if o["kind"] == "Service"]
    assert sm["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert alerts["EtcdBackupDrillFailing"]["expr"] == (
        'time() - max by (namespace, store) (etcd_backup_drill_last_success_timestamp{namespace="ops"}) > 5356800')
    assert alerts["EtcdBackupDrillMissing"]["expr"] == (
        'absent(etcd_backup_drill_last_success_timestamp{namespace="ops"})')
    assert alerts["EtcdBackupDrillMissing"]["for"] == "62d"
    assert alerts["EtcdBackupCertExpiring"]["expr"] == (
        'min by (namespace, cert) (etcd_backup_cert_expiry_timestamp_seconds{namespace="ops"}) - time() < 2592000')
    # Default: 1h; no etcd selector.
    objs = template(helm_env, tmp_path, {"prometheusRule": {"enabled": True}})
    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    exprs = {r["alert"]: r["expr"] for r in rule["spec"]["groups"][0]["rules"]}
    assert exprs["EtcdBackupTooOld"].endswith("> 3600")
    assert exprs["EtcdDbSizeNearQuota"] == "(etcd_mvcc_db_total_size_in_bytes / etcd_server_quota_backend_bytes) > 0.8"
    # Durations in several whole units, as the plugin takes them: the helper adds them up.
    objs = template(helm_env, tmp_path, {"prometheusRule": {"enabled": True}, "monitor": {"maxAge": "1h30m"}})
    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    assert {r["alert"]: r["expr"] for r in rule["spec"]["groups"][0]["rules"]}["EtcdBackupTooOld"].endswith("> 5400")
    # drills: their own limit; none without the drill CronJob
    objs = template(helm_env, tmp_path, {"prometheusRule": {"enabled": True}, "drill": {"maxAge": "8d"}})
    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    exprs = {r["alert"]: r["expr"] for r in rule["spec"]["groups"][0]["rules"]}
    assert exprs["EtcdBackupDrillFailing"].endswith("> 691200") and "EtcdBackupCertExpiring" in exprs
    objs = template(helm_env, tmp_path, {"prometheusRule": {"enabled": True}, "drill": {"enabled": False}})
    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    assert not [r for r in rule["spec"]["groups"][0]["rules"] if r["alert"].startswith("EtcdBackupDrill")]
    assert not [o for o in objs if o["metadata"]["name"].endswith("-drill")]


def test_notes_render(helm_env: dict[str, str], tmp_path: Path) -> None:
    """NOTES.txt is not printed by `helm template`: render it through a wrapper template in a copy."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "zz-notes.yaml").write_text(
        '{{- define "notes-check" }}' + notes + '{{- end }}\n'
        'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n'
        '  notes: {{ include "notes-check" . | toJson }}\n')
    for name, values in VALUE_SETS.items():
        (cm,) = [o for o in template(helm_env, tmp_path, values, chart=chart, namespace="ops",
                                     extra=("--show-only", "templates/zz-notes.yaml"))]
        text = cm["data"]["notes"]
        assert "create secret generic etcd-backup-key" in text and "OUTSIDE the cluster" in text, name
        secret = values.get("etcd", {}).get("clientCertSecret")
        assert ("pod-security.kubernetes.io/enforce=privileged" in text) == (not secret), name
        if secret:
            assert f"create secret generic {secret} --from-file=ca.crt=/etc/kubernetes/pki/etcd/ca.crt" in text
            assert "https://$(HOST_IP):2379" in text and '"restricted" is enough' in text
        assert ("-stream stores a delta segment" in text) == (name == "continuous")
        assert ("etcd-backup-s3" in text) == (name == "s3")
        assert ("s3://etcd-backups/prod/cluster-1" in text) == (name == "s3")
