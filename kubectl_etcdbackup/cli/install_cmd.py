"""`manifests`, `install`, `uninstall`: the objects that run scheduled backups in a cluster, printed, applied
(server-side apply) or deleted again (keeping the store and the key unless asked)."""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import UsageError
from . import render
from .common import ClusterOptions, OptionGroup, grouped

if TYPE_CHECKING:
    from ..k8s.manifests import ManifestOptions
    from ..usecases.install import UninstallPlan

_M = "Manifest options"


def register(app: typer.Typer) -> None:
    app.command("manifests")(manifests_cmd)
    app.command("install")(install_cmd)
    app.command("uninstall")(uninstall_cmd)


def _opt(*names: str, help: str | None = None, **kw: Any) -> Any:
    return typer.Option(*names, help=help, rich_help_panel=_M, **kw)


@dataclasses.dataclass(frozen=True)
class ManifestFlags(OptionGroup):
    """ManifestOptions from --values with the flags given on top; each field is named after its ManifestOptions
    field (None: not given, the values file or the default decides)."""

    values: Annotated[str | None, _opt("--values", "-f", help="YAML file of ManifestOptions fields (flags "
                                       "override it)")] = None
    namespace: Annotated[str | None, _opt("--namespace", "-n", help="namespace of the objects "
                                          "[default: etcd-backup]")] = None
    name: Annotated[str | None, _opt("--name", help="base name of every object [default: etcd-backup]")] = None
    store: Annotated[str | None, _opt("--store", help="file:///dir (a PVC) or s3://bucket/prefix "
                                      "[default: file:///backups]")] = None
    schedule: Annotated[str | None, _opt("--schedule", help="cron schedule [default: */15 * * * *]")] = None
    image: Annotated[str | None, _opt("--image", help="agent image (repo:tag or @digest)")] = None
    distribution: Annotated[str | None, _opt("--distribution", help="kubeadm | k3s | rke2: where etcd's client "
                                             "certificate is and which nodes run etcd [default: kubeadm]")] = None
    etcd_endpoints: Annotated[str | None, _opt("--etcd-endpoints", help="comma-separated etcd client URLs "
                                               "[default: the distribution's, https://127.0.0.1:2379]")] = None
    etcd_pki_dir: Annotated[str | None, _opt("--etcd-pki-dir", help="node dir of the etcd client certs "
                                             "[default: the distribution's]")] = None
    etcd_client_cert_secret: Annotated[str | None, _opt("--etcd-client-cert-secret", help="Secret with the etcd "
                                                        "client certificate (ca.crt, tls.crt, tls.key) instead of "
                                                        "the node's files (no hostPath, no hostNetwork)")] = None
    s3_endpoint_url: Annotated[str | None, _opt("--s3-endpoint-url")] = None
    s3_region: Annotated[str | None, _opt("--s3-region")] = None
    s3_existing_secret: Annotated[str | None, _opt("--s3-secret", help="existing Secret with AWS_ACCESS_KEY_ID/"
                                                   "AWS_SECRET_ACCESS_KEY")] = None
    key_secret: Annotated[str | None, _opt("--key-secret", help="Secret holding the encryption key "
                                           "[default: etcd-backup-key]")] = None
    keep_last: Annotated[int | None, _opt("--keep-last", min=1, help="keep the newest N")] = None
    keep_within: Annotated[str | None, _opt("--keep-within", help="keep everything younger than this "
                                            "[default: 24h]")] = None
    keep_hourly: Annotated[int | None, _opt("--keep-hourly", min=1, help="keep the newest of each of the last N "
                                            "hours")] = None
    keep_daily: Annotated[int | None, _opt("--keep-daily", min=1, help="keep the newest of each of the last N "
                                           "days [default: 7]")] = None
    keep_weekly: Annotated[int | None, _opt("--keep-weekly", min=1, help="keep the newest of each of the last N "
                                            "weeks")] = None
    keep_monthly: Annotated[int | None, _opt("--keep-monthly", min=1, help="keep the newest of each of the last "
                                             "N months")] = None
    max_age: Annotated[str | None, _opt("--max-age", help="alert when the newest backup is older "
                                        "[default: 1h]")] = None
    verify: Annotated[str | None, _opt("--verify", help="hash | status | restore [default: status]")] = None
    pvc_size: Annotated[str | None, _opt("--pvc-size", help="size of the backups PVC [default: 20Gi]")] = None
    pvc_storage_class: Annotated[str | None, _opt("--storage-class", help="StorageClass of the backups "
                                                  "PVC")] = None
    exporter_enabled: Annotated[bool | None, _opt("--exporter/--no-exporter", help="metrics exporter "
                                                  "Deployment")] = None
    continuous: Annotated[bool | None, _opt("--continuous/--no-continuous", help="continuous backup: an `agent "
                                            "stream` Deployment storing delta segments")] = None
    continuous_flush_interval: Annotated[str | None, _opt("--flush-interval", help="continuous backup: store a "
                                                          "segment at least this often [default: 5s]")] = None
    drill_enabled: Annotated[bool | None, _opt("--drill/--no-drill", help="restore drills: a CronJob running "
                                               "`agent drill` [default: on]")] = None
    drill_schedule: Annotated[str | None, _opt("--drill-schedule", help="cron schedule of the restore drills "
                                               "[default: 0 3 1 * *]")] = None
    drill_max_age: Annotated[str | None, _opt("--drill-max-age", help="drills are stale (status, alerts) when "
                                              "none passed within this [default: 62d]")] = None
    create_namespace: Annotated[bool | None, _opt("--create-namespace/--no-create-namespace")] = None
    operator_role: Annotated[bool | None, _opt("--operator-role/--no-operator-role",
                                               help="a Role with what `now`/`status` need")] = None

    def options(self) -> ManifestOptions:
        from ..usecases.install import manifest_options

        flags = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "values"}
        return manifest_options(self.values, flags)


