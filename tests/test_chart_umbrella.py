"""The chart as a dependency of an umbrella chart (file:// dependency, built offline): `global` values pass the
values schema, the subchart's values are nested under its name, and the objects are valid."""

from __future__ import annotations

from pathlib import Path

import yaml
from infra.k8s_schema import K8S_VERSIONS, k8s_validate
from test_chart import CHART, CRD_KINDS, helm, helm_env, structural_check_crd  # noqa: F401  (fixture)


def test_umbrella_chart_renders(helm_env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    umbrella = tmp_path / "platform"
    (umbrella / "templates").mkdir(parents=True)
    (umbrella / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2", "name": "platform", "version": "1.0.0",
        "dependencies": [{"name": "etcd-backup", "version": ">=0.1.0-0", "repository": f"file://{CHART}"}]}))
    (umbrella / "values.yaml").write_text(yaml.safe_dump({
        "global": {"imageRegistry": "registry.example", "storageClass": "fast"},
        "etcd-backup": {"distribution": "rke2", "commonLabels": {"example.com/stack": "platform"},
                        "continuous": {"enabled": True}, "prometheusRule": {"enabled": True}}}))
    r = helm(helm_env, "dependency", "build", str(umbrella))
    assert (umbrella / "charts").is_dir() and list((umbrella / "charts").glob("etcd-backup-*.tgz")), r.stdout
    r = helm(helm_env, "template", "platform", str(umbrella), "-n", "ops")
    objs = [o for o in yaml.safe_load_all(r.stdout) if o]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert {("CronJob", "platform-etcd-backup"), ("Deployment", "platform-etcd-backup-stream"),
            ("Deployment", "platform-etcd-backup-exporter")} <= kinds
    for o in objs:
        assert o["metadata"]["labels"]["example.com/stack"] == "platform"
        if o["kind"] in CRD_KINDS:
            structural_check_crd(o)
        else:
            for version in K8S_VERSIONS:
                k8s_validate(o, version)
    (cj,) = [o for o in objs if o["kind"] == "CronJob" and o["metadata"]["name"] == "platform-etcd-backup"]
    args = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--cacert") + 1] == "/var/lib/rancher/rke2/server/tls/etcd/server-ca.crt"
    r = helm(helm_env, "lint", "--strict", str(umbrella))
    assert "0 chart(s) failed" in r.stdout
