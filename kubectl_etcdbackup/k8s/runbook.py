"""The runbook for restoring every member of an etcd cluster that runs Kubernetes (pure).

Input: the members as their pods describe them (kubeadm, RKE2) or the servers as their Node objects describe them
(k3s, RKE2), the kube-apiserver nodes, the snapshot, the store. Output: ordered steps (each with the exact shell
lines per node and how to verify it) and one script per node whose phases are run in the runbook's order on every
node. Nothing here talks to a cluster or a node.

kubeadm (default): the snapshot is fetched, authenticated, decrypted and checked on the operator's machine
(`snapshot download`, a plain 0600 db), copied to each etcd node (0600) and checked there again; the nodes need
no Python and no etcdutl: `ctr` runs the etcdutl of the etcd image the node already has. Order: stop every
kube-apiserver; stop every etcd member; restore each member's data dir into a staging dir (same snapshot, same new
token, the full --initial-cluster), move the old data dir aside (never deleted) and swap the staged one in; start
etcd everywhere; wait until it is healthy; start the kube-apiservers; verify. With `node_python` each node runs
`kubectl-etcdbackup restore` instead (Python >= 3.11 and this tool there; the key goes to the nodes).

k3s and RKE2 (their documented procedure, with the old db moved aside rather than deleted): stop the server on
every server node; on the first server `k3s|rke2 server --cluster-reset --cluster-reset-restore-path=<db>`; start
it; move the db dir of the other servers aside; start them so they rejoin.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..defaults import DEFAULT_NAMESPACE
from ..errors import UsageError
from ..manifest import SnapshotManifest
from ..output import human_bytes
from ..restore_plan import DEFAULT_BUMP_REVISION, default_token
from .etcd_pods import DEFAULT_DATA_DIRS, K3S, KUBEADM, RKE2, EtcdMember, ServerNode, initial_cluster, parse_version
from .store_config import SecretRef

DEFAULT_MANIFESTS_DIR = "/etc/kubernetes/manifests"
DEFAULT_STASH_DIR = "/etc/kubernetes/etcdbackup-stopped"  # outside the manifests dir: the kubelet ignores it
DEFAULT_KEY_FILE = "/etc/kubernetes/etcdbackup.key"
DEFAULT_NODE_STORE_DIR = "/var/lib/etcdbackup-restore"
LOCAL_KEY_FILE = "etcdbackup.key"  # the operator's copy, in the current directory
LOCAL = ""  # "node" of the steps run on the operator's machine
NODE_PHASES = ("stop-apiserver", "stop-etcd", "restore", "start-etcd", "wait-etcd", "start-apiserver")  # kubeadm
SERVER_PHASES = ("stop-server", "restore", "start-first", "wait-first", "start-others", "wait-all")  # k3s, RKE2
BUMP_MIN_VERSION = (3, 5, 10)  # etcdutl snapshot restore --bump-revision/--mark-compacted (etcd-io/etcd#16165)
WAL_BYTES = 64 << 20  # the first WAL file etcdutl preallocates beside the restored db
CTR = "ctr -n k8s.io"  # containerd's CLI, in the namespace the kubelet's containers and images live in


@dataclass(frozen=True)
class Distribution:
    name: str
    service: str  # systemd unit of the server
    binary: str
    kubectl: str  # kubectl as the server node has it
    supervisor_port: int  # what `server:` of a joining server points at


SERVER_DISTRIBUTIONS = {
    K3S: Distribution(K3S, "k3s", "k3s", "k3s kubectl", 6443),
    RKE2: Distribution(RKE2, "rke2-server", "rke2",
                       "/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml", 9345),
}


@dataclass(frozen=True)
class RunbookOptions:
    store_url: str
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    namespace: str = DEFAULT_NAMESPACE  # where the backup objects (and Secrets) are
    key_secret: SecretRef | None = None
    aws_secret: str | None = None  # Secret holding the S3 credentials the CronJob uses
    key_file: str = DEFAULT_KEY_FILE  # node_python: where the key is put on each node
    token: str | None = None  # default: restore-<snapshot id>
    manifests_dir: str = DEFAULT_MANIFESTS_DIR
    stash_dir: str = DEFAULT_STASH_DIR
    node_store_dir: str = DEFAULT_NODE_STORE_DIR  # where the snapshot goes on each node
    wait_seconds: int = 300
    distribution: str = KUBEADM
    distribution_why: str = ""  # the evidence, shown in the runbook
    node_python: bool = False  # kubeadm: run `kubectl-etcdbackup restore` on the nodes instead of ctr + etcdutl
    bump_revision: int = DEFAULT_BUMP_REVISION
    local_key_file: str | None = None  # the operator's key file when given to --plan; else read from the Secret
    store_in_cluster: bool = False  # the store is the installed CronJob's (no --store was given)


@dataclass(frozen=True)
class Step:
    phase: str
    title: str
    commands: dict[str, list[str]]  # node (LOCAL: your machine) -> shell lines, in order
    note: str = ""
    verify: str = ""  # how to check that the step did what it should


@dataclass
class Runbook:
    snapshot: SnapshotManifest
    store_url: str
    token: str
    initial_cluster: str
    members: list[EtcdMember]
    steps: list[Step]
    warnings: list[str] = field(default_factory=list)
    distribution: str = KUBEADM
    phases: tuple[str, ...] = NODE_PHASES
    servers: list[str] = field(default_factory=list)  # k3s/RKE2: the etcd servers, the first one first
    checks: list[str] = field(default_factory=list)  # what was checked while planning
    distribution_why: str = ""

    def as_dict(self) -> dict[str, Any]:
        s = self.snapshot
        return {
            "snapshot": {"id": s.id, "revision": s.etcd_revision, "created": s.created_at, "keys": s.key_count,
                         "verified": s.verified, "etcd_version": s.etcd_version, "raw_size": s.raw_size,
                         "raw_sha256": s.raw_sha256},
            "distribution": self.distribution, "distribution_from": self.distribution_why,
            "store": self.store_url, "token": self.token, "initial_cluster": self.initial_cluster,
            "members": [{"name": m.name, "node": m.node, "pod": m.pod, "data_dir": _host(m, m.data_dir),
                         "peer_urls": list(m.peer_urls), "image": m.image} for m in self.members],
            "servers": self.servers, "phases": list(self.phases), "checks": self.checks,
            "steps": [{"phase": st.phase, "title": st.title, "commands": st.commands, "note": st.note,
                       "verify": st.verify} for st in self.steps],
            "warnings": self.warnings,
        }

    def text(self) -> str:
        s = self.snapshot
        out = [f"Restore runbook: snapshot {s.id} (revision {s.etcd_revision}, created {s.created_at}, "
               f"{s.key_count} keys, etcd {s.etcd_version or 'unknown'}, {human_bytes(s.raw_size)}) "
               f"from {self.store_url}",
               f"Distribution: {self.distribution}" + (f" ({self.distribution_why})" if self.distribution_why else "")]
        if self.distribution == KUBEADM:
            out += [f"New cluster token (the same on every member): {self.token}", "Members (from the etcd pods):"]
            out += [f"  {m.name}  node {m.node}  data dir {_host(m, m.data_dir)}  peer {','.join(m.peer_urls)}"
                    + (f"  image {m.image}" if m.image else "") for m in self.members]
        else:
            out += [f"Servers running etcd: {', '.join(self.servers)} (the restore runs on {self.servers[0]})"]
        if self.checks:
            out += ["Checked while planning:"] + [f"  {c}" for c in self.checks]
        for i, st in enumerate(self.steps, 1):
            out += ["", f"Step {i}. {st.title}" + (f"   [phase {st.phase}]" if st.phase in self.phases else "")]
            if st.note:
                out += [f"  # {line}" for line in st.note.splitlines()]
            for node, lines in st.commands.items():
                prefix = "  $ " if node == LOCAL else f"  [{node}] $ "
                out += [prefix + line for line in lines]
            if st.verify:
                out += [f"  verify: {line}" for line in st.verify.splitlines()]
        out += [f"warning: {w}" for w in self.warnings]
        return "\n".join(out)

    def node_scripts(self) -> dict[str, str]:
        """One POSIX sh script per node: `sh <node>.sh <phase>`, phases run in the runbook's order."""
        nodes = sorted({n for st in self.steps if st.phase in self.phases for n in st.commands if n != LOCAL})
        return {node: self._script(node) for node in nodes}

    def _script(self, node: str) -> str:
        s = self.snapshot
        lines = ["#!/bin/sh",
                 f"# etcd restore ({self.distribution}), node {node}: snapshot {s.id} (revision {s.etcd_revision}) "
                 f"from {self.store_url}",
                 "# Run each phase on every node before the next phase, in this order (see README.txt):",
                 f"#   {' '.join(self.phases)}",
                 "set -eu", 'phase="${1:-}"', 'case "$phase" in']
        for phase in self.phases:
            body = [ln for st in self.steps if st.phase == phase for ln in st.commands.get(node, [])]
            lines.append(f"  {phase})")
            lines += [f"    {ln}" for ln in body] or [f"    echo 'nothing to do on {node} in phase {phase}'"]
            lines.append("    ;;")
        lines += [f'  *) echo "usage: sh $0 {"|".join(self.phases)}" >&2; exit 2 ;;', "esac",
                  f"echo \"{node}: phase $phase done\"", ""]
        return "\n".join(lines)