@grouped
def manifests_cmd(manifest: ManifestFlags) -> None:
    """Print the objects that run scheduled backups in a cluster, as YAML (for kubectl apply / GitOps)."""
    from ..k8s.manifests import render_manifests, to_yaml

    render.out(to_yaml(render_manifests(manifest.options())).rstrip("\n"))


@grouped
def install_cmd(manifest: ManifestFlags, cluster: ClusterOptions,
                generate_key: Annotated[bool, typer.Option(
                    "--generate-key", help="create the key Secret with a new random key if it does not exist "
                    "(never replaced)")] = False) -> None:
    """Apply the manifests to the cluster (server-side apply, field manager kubectl-etcdbackup); idempotent."""
    from ..usecases.install import InstallOptions, run_install

    opts = manifest.options()
    report = run_install(InstallOptions(opts, cluster.kubeconfig, cluster.context, generate_key),
                         lambda target: render.note(str(target)))
    for what, action in report.applied:
        render.out(f"{what} {action}")
    get_key = (f"kubectl -n {opts.namespace} get secret {opts.key_secret} "
               f"-o jsonpath='{{.data.{opts.key_secret_key}}}' | base64 -d")
    if report.key == "created":
        render.note(f"secret/{opts.key_secret} created with a new key; keep a copy outside the cluster (restores "
                    f"need it): {get_key}")
    elif report.key == "missing":
        render.warn([f"Secret {opts.key_secret} (the encryption key) does not exist yet; backups fail until it "
                     f"does: kubectl -n {opts.namespace} create secret generic {opts.key_secret} "
                     f"--from-literal={opts.key_secret_key}=\"$(kubectl etcdbackup keygen)\" (or install "
                     "--generate-key)"])


@grouped
def uninstall_cmd(manifest: ManifestFlags, cluster: ClusterOptions,
                  delete_store: Annotated[bool, typer.Option(
                      "--delete-store", help="also delete the PersistentVolumeClaim holding the snapshots")] = False,
                  delete_key: Annotated[bool, typer.Option(
                      "--delete-key", help="also delete the encryption key Secret (snapshots cannot be read "
                      "without it)")] = False,
                  yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False) -> None:
    """Delete what install created (give it the options install was given); keeps the store (the PVC) and the
    key Secret unless --delete-store / --delete-key. Shows what goes and asks first unless --yes."""
    from ..usecases.install import UninstallOptions, run_uninstall

    opts = UninstallOptions(manifest.options(), cluster.kubeconfig, cluster.context, delete_store, delete_key)
    report = run_uninstall(opts, lambda plan: _ask(plan, yes))
    render.warn(f"note: {n}" for n in report.notes)
    for o in report.deleted:
        render.out(f"{o.ref} deleted")
    for o in report.kept:
        render.out(f"{o.ref} kept: {o.reason}")
    if not report.deleted and not report.kept:
        render.note(f"nothing of kubectl-etcdbackup found in namespace {report.namespace}")


def _ask(plan: UninstallPlan, yes: bool) -> None:
    render.note(str(plan.target))
    if yes or not plan.delete:
        return
    for o in plan.delete:
        render.note(f"  delete {o.ref}")
    for o in plan.keep:
        render.note(f"  keep   {o.ref}: {o.reason}")
    if not sys.stdin.isatty():
        raise UsageError("not asking on a non-interactive input: pass --yes to uninstall")
    typer.confirm(f"delete {len(plan.delete)} object(s) in namespace {plan.namespace}?", abort=True, err=True)
