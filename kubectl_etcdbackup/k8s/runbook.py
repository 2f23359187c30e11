"""The runbook for restoring every member of an etcd cluster that runs Kubernetes (pure).

Input: the members as their pods describe them, the kube-apiserver nodes, the snapshot, the store. Output:
ordered steps (each with the exact shell lines per node) and one script per node whose phases are run in
the runbook's order on every node. Nothing here talks to a cluster or a node.

Order: get the key and the store access ready while the API still answers; stop every kube-apiserver; stop
every etcd member; restore each member's data dir (same snapshot id, same new token, the full
--initial-cluster, the old data dir moved aside); start etcd everywhere; wait until it is healthy; start
the kube-apiservers; verify.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..defaults import DEFAULT_NAMESPACE
from ..errors import UsageError
from ..manifest import SnapshotManifest
from ..restore_plan import default_token
from .etcd_pods import EtcdMember, initial_cluster
from .store_config import SecretRef

DEFAULT_MANIFESTS_DIR = "/etc/kubernetes/manifests"
DEFAULT_STASH_DIR = "/etc/kubernetes/etcdbackup-stopped"  # outside the manifests dir: the kubelet ignores it
DEFAULT_KEY_FILE = "/etc/kubernetes/etcdbackup.key"
DEFAULT_NODE_STORE_DIR = "/var/lib/etcdbackup-restore"
LOCAL_KEY_FILE = "etcdbackup.key"  # the operator's copy, in the current directory
LOCAL = ""  # "node" of the steps run on the operator's machine
NODE_PHASES = ("stop-apiserver", "stop-etcd", "restore", "start-etcd", "wait-etcd", "start-apiserver")


@dataclass(frozen=True)
class RunbookOptions:
    store_url: str
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    namespace: str = DEFAULT_NAMESPACE  # where the backup objects (and Secrets) are
    key_secret: SecretRef | None = None
    aws_secret: str | None = None  # Secret holding the S3 credentials the CronJob uses
    key_file: str = DEFAULT_KEY_FILE  # where the key is put on each node
    token: str | None = None  # default: restore-<snapshot id>
    manifests_dir: str = DEFAULT_MANIFESTS_DIR
    stash_dir: str = DEFAULT_STASH_DIR
    node_store_dir: str = DEFAULT_NODE_STORE_DIR  # file stores: where the snapshot is copied on each node
    wait_seconds: int = 300


@dataclass(frozen=True)
class Step:
    phase: str
    title: str
    commands: dict[str, list[str]]  # node (LOCAL: your machine) -> shell lines, in order
    note: str = ""


@dataclass
class Runbook:
    snapshot: SnapshotManifest
    store_url: str
    token: str
    initial_cluster: str
    members: list[EtcdMember]
    steps: list[Step]
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        s = self.snapshot
        return {
            "snapshot": {"id": s.id, "revision": s.etcd_revision, "created": s.created_at, "keys": s.key_count,
                         "verified": s.verified},
            "store": self.store_url, "token": self.token, "initial_cluster": self.initial_cluster,
            "members": [{"name": m.name, "node": m.node, "pod": m.pod, "data_dir": _host(m, m.data_dir),
                         "peer_urls": list(m.peer_urls)} for m in self.members],
            "steps": [{"phase": st.phase, "title": st.title, "commands": st.commands, "note": st.note}
                      for st in self.steps],
            "warnings": self.warnings,
        }

    def text(self) -> str:
        s = self.snapshot
        out = [f"Restore runbook: snapshot {s.id} (revision {s.etcd_revision}, created {s.created_at}, "
               f"{s.key_count} keys) from {self.store_url}",
               f"New cluster token (the same on every member): {self.token}", "Members (from the etcd pods):"]
        out += [f"  {m.name}  node {m.node}  data dir {_host(m, m.data_dir)}  peer {','.join(m.peer_urls)}"
                for m in self.members]
        for i, st in enumerate(self.steps, 1):
            out += ["", f"Step {i}. {st.title}" + (f"   [phase {st.phase}]" if st.phase in NODE_PHASES else "")]
            if st.note:
                out += [f"  # {line}" for line in st.note.splitlines()]
            for node, lines in st.commands.items():
                prefix = "  $ " if node == LOCAL else f"  [{node}] $ "
                out += [prefix + line for line in lines]
        out += [f"warning: {w}" for w in self.warnings]
        return "\n".join(out)

    def node_scripts(self) -> dict[str, str]:
        """One POSIX sh script per node: `sh <node>.sh <phase>`, phases run in the runbook's order."""
        nodes = sorted({n for st in self.steps for n in st.commands if n != LOCAL})
        return {node: self._script(node) for node in nodes}

    def _script(self, node: str) -> str:
        s = self.snapshot
        lines = ["#!/bin/sh",
                 f"# etcd restore, node {node}: snapshot {s.id} (revision {s.etcd_revision}) from {self.store_url}",
                 "# Run each phase on every node before the next phase, in this order (see README.txt):",
                 f"#   {' '.join(NODE_PHASES)}",
                 "set -eu", 'phase="${1:-}"', 'case "$phase" in']
        for phase in NODE_PHASES:
            body = [ln for st in self.steps if st.phase == phase for ln in st.commands.get(node, [])]
            lines.append(f"  {phase})")
            lines += [f"    {ln}" for ln in body] or [f"    echo 'nothing to do on {node} in phase {phase}'"]
            lines.append("    ;;")
        lines += [f'  *) echo "usage: sh $0 {"|".join(NODE_PHASES)}" >&2; exit 2 ;;', "esac",
                  f"echo \"{node}: phase $phase done\"", ""]
        return "\n".join(lines)


