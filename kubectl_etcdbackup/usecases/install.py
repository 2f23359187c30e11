"""`manifests`, `install` and `uninstall`: the in-cluster objects from options (a values file with flags on top),
applied with server-side apply, or deleted again.

`uninstall` deletes what `install` creates (the objects `render_manifests` gives, matched by kind and name, and
only when their labels say kubectl-etcdbackup made them) but keeps the store (the PersistentVolumeClaim) and the
encryption key Secret unless asked: without them the snapshots, or the means to read them, are gone. The
Namespace goes only when nothing is kept in it (deleting a Namespace deletes everything in it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..defaults import DEFAULT_NAMESPACE
from ..errors import UsageError
from ..k8s.manifests import PART_OF, ManifestOptions, parse_store, pvc_name, render_manifests
from .cluster import Target, connected, target_of

if TYPE_CHECKING:
    from ..k8s.api import Kube

INSTANCE_LABEL = "app.kubernetes.io/instance"
PART_OF_LABEL = "app.kubernetes.io/part-of"


# ---------------------------------------------------------------------------------------- options
def manifest_options(values_file: str | None, flags: Mapping[str, Any]) -> ManifestOptions:
    """ManifestOptions from a YAML file of its fields (optional), with the flags that were given (not None) on
    top. `flags` maps ManifestOptions field names to values; `etcd_endpoints` may be one comma-separated string."""
    known = {f.name for f in dataclasses.fields(ManifestOptions)}
    values: dict[str, Any] = {}
    if values_file:
        try:
            loaded = yaml.safe_load(Path(values_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise UsageError(f"--values {values_file}: {getattr(e, 'strerror', None) or e}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--values {values_file}: must be a mapping of option names to values")
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise UsageError(f"--values {values_file}: unknown option(s) {', '.join(map(str, unknown))}")
        values.update(loaded)
    values.update({k: v for k, v in flags.items() if v is not None})
    if isinstance(values.get("etcd_endpoints"), str):
        values["etcd_endpoints"] = [e.strip() for e in values["etcd_endpoints"].split(",") if e.strip()]
    values.setdefault("namespace", DEFAULT_NAMESPACE)
    return ManifestOptions(**values)


def key_secret(opts: ManifestOptions, key: str) -> dict[str, Any]:
    """The encryption key Secret `install --generate-key` creates."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": opts.key_secret, "namespace": opts.namespace,
                         "labels": {PART_OF_LABEL: PART_OF}},
            "stringData": {opts.key_secret_key: key}}


def ref(obj: Mapping[str, Any]) -> str:
    """kind/name, as kubectl prints it."""
    return f"{obj['kind'].lower()}/{obj['metadata']['name']}"


# ---------------------------------------------------------------------------------------- install
@dataclass(frozen=True)
class InstallOptions:
    manifest: ManifestOptions
    kubeconfig: str | None = None
    context: str | None = None
    generate_key: bool = False  # create the key Secret with a new key when it does not exist (never replaced)


@dataclass
class InstallReport:
    target: Target
    applied: list[tuple[str, str]] = field(default_factory=list)  # (kind/name, created|configured|unchanged)
    key: str = "present"  # present | created | missing


