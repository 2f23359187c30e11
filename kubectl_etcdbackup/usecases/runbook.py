"""`restore --plan`: the runbook that restores every member of the cluster's etcd from one snapshot (read from the
etcd pod specs and the Nodes; kubeadm, k3s or RKE2, told from the nodes and pods or given; nothing is changed)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import legacy_note
from ..defaults import APISERVER_SELECTOR, ETCD_NAMESPACE, ETCD_SELECTOR
from ..errors import UsageError
from ..k8s.api import NoEtcdPods
from ..k8s.etcd_pods import DISTRIBUTIONS, KUBEADM, detect_distribution, etcd_servers
from ..k8s.runbook import DEFAULT_KEY_FILE, DEFAULT_MANIFESTS_DIR, Runbook, RunbookOptions, build_runbook
from ..keys import Keyring
from ..restore_plan import DEFAULT_BUMP_REVISION
from .source import SourceSpec, open_source


@dataclass(frozen=True)
class RunbookRequest:
    source: SourceSpec
    ref: str  # id or latest (resolved to an exact id: every member must restore the same snapshot)
    keyring: Keyring | None = None
    token: str | None = None
    node_key_file: str = DEFAULT_KEY_FILE
    manifests_dir: str = DEFAULT_MANIFESTS_DIR
    etcd_namespace: str = ETCD_NAMESPACE
    etcd_selector: str = ETCD_SELECTOR
    write_dir: str | None = None  # also write one script per node and README.txt here
    distribution: str | None = None  # kubeadm | k3s | rke2; None: told from the nodes and pods
    node_python: bool = False  # kubeadm: the nodes run `kubectl-etcdbackup restore` (Python 3.11 there)
    bump_revision: int = DEFAULT_BUMP_REVISION
    local_key_file: str | None = None  # the key file given here: the runbook's download uses it


@dataclass
class RunbookReport:
    book: Runbook
    written: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_runbook(req: RunbookRequest) -> RunbookReport:
    from ..k8s.api import connect
    from ..k8s.probe import etcd_pod_members, pod_nodes, server_nodes

    if req.distribution is not None and req.distribution not in DISTRIBUTIONS:
        raise UsageError(f"--distribution {req.distribution}: one of {', '.join(DISTRIBUTIONS)}")
    kube = connect(req.source.kube.kubeconfig, req.source.kube.context)
    try:
        members = etcd_pod_members(kube, req.etcd_namespace, req.etcd_selector)
        nodes, nodes_unread = server_nodes(kube)
        api_nodes = pod_nodes(kube, req.etcd_namespace, APISERVER_SELECTOR)
    finally:
        kube.close()
    dist, why = (req.distribution, "--distribution") if req.distribution else detect_distribution(nodes, members)
    if dist is None:
        unread = f"; the Nodes could not be read: {nodes_unread}" if nodes_unread else ""
        raise UsageError(f"cannot tell whether this cluster is kubeadm, k3s or RKE2 ({why}{unread}); "
                         "pass --distribution kubeadm|k3s|rke2")
    if dist == KUBEADM and not members:
        raise NoEtcdPods(f"no etcd pods with label {req.etcd_selector} in namespace {req.etcd_namespace} "
                         "(etcd outside Kubernetes? k3s? see --etcd-namespace / --etcd-selector / --distribution)")
    with open_source(req.source) as src:
        snap = src.resolve(req.ref, req.keyring)
        cfg = src.cluster
        notes = [*src.notes, *legacy_note(snap)]
    if nodes_unread and dist != KUBEADM:
        notes.append(f"cannot read the Nodes ({nodes_unread}): the etcd servers are taken from the etcd pods")
    spec = req.source
    aws_secret = next(iter({r.name for r in cfg.aws_secret_env.values()} | set(cfg.aws_env_from)), None) \
        if cfg else None
    opts = RunbookOptions(store_url=src.url, s3_endpoint_url=cfg.s3_endpoint_url if cfg else spec.s3_endpoint_url,
                          s3_region=cfg.s3_region if cfg else spec.s3_region, namespace=spec.kube.namespace,
                          key_secret=cfg.key_secret if cfg else None, aws_secret=aws_secret,
                          key_file=req.node_key_file, token=req.token, manifests_dir=req.manifests_dir,
                          distribution=dist, distribution_why=why, node_python=req.node_python,
                          bump_revision=req.bump_revision, local_key_file=req.local_key_file,
                          store_in_cluster=spec.store is None)
    servers = etcd_servers(nodes, members) if dist != KUBEADM else []
    book = build_runbook(members, snap, api_nodes, opts, servers)
    written = _write_scripts(book, Path(req.write_dir)) if req.write_dir else []
    return RunbookReport(book, written, notes)


def _write_scripts(book: Runbook, directory: Path) -> list[str]:
    written = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for node, script in book.node_scripts().items():
            path = directory / f"{node}.sh"
            path.write_text(script)
            os.chmod(path, 0o755)
            written.append(str(path))
        (directory / "README.txt").write_text(book.text() + "\n")
    except OSError as e:
        raise UsageError(f"--write-dir {directory}: {e.strerror or e}") from None
    return [*written, str(directory / "README.txt")]