def _host(m: EtcdMember, path: str) -> str:
    return m.on_host(path) or path


def _q(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def _version(v: tuple[int, int, int] | None) -> str:
    return ".".join(map(str, v)) if v else "unknown"


def _until(test: str, what: str, seconds: int, interval: int = 1) -> str:
    """Shell: retry `test` every `interval` s until it succeeds; fail after `seconds`."""
    n = max(1, seconds // interval)
    return (f"n=0; until {test}; do n=$((n+1)); [ \"$n\" -lt {n} ] || {{ echo '{what} after {seconds}s' >&2; "
            f"exit 1; }}; sleep {interval}; done")


def _wait_gone(container: str, seconds: int) -> str:
    return _until(f"! crictl ps -q --name '^{container}$' | grep -q .", f"{container} still running", seconds)


def _move(src: str, dst: str) -> str:
    return f"mv {shlex.quote(src)} {shlex.quote(dst)}"


def _stamped(var: str, prefix: str) -> str:
    """Shell: var=<prefix>$stamp (prefix quoted, the stamp set earlier in the same phase)."""
    return f"{var}={shlex.quote(prefix)}\"$stamp\""


STAMP = "stamp=$(date -u +%Y%m%dT%H%M%SZ)"


def write_private(path: str) -> str:
    """Shell: stdin -> `path`, created anew with mode 0600 (install unlinks an existing file, whatever its
    mode; umask 077 covers the moment before its chmod), never readable by other users."""
    return f"(umask 077 && install -m 600 /dev/stdin {shlex.quote(path)})"


def _free_space(directory: str, need: int) -> str:
    """Shell: fail unless `directory`'s file system has `need` bytes free (POSIX df, KiB)."""
    kib = -(-need // 1024)
    d = shlex.quote(directory)
    return (f"avail=$(df -Pk {d} | awk 'NR==2 {{print $4}}'); [ \"$avail\" -ge {kib} ] || "
            f"{{ echo \"{directory}: $avail KiB free, the restore needs {kib} KiB\" >&2; exit 1; }}")


def _check_sha(snapshot: SnapshotManifest, path: str) -> str:
    return f"echo {shlex.quote(f'{snapshot.raw_sha256}  {path}')} | sha256sum -c -"


def _node_db(snapshot: SnapshotManifest, opts: RunbookOptions) -> str:
    return f"{opts.node_store_dir.rstrip('/')}/{snapshot.id}.db"


def _ctr_run(image: str, name: str, mounts: Sequence[tuple[str, bool]], argv: Sequence[str],
             env: Sequence[str] = ()) -> str:
    """Shell: run `argv` in a throwaway container of `image` (host network, the host paths bind-mounted at the
    same paths; a path given as "$var" is expanded by the shell)."""
    parts = [f"{CTR} run --rm --net-host"] + [f"--env {shlex.quote(e)}" for e in env]
    for src, rw in mounts:
        spec = f"type=bind,src={src},dst={src},options=rbind:{'rw' if rw else 'ro'}"
        parts.append(f"--mount \"{spec}\"" if "$" in src else f"--mount {shlex.quote(spec)}")
    parts += [shlex.quote(image), shlex.quote(name)]
    parts += [a if a.startswith('"$') else shlex.quote(a) for a in argv]
    return " ".join(parts)


# ------------------------------------------------------------------------------------------------ planning
def _image_checks(members: Sequence[EtcdMember], snapshot: SnapshotManifest, bump: int, ctr_restore: bool,
                  checks: list[str], warnings: list[str]) -> None:
    """The etcd images and versions from the pods against the snapshot's etcd version and the flags used."""
    images = sorted({m.image for m in members if m.image})
    if not images:
        (warnings if ctr_restore else checks).append("the etcd pods name no image" + (
            ": cannot restore with the image's etcdutl; use --node-python" if ctr_restore else ""))
        return
    checks.append(f"etcd image{'s' if len(images) > 1 else ''} from the pods: {', '.join(images)}")
    if len(images) > 1:
        warnings.append(f"the etcd pods run different images ({', '.join(images)}): an upgrade in progress? each "
                        "node restores with its own image")
    snap_v = parse_version(snapshot.etcd_version)
    for image in images:
        img_v = next(m.image_version for m in members if m.image == image)
        if img_v is None:
            warnings.append(f"cannot tell etcd's version from the image tag of {image}")
            continue
        if snap_v is None:
            warnings.append(f"the snapshot does not record its etcd version; the image has {_version(img_v)}")
        elif snap_v[:2] > img_v[:2]:
            warnings.append(f"the snapshot comes from etcd {snapshot.etcd_version}, newer than the image's etcd "
                            f"{_version(img_v)}: its etcdutl may not restore it (and an older etcd should not run "
                            "a newer etcd's data)")
        else:
            checks.append(f"snapshot etcd {snapshot.etcd_version} vs image {image} (etcd {_version(img_v)}): ok")
        if ctr_restore and img_v < (3, 5, 0):
            checks.append(f"etcd {_version(img_v)} has no etcdutl: {image} restores with `etcdctl snapshot restore`")
        if ctr_restore and bump and img_v < BUMP_MIN_VERSION:
            warnings.append(f"etcd {_version(img_v)} ({image}) has no --bump-revision/--mark-compacted (etcdutl "
                            f"{_version(BUMP_MIN_VERSION)}+): pass --bump-revision 0, then restart every "
                            "kube-apiserver and controller after the restore")


def _space_check(snapshot: SnapshotManifest, opts: RunbookOptions, beside: str, checks: list[str]) -> None:
    checks.append(f"free space: {human_bytes(snapshot.raw_size)} (the snapshot) in {opts.node_store_dir}, and about "
                  f"{human_bytes(snapshot.raw_size + WAL_BYTES)} beside {beside} (the restored db + its first WAL "
                  "file; each node checks this before it restores)")


def build_runbook(members: Sequence[EtcdMember], snapshot: SnapshotManifest, apiserver_nodes: Sequence[str],
                  opts: RunbookOptions, servers: Sequence[ServerNode] = ()) -> Runbook:
    """Ordered steps for a full restore of `members` (kubeadm, RKE2) or `servers` (k3s, RKE2) from `snapshot`
    (an exact id, never 'latest'), by `opts.distribution`'s procedure."""
    if opts.distribution in SERVER_DISTRIBUTIONS:
        return _build_server_runbook(members, servers, snapshot, opts)
    if opts.distribution != KUBEADM:
        raise UsageError(f"unknown distribution {opts.distribution!r} (kubeadm, k3s or rke2)")
    if opts.bump_revision < 0:
        raise UsageError("--bump-revision must not be negative")
    if not members:
        raise UsageError("no etcd members to restore")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise UsageError(f"etcd member names are not unique: {', '.join(names)}")
    warnings = [w for m in members for w in m.warnings]
    checks: list[str] = []
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
    _image_checks(members, snapshot, opts.bump_revision, not opts.node_python, checks, warnings)
    if not opts.node_python:
        _space_check(snapshot, opts, "each data dir", checks)
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
    steps = [_prepare_python(snapshot, opts, etcd_nodes) if opts.node_python else
             _prepare_local(snapshot, opts, etcd_nodes, ctr_tools=True)]
    steps.append(Step("stop-apiserver", "Stop every kube-apiserver (nothing may write to etcd during the restore)",
                      {n: [f"mkdir -p {shlex.quote(stash)}", _move(api_manifest, f"{stash}/kube-apiserver.yaml"),
                           _wait_gone("kube-apiserver", wait)] for n in api_nodes},
                      verify="crictl ps --name '^kube-apiserver$' lists nothing (the loop waits for that); kubectl "
                             "stops answering"))
    steps.append(Step("stop-etcd", "Stop every etcd member",
                      {n: [f"mkdir -p {shlex.quote(stash)}", _move(etcd_manifest, f"{stash}/etcd.yaml"),
                           _wait_gone("etcd", wait)] for n in etcd_nodes},
                      verify="crictl ps --name '^etcd$' lists nothing on any etcd node (the loop waits for that)"))
    restore: dict[str, list[str]] = {}
    for m in members:
        lines = (_restore_python(m, snapshot, opts, token, cluster) if opts.node_python else
                 _restore_ctr(m, snapshot, opts, token, cluster))
        restore.setdefault(m.node, []).extend(lines)
    if opts.node_python:
        title, how = ("Restore every member's data dir from the same snapshot (fetch, verify and decrypt happen "
                      "inside; the old data dir is moved aside, never deleted)",
                      "each node prints restored/moved_aside_to; ls -ld <data dir> <data dir>.before-restore-*")
    else:
        title, how = ("Restore every member's data dir from the same snapshot with the etcd image's etcdutl (into a "
                      "staging dir; the old data dir is moved aside, never deleted, and the staged one swapped in)",
                      "sha256sum -c checks the node's copy first; afterwards ls -ld <data dir> "
                      "<data dir>.before-restore-*: the restored dir holds member/snap/db (tested by the last "
                      "line), the old one is kept")
    steps.append(Step("restore", title, restore, verify=how))
    steps.append(Step("start-etcd", "Start etcd on every member",
                      {n: [_move(f"{stash}/etcd.yaml", etcd_manifest)] for n in etcd_nodes},
                      verify="crictl ps --name '^etcd$' shows it Running on every etcd node"))
    steps.append(_wait_etcd(members, snapshot, opts))
    steps.append(Step("start-apiserver", "Start every kube-apiserver",
                      {n: [_move(f"{stash}/kube-apiserver.yaml", api_manifest)] for n in api_nodes},
                      verify="crictl ps --name '^kube-apiserver$' shows it Running; kubectl answers again"))
    bump = opts.bump_revision
    steps.append(Step("verify", "Verify", {LOCAL: [
        "kubectl get --raw='/readyz?verbose'", "kubectl get nodes", "kubectl etcdbackup status"]},
        note=(f"each member's revision must now be above {snapshot.etcd_revision}"
              + (f" + {bump} (the bump)" if bump else "") + "; restart controllers that still act on stale state"
              + ("" if bump else "; without a revision bump restart every kube-apiserver and controller")
              + (f"\nthen delete {snapshot.id}.db (and {LOCAL_KEY_FILE}) here and "
                 f"{_node_db(snapshot, opts)} on the nodes" if not opts.node_python else ""))))
    return Runbook(snapshot, opts.store_url, token, cluster, list(members), steps, warnings, KUBEADM, NODE_PHASES,
                   checks=checks, distribution_why=opts.distribution_why)


def _restore_python(m: EtcdMember, snapshot: SnapshotManifest, opts: RunbookOptions, token: str,
                    cluster: str) -> list[str]:
    store_args = ["--store", f"file://{opts.node_store_dir}" if opts.store_url.startswith("file:") else opts.store_url]
    if opts.s3_endpoint_url:
        store_args += ["--s3-endpoint-url", opts.s3_endpoint_url]
    if opts.s3_region:
        store_args += ["--s3-region", opts.s3_region]
    key_args = ["--encryption-key-file", opts.key_file] if snapshot.cipher != "none" else []
    argv = ["kubectl-etcdbackup", "restore", snapshot.id, *store_args, *key_args, "--name", m.name,
            "--data-dir", _host(m, m.data_dir), "--initial-cluster", cluster,
            "--initial-advertise-peer-urls", ",".join(m.peer_urls), "--initial-cluster-token", token,
            "--move-aside"]
    if m.wal_dir:
        argv += ["--wal-dir", _host(m, m.wal_dir)]
    if opts.bump_revision != DEFAULT_BUMP_REVISION:
        argv += ["--bump-revision", str(opts.bump_revision)]
    return [_q(argv)]


def _restore_ctr(m: EtcdMember, snapshot: SnapshotManifest, opts: RunbookOptions, token: str,
                 cluster: str) -> list[str]:
    """Check the copy, check the space, etcdutl (from the image, in a throwaway container) into a staging dir
    beside the data dir, move the old dir aside, swap the staged one in."""
    db = _node_db(snapshot, opts)
    data = _host(m, m.data_dir).rstrip("/")
    old_v = m.image_version is not None and m.image_version < (3, 5, 0)
    tool, env = (["etcdctl"], ["ETCDCTL_API=3"]) if old_v else (["etcdutl"], [])
    argv = [*tool, "snapshot", "restore", db, "--name", m.name, "--initial-cluster", cluster,
            "--initial-cluster-token", token, "--initial-advertise-peer-urls", ",".join(m.peer_urls),
            "--data-dir", '"$staging/data"']
    if m.wal_dir:
        argv += ["--wal-dir", '"$staging/wal"']
    if opts.bump_revision:
        argv += ["--bump-revision", str(opts.bump_revision), "--mark-compacted"]
    image = m.image or "<the etcd image>"
    lines = [_check_sha(snapshot, db), _free_space(posixpath.dirname(data) or "/", snapshot.raw_size + WAL_BYTES),
             STAMP, _stamped("staging", f"{data}.restoring-"), 'mkdir -m 700 "$staging"',
             f"{CTR} images ls -q | grep -qxF {shlex.quote(image)} || {CTR} images pull {shlex.quote(image)}",
             _ctr_run(image, f"etcdbackup-restore-{m.name}",
                      [(posixpath.dirname(db), False), ("$staging", True)], argv, env),
             f"if [ -e {shlex.quote(data)} ]; then mv {shlex.quote(data)} {shlex.quote(data + '.before-restore-')}"
             "\"$stamp\"; fi",
             f"mv \"$staging/data\" {shlex.quote(data)}"]
    if m.wal_dir:
        wal = _host(m, m.wal_dir).rstrip("/")
        lines += [f"if [ -e {shlex.quote(wal)} ]; then mv {shlex.quote(wal)} {shlex.quote(wal + '.before-restore-')}"
                  "\"$stamp\"; fi", f"mv \"$staging/wal\" {shlex.quote(wal)}"]
    lines += ['rmdir "$staging"', f"test -f {shlex.quote(data + '/member/snap/db')}"]
    return lines


def _wait_etcd(members: Sequence[EtcdMember], snapshot: SnapshotManifest, opts: RunbookOptions) -> Step:
    first = members[0]
    endpoints = ",".join(u for m in members for u in (m.advertise_client_urls or (m.client_url,)))
    tls = first.tls_args(on_host=True)
    wait = opts.wait_seconds
    etcdctl = ["etcdctl", f"--endpoints={endpoints}", *tls]
    if opts.node_python:
        health = "ETCDCTL_API=3 " + _q([*etcdctl, "endpoint", "health"])
        status = "ETCDCTL_API=3 " + _q([*etcdctl, "endpoint", "status", "-w", "table"])
    else:  # etcdctl from the image: nothing to install on the node
        dirs = sorted({posixpath.dirname(a.split("=", 1)[1]) for a in tls})

        def run(*cmd: str) -> str:
            return _ctr_run(first.image or "<the etcd image>", f"etcdbackup-check-{first.name}",
                            [(d, False) for d in dirs], [*etcdctl, *cmd], ["ETCDCTL_API=3"])

        health, status = run("endpoint", "health"), run("endpoint", "status", "-w", "table")
    bump = opts.bump_revision
    return Step("wait-etcd", "Wait until every member is healthy", {first.node: [
        _until(health, "etcd not healthy", wait, 2), status]},
        verify=f"endpoint health: every endpoint is healthy; endpoint status: one leader, the same RAFT TERM "
               f"everywhere, REVISION above {snapshot.etcd_revision}" + (f" + {bump}" if bump else ""))


def _download(snapshot: SnapshotManifest, opts: RunbookOptions, key_path: str | None) -> tuple[list[str], list[str]]:
    """The operator's `snapshot download` line (and what to do first)."""
    notes: list[str] = []
    if not opts.store_in_cluster:
        store = ["--store", opts.store_url] + (["--s3-endpoint-url", opts.s3_endpoint_url] if opts.s3_endpoint_url
                                               else []) + (["--s3-region", opts.s3_region] if opts.s3_region else [])
        store_text = _q(store)
    elif opts.store_url.startswith("s3:"):
        store_text = _q(["-n", opts.namespace])  # the cluster's S3 store, opened from here
    else:
        store_text = '--store "file://$PWD/etcd-backup-store"'
        notes.append(f"the store {opts.store_url} is a volume in the cluster: first copy {snapshot.id}.etcdbak and "
                     f"{snapshot.id}.json out of it (e.g. kubectl cp from the exporter pod) into ./etcd-backup-store")
    key = f" --encryption-key-file {shlex.quote(key_path)}" if key_path else ""
    line = f"kubectl etcdbackup snapshot download {shlex.quote(snapshot.id)} {store_text}{key} -f {snapshot.id}.db"
    return [line, _check_sha(snapshot, f"{snapshot.id}.db")], notes


def _key_lines(snapshot: SnapshotManifest, opts: RunbookOptions, lines: list[str], notes: list[str]) -> str | None:
    """The operator's key: the file given to --plan, else read from the cluster's Secret into ./etcdbackup.key."""
    if snapshot.cipher == "none":
        return None
    if opts.local_key_file:
        return opts.local_key_file
    ref = opts.key_secret or SecretRef("etcd-backup-key", "key")
    key = ref.key.replace(".", "\\.")
    lines.append(f"kubectl -n {shlex.quote(opts.namespace)} get secret {shlex.quote(ref.name)} "
                 f"-o jsonpath='{{.data.{key}}}' | base64 -d | {write_private(LOCAL_KEY_FILE)}")
    notes.append(f"the key is read from Secret {ref.name} while the API answers (keep a copy outside the cluster "
                 f"too); delete {LOCAL_KEY_FILE} (mode 0600) afterwards")
    return LOCAL_KEY_FILE


def _prepare_local(snapshot: SnapshotManifest, opts: RunbookOptions, nodes: Sequence[str], *,
                   ctr_tools: bool) -> Step:
    """Fetch, authenticate, decrypt and check the snapshot here; copy the plain db (0600) to `nodes`."""
    lines: list[str] = []
    notes: list[str] = []
    key_path = _key_lines(snapshot, opts, lines, notes)
    dl, dl_notes = _download(snapshot, opts, key_path)
    lines += dl
    notes += dl_notes
    db = _node_db(snapshot, opts)
    store_dir = posixpath.dirname(db)
    lines += [f"ssh {shlex.quote(n)} {shlex.quote(f'mkdir -p -m 700 {shlex.quote(store_dir)} && ' + write_private(db))}"
              f" < {snapshot.id}.db" for n in nodes]
    if ctr_tools:
        notes.insert(0, f"on every etcd node ({', '.join(nodes)}): ssh as root, ctr (containerd) and crictl "
                        "(cri-tools, which kubeadm needs anyway); no Python and no etcdutl: the restore runs the "
                        "etcdutl of the node's etcd image")
    notes.append(f"{snapshot.id}.db is the plain snapshot (mode 0600 here and on the nodes): treat it like the key")
    return Step("prepare", "Prepare, while the cluster still answers (on your machine): fetch and check the snapshot "
                "here, copy it to the nodes", {LOCAL: lines}, "\n".join(notes),
                verify=f"sha256sum -c: {snapshot.id}.db has the raw sha256 the authenticated manifest records "
                       f"({snapshot.raw_sha256[:16]}...); each node's copy is checked again before its restore")


def _prepare_python(snapshot: SnapshotManifest, opts: RunbookOptions, etcd_nodes: list[str]) -> Step:
    """--node-python: the nodes fetch, verify and decrypt themselves; they need the key and the store."""
    lines: list[str] = []
    notes = [f"on every etcd node ({', '.join(etcd_nodes)}): Python >= 3.11 with kubectl-etcdbackup, and etcdutl "
             "(matching the etcd version) on PATH; crictl and etcdctl for the wait loops"]
    if snapshot.cipher != "none":
        ref = opts.key_secret or SecretRef("etcd-backup-key", "key")
        key = ref.key.replace(".", "\\.")
        if opts.local_key_file:
            src = opts.local_key_file
        else:
            src = LOCAL_KEY_FILE
            lines += [f"kubectl -n {shlex.quote(opts.namespace)} get secret {shlex.quote(ref.name)} "
                      f"-o jsonpath='{{.data.{key}}}' | base64 -d | {write_private(LOCAL_KEY_FILE)}"]
        lines += [f"ssh {shlex.quote(n)} {shlex.quote(write_private(opts.key_file))} < {shlex.quote(src)}"
                  for n in etcd_nodes]
        notes.append(f"the encryption key goes to {opts.key_file} (mode 0600, as root) on every etcd node; "
                     f"delete the local copy ({LOCAL_KEY_FILE}, mode 0600) afterwards")
    if opts.store_url.startswith("s3:"):
        src_secret = f" (Secret {opts.aws_secret} in namespace {opts.namespace})" if opts.aws_secret else ""
        notes.append(f"every etcd node needs read access to {opts.store_url}: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
                     f"{src_secret} in the environment of the restore phase, or an instance role")
    else:
        notes.append(f"the store {opts.store_url} is a volume in the cluster: copy {snapshot.id}.etcdbak and "
                     f"{snapshot.id}.json from it to {opts.node_store_dir}/ on every etcd node")
    return Step("prepare", "Prepare, while the cluster still answers (on your machine)", {LOCAL: lines} if lines
                else {}, "\n".join(notes))


# ------------------------------------------------------------------------------------------------ k3s, RKE2
def _first_server(servers: Sequence[ServerNode], dist: Distribution, warnings: list[str]) -> ServerNode:
    """The server to reset: one that does not join another (started with --cluster-init), else the first."""
    known = [s for s in servers if s.args]
    init = [s for s in known if not s.joins]
    first = (init or list(servers))[0]
    if not known:
        warnings.append(f"the servers' flags are unknown (no {dist.name}.io/node-args annotation): {first.name} is "
                        f"the first by name; run the reset on the server that was started with --cluster-init")
    elif first.joins:
        warnings.append(f"every server was started with --server: remove `server:` from {first.name}'s config "
                        f"(/etc/rancher/{dist.name}/config.yaml) before the reset ({dist.name} refuses a "
                        "cluster-reset while a server URL is set)")
    for s in servers:
        if s is not first and s.args and not s.joins:
            warnings.append(f"server {s.name} was not started with --server: before it starts again give it "
                            f"`server: https://{first.name}:{dist.supervisor_port}` and the cluster token in "
                            f"/etc/rancher/{dist.name}/config.yaml, or it starts a cluster of its own")
    return first


def _build_server_runbook(members: Sequence[EtcdMember], servers: Sequence[ServerNode], snapshot: SnapshotManifest,
                          opts: RunbookOptions) -> Runbook:
    dist = SERVER_DISTRIBUTIONS[opts.distribution]
    if not servers:
        raise UsageError(f"no {dist.name} server runs etcd (no node labeled node-role.kubernetes.io/etcd=true"
                         + (" and no etcd pods" if dist.name == RKE2 else "") + f"): a {dist.name} cluster on "
                         "sqlite or an external datastore has no etcd for this tool to restore")
    warnings: list[str] = [] if snapshot.verified else [f"snapshot {snapshot.id} was never verified"]
    checks: list[str] = [f"servers running etcd (node-role.kubernetes.io/etcd): {', '.join(s.name for s in servers)}"]
    first = _first_server(servers, dist, warnings)
    others = [s for s in servers if s is not first]
    versions = sorted({s.kubelet_version for s in servers if s.kubelet_version})
    if versions:
        checks.append(f"{dist.name} version{'s' if len(versions) > 1 else ''}: {', '.join(versions)} (etcd is "
                      f"{'built into k3s' if dist.name == K3S else 'the image rke2 pins'})")
    if members:
        _image_checks(members, snapshot, 0, False, checks, warnings)
    data = first.data_dir(dist.name).rstrip("/")
    _space_check(snapshot, opts, f"{data}/server/db on {first.name}", checks)
    if opts.bump_revision and opts.bump_revision != DEFAULT_BUMP_REVISION:
        warnings.append(f"--bump-revision {opts.bump_revision} is ignored: {dist.name}'s cluster-reset restores "
                        "without a revision bump")
    steps = [_prepare_python_server(snapshot, opts, first) if opts.node_python else
             _prepare_local(snapshot, opts, [first.name], ctr_tools=False)]
    wait = opts.wait_seconds
    svc = dist.service
    steps.append(Step("stop-server", f"Stop {svc} on every server (the API and etcd go down)",
                      {s.name: [f"systemctl stop {svc}", _until(f"! systemctl is-active --quiet {svc}",
                                                                f"{svc} still active", wait)] for s in servers},
                      verify=f"systemctl is-active {svc} says inactive on every server"))
    db = _node_db(snapshot, opts)
    reset = [dist.binary, "server", "--cluster-reset", f"--cluster-reset-restore-path={db}"]
    if data != DEFAULT_DATA_DIRS[dist.name]:
        reset += ["--data-dir", data]
    restore: dict[str, list[str]] = {first.name: [
        _check_sha(snapshot, db), _free_space(f"{data}/server", snapshot.raw_size + WAL_BYTES), _q(reset)]}
    for s in others:
        odb = f"{s.data_dir(dist.name).rstrip('/')}/server/db"
        restore[s.name] = [STAMP, f"if [ -e {shlex.quote(odb)} ]; then mv {shlex.quote(odb)} "
                           f"{shlex.quote(odb + '.before-restore-')}\"$stamp\"; fi"]
    steps.append(Step("restore", f"Restore on {first.name} with {dist.name}'s cluster-reset; move the other servers' "
                      "db dirs aside (kept, never deleted) so they rejoin the restored cluster", restore,
                      note=f"{dist.name} moves {first.name}'s old etcd data to {data}/server/db/etcd-old-<time> "
                           f"itself; the reset runs in the foreground and ends with a message to restart {dist.name} "
                           "without the --cluster-reset flags",
                      verify=f"the reset's last log line says the membership was reset and {dist.name} can be "
                             "restarted without --cluster-reset; ls -ld " + " ".join(
                                 f"{s.data_dir(dist.name).rstrip('/')}/server/db.before-restore-*" for s in others)
                             + (" on the others" if others else "")))
    kubectl = dist.kubectl
    steps.append(Step("start-first", f"Start {svc} on {first.name}", {first.name: [f"systemctl start {svc}"]},
                      verify=f"systemctl is-active {svc} says active"))
    steps.append(Step("wait-first", f"Wait until the API on {first.name} is ready", {first.name: [
        _until(f"{kubectl} get --raw=/readyz >/dev/null 2>&1", "the API not ready", wait, 2)]},
        verify=f"{kubectl} get --raw='/readyz?verbose' lists etcd ok"))
    steps.append(Step("start-others", f"Start {svc} on the other servers (they rejoin {first.name})",
                      {s.name: [f"systemctl start {svc}"] for s in others},
                      verify=f"journalctl -u {svc} on each shows it joined the etcd cluster"))
    want = len(servers)
    steps.append(Step("wait-all", "Wait until every etcd server is Ready", {first.name: [
        _until(f"[ \"$({kubectl} get nodes -l node-role.kubernetes.io/etcd=true --no-headers 2>/dev/null "
               f"| grep -c ' Ready ')\" -ge {want} ]", f"fewer than {want} etcd servers Ready", wait, 2),
        f"{kubectl} get nodes -o wide"]},
        verify=f"{want} etcd server{'s' if want > 1 else ''} Ready"))
    steps.append(Step("verify", "Verify", {LOCAL: ["kubectl get --raw='/readyz?verbose'", "kubectl get nodes"]},
                      note=f"{dist.name}'s cluster-reset does not bump the revision: restart controllers and operators "
                           "that watch the API so they re-list (e.g. kubectl rollout restart)"
                           + (f"\nthen delete {snapshot.id}.db (and {LOCAL_KEY_FILE}) here and {db} on {first.name}"
                              if not opts.node_python else "")
                           + (f"\n{dist.name} leaves {data}/server/db/reset-flag; it goes at the next normal start, "
                              "and must be gone before another reset" if dist.name == RKE2 else "")))
    names = [first.name] + [s.name for s in others]
    return Runbook(snapshot, opts.store_url, "", "", list(members), steps, warnings, dist.name, SERVER_PHASES,
                   names, checks, opts.distribution_why)


def _prepare_python_server(snapshot: SnapshotManifest, opts: RunbookOptions, first: ServerNode) -> Step:
    """--node-python on k3s/RKE2: the first server fetches, verifies and decrypts the snapshot itself."""
    lines: list[str] = []
    notes = [f"on {first.name}: Python >= 3.11 with kubectl-etcdbackup"]
    key_args: list[str] = []
    if snapshot.cipher != "none":
        src = opts.local_key_file or LOCAL_KEY_FILE
        if not opts.local_key_file:
            _key_lines(snapshot, opts, lines, notes)
        lines.append(f"ssh {shlex.quote(first.name)} {shlex.quote(write_private(opts.key_file))} < {shlex.quote(src)}")
        key_args = ["--encryption-key-file", opts.key_file]
    store = ["--store", f"file://{opts.node_store_dir}" if opts.store_url.startswith("file:") else opts.store_url]
    store += (["--s3-endpoint-url", opts.s3_endpoint_url] if opts.s3_endpoint_url else []) + (
        ["--s3-region", opts.s3_region] if opts.s3_region else [])
    db = _node_db(snapshot, opts)
    fetch = _q(["kubectl-etcdbackup", "snapshot", "download", snapshot.id, *store, *key_args, "-f", db])
    lines.append(f"ssh {shlex.quote(first.name)} {shlex.quote(f'mkdir -p -m 700 {opts.node_store_dir} && {fetch}')}")
    if not opts.store_url.startswith("s3:"):
        notes.append(f"the store {opts.store_url} is a volume in the cluster: copy {snapshot.id}.etcdbak and "
                     f"{snapshot.id}.json from it to {opts.node_store_dir}/ on {first.name} first")
    return Step("prepare", f"Prepare, while the cluster still answers: {first.name} fetches and checks the snapshot",
                {LOCAL: lines}, "\n".join(notes))