def run_install(opts: InstallOptions, before_changes: Callable[[Target], None] = lambda _t: None) -> InstallReport:
    """Apply every object (server-side apply, forced); idempotent. `before_changes` is told which cluster once it
    has answered, before the first change."""
    from ..k8s.api import NotFound
    from ..keys import generate_key

    m = opts.manifest
    objs = render_manifests(m)  # invalid options fail here, before any connection
    with connected(opts.kubeconfig, opts.context) as kube:
        before = [kube.get_object(o) for o in objs]
        report = InstallReport(target_of(kube))
        before_changes(report.target)
        for obj, prev in zip(objs, before, strict=True):
            try:
                after = kube.apply(obj)
            except NotFound:
                raise UsageError(f"namespace {m.namespace} does not exist (install creates it unless "
                                 "--no-create-namespace)") from None
            same = prev is not None and prev["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]
            report.applied.append((ref(obj), "created" if prev is None else "unchanged" if same else "configured"))
        if not kube.secret_exists(m.namespace, m.key_secret):
            if opts.generate_key:
                kube.create_secret(m.namespace, key_secret(m, generate_key()))
                report.key = "created"
            else:
                report.key = "missing"
    return report


# ---------------------------------------------------------------------------------------- uninstall
KEEP_STORE = "the store of the snapshots (--delete-store deletes it)"
KEEP_KEY = "the encryption key; restores need it (--delete-key deletes it)"
NOT_OURS = "not made by kubectl-etcdbackup (its labels say otherwise)"


@dataclass(frozen=True)
class UninstallOptions:
    manifest: ManifestOptions  # the options install was given: they name the objects
    kubeconfig: str | None = None
    context: str | None = None
    delete_store: bool = False  # also the PersistentVolumeClaim holding the snapshots
    delete_key: bool = False  # also the encryption key Secret


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    name: str
    namespace: str | None
    reason: str = ""  # why it is kept

    @property
    def ref(self) -> str:
        return f"{self.kind.lower()}/{self.name}"


@dataclass
class UninstallPlan:
    target: Target
    namespace: str
    delete: list[ObjectRef] = field(default_factory=list)  # in deletion order (the Namespace last)
    keep: list[ObjectRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class UninstallReport:
    target: Target
    namespace: str
    deleted: list[ObjectRef] = field(default_factory=list)
    kept: list[ObjectRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_uninstall(opts: UninstallOptions,
                  before_changes: Callable[[UninstallPlan], None] = lambda _p: None) -> UninstallReport:
    """Delete what install created. `before_changes` gets the plan (which cluster, what goes, what stays) before
    anything is deleted: it may raise to stop (e.g. when the operator says no)."""
    candidates = _candidates(opts.manifest)
    with connected(opts.kubeconfig, opts.context) as kube:
        plan = _plan(kube, opts, candidates)
        before_changes(plan)
        report = UninstallReport(plan.target, plan.namespace, kept=list(plan.keep), notes=list(plan.notes))
        by_ref = {(o["kind"], o["metadata"]["name"]): o for o in candidates}
        for item in plan.delete:
            _delete(kube, by_ref[(item.kind, item.name)])
            report.deleted.append(item)
    return report


def _candidates(opts: ManifestOptions) -> list[dict[str, Any]]:
    """Every object install may have made with these options (the optional ones too: the exporter and the
    operator Role and RoleBinding), then the key Secret."""
    every = dataclasses.replace(opts, exporter_enabled=True, operator_role=True, operator_subjects=(
        opts.operator_subjects or [{"kind": "Group", "name": "-", "apiGroup": "rbac.authorization.k8s.io"}]))
    return [*render_manifests(every), key_secret(opts, "")]


def _plan(kube: Kube, opts: UninstallOptions, candidates: list[dict[str, Any]]) -> UninstallPlan:
    m = opts.manifest
    plan = UninstallPlan(target_of(kube), m.namespace)
    store = parse_store(m.store)
    if opts.delete_store and store.type == "s3":
        plan.notes.append(f"the store {store.url} is not in the cluster: --delete-store deletes only a "
                          "PersistentVolumeClaim; the bucket is not touched")
    elif opts.delete_store and not m.pvc_create:
        plan.notes.append(f"PersistentVolumeClaim {pvc_name(m)} was not made by install (pvc_create is false): "
                          "not deleted")
    namespace = None
    for obj in reversed(candidates[:-1]):
        live = kube.get_object(obj)
        if live is None:
            continue
        item = ObjectRef(obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace"))
        labels = live["metadata"].get("labels") or {}
        if obj["kind"] == "Namespace":
            namespace = (item, labels)
        elif labels.get(PART_OF_LABEL) != PART_OF or labels.get(INSTANCE_LABEL) != m.name:
            plan.keep.append(dataclasses.replace(item, reason=NOT_OURS))
        elif obj["kind"] == "PersistentVolumeClaim" and not opts.delete_store:
            plan.keep.append(dataclasses.replace(item, reason=KEEP_STORE))
        else:
            plan.delete.append(item)
    key = candidates[-1]
    if kube.get_object(key) is not None:
        item = ObjectRef("Secret", m.key_secret, m.namespace)
        (plan.delete if opts.delete_key else plan.keep).append(
            item if opts.delete_key else dataclasses.replace(item, reason=KEEP_KEY))
    if namespace is not None:
        item, labels = namespace
        why = _keep_namespace(kube, m, plan, labels)
        (plan.keep if why else plan.delete).append(dataclasses.replace(item, reason=why))
    return plan


def _keep_namespace(kube: Kube, m: ManifestOptions, plan: UninstallPlan, labels: Mapping[str, str]) -> str:
    """Why the Namespace stays ("" when it goes): deleting it would delete everything in it."""
    from ..k8s.cluster_store import CRONJOB_SELECTOR

    if labels.get(PART_OF_LABEL) != PART_OF:
        return NOT_OURS
    if plan.keep:
        return "it holds what is kept"
    if m.s3_existing_secret:
        return f"it holds Secret {m.s3_existing_secret}, which install did not make"
    others = sorted(n for c in kube.list_cronjobs(m.namespace, CRONJOB_SELECTOR)
                    if (n := c["metadata"]["name"]) != m.name)
    return f"it holds other backup CronJobs ({', '.join(others)})" if others else ""


def _delete(kube: Kube, obj: dict[str, Any]) -> None:
    """Delete one object and, in the background, what it owns (a CronJob's Jobs and their pods); gone already
    counts as deleted."""
    from ..k8s.api import NotFound

    # Kube has get_object/apply but no generic delete yet: this uses its path resolution and error mapping.
    path, plural, namespace = kube._path(obj)
    try:
        with kube.calling("delete", plural, namespace, obj["metadata"]["name"]):
            kube._request("DELETE", path, [("propagationPolicy", "Background")])
    except NotFound:
        pass