def _host(m: EtcdMember, path: str) -> str:
    return m.on_host(path) or path


def _q(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def _wait_gone(container: str, seconds: int) -> str:
    n = max(1, seconds // 2)
    return (f"n=0; while crictl ps -q --name '^{container}$' | grep -q .; do n=$((n+1)); "
            f"[ \"$n\" -lt {n} ] || {{ echo '{container} still running after {seconds}s' >&2; exit 1; }}; "
            "sleep 2; done")


def _move(src: str, dst: str) -> str:
    return f"mv {shlex.quote(src)} {shlex.quote(dst)}"


def write_private(path: str) -> str:
    """Shell: stdin -> `path`, created anew with mode 0600 (install unlinks an existing file, whatever its
    mode; umask 077 covers the moment before its chmod), never readable by other users."""
    return f"(umask 077 && install -m 600 /dev/stdin {shlex.quote(path)})"


def build_runbook(members: Sequence[EtcdMember], snapshot: SnapshotManifest, apiserver_nodes: Sequence[str],
                  opts: RunbookOptions) -> Runbook:
    """Ordered steps for a full restore of `members` from `snapshot` (an exact id, never 'latest')."""
    if not members:
        raise UsageError("no etcd members to restore")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise UsageError(f"etcd member names are not unique: {', '.join(names)}")
    warnings = [w for m in members for w in m.warnings]
    for m in members:
        if not m.node:
            raise UsageError(f"etcd pod {m.pod} is not scheduled on a node")
        if not m.static_pod:
            warnings.append(f"pod {m.pod} is not a static pod: stop and start member {m.name} the way it is run "
                            f"instead of moving {opts.manifests_dir}/etcd.yaml")
        if m.on_host(m.data_dir) is None:
            warnings.append(f"member {m.name}: data dir {m.data_dir} is not on a hostPath volume; the runbook uses "
                            "that path as the node's path")
    if not snapshot.verified:
        warnings.append(f"snapshot {snapshot.id} was never verified")
    etcd_nodes = list(dict.fromkeys(m.node for m in members))
    api_nodes = list(dict.fromkeys(apiserver_nodes))
    if not api_nodes:
        warnings.append("no kube-apiserver pods found; assuming the kube-apiservers run on the etcd nodes")
        api_nodes = etcd_nodes
    token = opts.token or default_token(snapshot.id)
    cluster = initial_cluster(members)
    stash, mdir = opts.stash_dir.rstrip("/"), opts.manifests_dir.rstrip("/")
    api_manifest, etcd_manifest = f"{mdir}/kube-apiserver.yaml", f"{mdir}/etcd.yaml"
    wait = opts.wait_seconds
    steps = [_prepare(snapshot, opts, etcd_nodes)]
    steps.append(Step("stop-apiserver", "Stop every kube-apiserver (nothing may write to etcd during the restore)",
                      {n: [f"mkdir -p {shlex.quote(stash)}", _move(api_manifest, f"{stash}/kube-apiserver.yaml"),
                           _wait_gone("kube-apiserver", wait)] for n in api_nodes}))
    steps.append(Step("stop-etcd", "Stop every etcd member",
                      {n: [f"mkdir -p {shlex.quote(stash)}", _move(etcd_manifest, f"{stash}/etcd.yaml"),
                           _wait_gone("etcd", wait)] for n in etcd_nodes}))
    store_args = ["--store", f"file://{opts.node_store_dir}" if opts.store_url.startswith("file:") else opts.store_url]
    if opts.s3_endpoint_url:
        store_args += ["--s3-endpoint-url", opts.s3_endpoint_url]
    if opts.s3_region:
        store_args += ["--s3-region", opts.s3_region]
    key_args = ["--encryption-key-file", opts.key_file] if snapshot.cipher != "none" else []
    restore: dict[str, list[str]] = {}
    for m in members:
        argv = ["kubectl-etcdbackup", "restore", snapshot.id, *store_args, *key_args, "--name", m.name,
                "--data-dir", _host(m, m.data_dir), "--initial-cluster", cluster,
                "--initial-advertise-peer-urls", ",".join(m.peer_urls), "--initial-cluster-token", token,
                "--move-aside"]
        if m.wal_dir:
            argv += ["--wal-dir", _host(m, m.wal_dir)]
        restore.setdefault(m.node, []).append(_q(argv))
    steps.append(Step("restore", "Restore every member's data dir from the same snapshot (fetch, verify and "
                      "decrypt happen inside; the old data dir is moved aside, never deleted)", restore))
    steps.append(Step("start-etcd", "Start etcd on every member",
                      {n: [_move(f"{stash}/etcd.yaml", etcd_manifest)] for n in etcd_nodes}))
    first = members[0]
    endpoints = ",".join(u for m in members for u in (m.advertise_client_urls or (m.client_url,)))
    health = _q(["etcdctl", f"--endpoints={endpoints}", *first.tls_args(on_host=True), "endpoint", "health"])
    steps.append(Step("wait-etcd", "Wait until every member is healthy", {first.node: [
        f"n=0; until ETCDCTL_API=3 {health}; do n=$((n+1)); [ \"$n\" -lt {max(1, wait // 5)} ] || "
        f"{{ echo 'etcd not healthy after {wait}s' >&2; exit 1; }}; sleep 5; done"]}))
    steps.append(Step("start-apiserver", "Start every kube-apiserver",
                      {n: [_move(f"{stash}/kube-apiserver.yaml", api_manifest)] for n in api_nodes}))
    steps.append(Step("verify", "Verify", {LOCAL: [
        "kubectl get --raw='/readyz?verbose'", "kubectl get nodes", "kubectl etcdbackup status"]},
        note=f"each member's revision must now be above {snapshot.etcd_revision} (plus the bump); restart "
             "controllers that still act on stale state"))
    return Runbook(snapshot, opts.store_url, token, cluster, list(members), steps, warnings)


def _prepare(snapshot: SnapshotManifest, opts: RunbookOptions, etcd_nodes: list[str]) -> Step:
    """What must be ready on the etcd nodes before anything stops (reading Secrets needs the API)."""
    lines: list[str] = []
    notes = [f"on every etcd node ({', '.join(etcd_nodes)}): kubectl-etcdbackup and etcdutl (matching the etcd "
             "version) on PATH; crictl and etcdctl for the wait loops"]
    if snapshot.cipher != "none":
        ref = opts.key_secret or SecretRef("etcd-backup-key", "key")
        key = ref.key.replace(".", "\\.")
        lines += [f"kubectl -n {shlex.quote(opts.namespace)} get secret {shlex.quote(ref.name)} "
                  f"-o jsonpath='{{.data.{key}}}' | base64 -d | {write_private(LOCAL_KEY_FILE)}"]
        lines += [f"ssh {shlex.quote(n)} {shlex.quote(write_private(opts.key_file))} < {LOCAL_KEY_FILE}"
                  for n in etcd_nodes]
        notes.append(f"the encryption key goes to {opts.key_file} (mode 0600, as root) on every etcd node; "
                     f"delete the local copy ({LOCAL_KEY_FILE}, mode 0600) afterwards")
    if opts.store_url.startswith("s3:"):
        src = f" (Secret {opts.aws_secret} in namespace {opts.namespace})" if opts.aws_secret else ""
        notes.append(f"every etcd node needs read access to {opts.store_url}: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
                     f"{src} in the environment of the restore phase, or an instance role")
    else:
        notes.append(f"the store {opts.store_url} is a volume in the cluster: copy {snapshot.id}.etcdbak and "
                     f"{snapshot.id}.json from it to {opts.node_store_dir}/ on every etcd node")
    return Step("prepare", "Prepare, while the cluster still answers (on your machine)", {LOCAL: lines} if lines
                else {}, "\n".join(notes))
