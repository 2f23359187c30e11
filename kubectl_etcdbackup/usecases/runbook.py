"""`restore --plan`: the runbook that restores every member of the cluster's etcd from one snapshot (read from the
etcd pod specs; nothing is changed)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import legacy_note
from ..defaults import APISERVER_SELECTOR, ETCD_NAMESPACE, ETCD_SELECTOR
from ..errors import UsageError
from ..k8s.runbook import DEFAULT_KEY_FILE, DEFAULT_MANIFESTS_DIR, Runbook, RunbookOptions, build_runbook
from ..keys import Keyring
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


@dataclass
class RunbookReport:
    book: Runbook
    written: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_runbook(req: RunbookRequest) -> RunbookReport:
    from ..k8s.api import connect
    from ..k8s.probe import etcd_members, pod_nodes

    kube = connect(req.source.kube.kubeconfig, req.source.kube.context)
    try:
        members = etcd_members(kube, req.etcd_namespace, req.etcd_selector)
        api_nodes = pod_nodes(kube, req.etcd_namespace, APISERVER_SELECTOR)
    finally:
        kube.close()
    with open_source(req.source) as src:
        snap = src.resolve(req.ref, req.keyring)
        cfg = src.cluster
        notes = [*src.notes, *legacy_note(snap)]
    spec = req.source
    aws_secret = next(iter({r.name for r in cfg.aws_secret_env.values()} | set(cfg.aws_env_from)), None) \
        if cfg else None
    opts = RunbookOptions(store_url=src.url, s3_endpoint_url=cfg.s3_endpoint_url if cfg else spec.s3_endpoint_url,
                          s3_region=cfg.s3_region if cfg else spec.s3_region, namespace=spec.kube.namespace,
                          key_secret=cfg.key_secret if cfg else None, aws_secret=aws_secret,
                          key_file=req.node_key_file, token=req.token, manifests_dir=req.manifests_dir)
    book = build_runbook(members, snap, api_nodes, opts)
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
