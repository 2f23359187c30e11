"""etcd members as their pod specs describe them (pure): flags, node paths, the image, and the etcdctl argv to
run inside; the server nodes as the Node objects describe them; and which distribution runs the cluster.

Fits kubeadm's static pods (flags in `command`, data and certs on hostPath volumes) and anything else that
passes etcd its flags as `--flag=value`, `--flag value` or `ETCD_*` environment variables. k3s runs etcd inside
its own process (no etcd pods); RKE2 runs it as a static pod that rke2-server writes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

DEFAULT_QUOTA_BYTES = 2 * 1024**3  # etcd's default --quota-backend-bytes
ETCDCTL_DIAL_TIMEOUT = "2s"
ETCDCTL_COMMAND_TIMEOUT = "4s"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class EtcdMember:
    """One etcd member; paths are as the container sees them unless named host_*."""

    pod: str
    namespace: str
    node: str
    container: str
    name: str
    data_dir: str
    wal_dir: str | None
    listen_client_urls: tuple[str, ...]
    advertise_client_urls: tuple[str, ...]
    peer_urls: tuple[str, ...]  # --initial-advertise-peer-urls
    trusted_ca_file: str | None
    cert_file: str | None
    key_file: str | None
    quota_backend_bytes: int
    static_pod: bool  # mirror pod of a static pod manifest (kubeadm)
    mounts: tuple[tuple[str, str], ...] = ()  # (mountPath, hostPath) of hostPath volumes
    warnings: tuple[str, ...] = field(default_factory=tuple)
    image: str = ""  # the etcd container's image, e.g. registry.k8s.io/etcd:3.5.21-0

    @property
    def image_version(self) -> tuple[int, int, int] | None:
        """etcd's version from the image tag (3.5.21-0 -> (3, 5, 21)); None when the tag does not say."""
        return image_etcd_version(self.image)

    @property
    def client_url(self) -> str:
        """The URL to use from inside the pod: a loopback listener if there is one (kubeadm's certificates
        cover 127.0.0.1), else the first advertised URL."""
        for u in self.listen_client_urls:
            if (urlparse(u).hostname or "") in _LOOPBACK_HOSTS:
                return u
        return (self.advertise_client_urls or self.listen_client_urls)[0]

    def on_host(self, path: str) -> str | None:
        """The node's path for a container path on a hostPath volume; None when it is not on one."""
        best: tuple[str, str] | None = None
        for mount, host in self.mounts:
            m = mount.rstrip("/") or "/"
            if (path == m or path.startswith(m.rstrip("/") + "/")) and (best is None or len(m) > len(best[0])):
                best = (m, host)
        if best is None:
            return None
        rest = path[len(best[0]):].lstrip("/")
        return os.path.join(best[1], rest) if rest else best[1]

    def tls_args(self, on_host: bool = False) -> list[str]:
        """--cacert/--cert/--key for etcdctl, from the member's own --trusted-ca-file/--cert-file/--key-file."""
        out = []
        for flag, path in (("--cacert", self.trusted_ca_file), ("--cert", self.cert_file), ("--key", self.key_file)):
            if path:
                out.append(f"{flag}={(self.on_host(path) or path) if on_host else path}")
        return out

    def etcdctl_argv(self, *command: str) -> list[str]:
        """argv (no shell) for `etcdctl ... <command> -w json` against this member, run in its container."""
        return ["etcdctl", f"--endpoints={self.client_url}", *self.tls_args(),
                f"--dial-timeout={ETCDCTL_DIAL_TIMEOUT}", f"--command-timeout={ETCDCTL_COMMAND_TIMEOUT}",
                *command, "-w", "json"]


def parse_flags(argv: Sequence[str]) -> dict[str, str]:
    """`--a=1 --b 2 --c` -> {"a": "1", "b": "2", "c": "true"}; the program name and stray words are skipped."""
    flags: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-"):
            continue
        key, eq, value = arg.lstrip("-").partition("=")
        if not eq:
            if i < len(argv) and not argv[i].startswith("-"):
                value = argv[i]
                i += 1
            else:
                value = "true"
        flags[key] = value
    return flags


def _etcd_container(pod: dict[str, Any]) -> dict[str, Any] | None:
    containers = (pod.get("spec") or {}).get("containers") or []
    for c in containers:
        argv = (c.get("command") or []) + (c.get("args") or [])
        if c.get("name") == "etcd" or (argv and os.path.basename(argv[0]) == "etcd"):
            return dict(c)
    return dict(containers[0]) if len(containers) == 1 else None


def _urls(text: str | None) -> tuple[str, ...]:
    return tuple(u.strip() for u in (text or "").split(",") if u.strip())


def member_from_pod(pod: dict[str, Any]) -> EtcdMember:
    """Read one member from its pod; etcd's own defaults fill flags the pod does not set."""
    md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    c = _etcd_container(pod) or {}
    flags = {e["name"].removeprefix("ETCD_").lower().replace("_", "-"): str(e.get("value", ""))
             for e in c.get("env") or [] if e.get("name", "").startswith("ETCD_") and "value" in e}
    flags.update(parse_flags((c.get("command") or []) + (c.get("args") or [])))
    warnings: list[str] = []
    if not c:
        warnings.append(f"pod {md.get('name')}: no container named etcd")
    name = flags.get("name", "default")
    data_dir = flags.get("data-dir", f"{name}.etcd")
    try:
        quota = int(flags.get("quota-backend-bytes", "0")) or DEFAULT_QUOTA_BYTES
    except ValueError:
        quota = DEFAULT_QUOTA_BYTES
        warnings.append(f"pod {md.get('name')}: cannot read --quota-backend-bytes {flags['quota-backend-bytes']!r}")
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec.get("volumes") or [] if v.get("hostPath")}
    mounts = tuple((m["mountPath"], host_paths[m["name"]]) for m in c.get("volumeMounts") or []
                   if m.get("name") in host_paths and not m.get("subPath"))
    owners = md.get("ownerReferences") or []
    static = (md.get("annotations") or {}).get("kubernetes.io/config.source") == "file" or any(
        o.get("kind") == "Node" for o in owners)
    listen = _urls(flags.get("listen-client-urls")) or ("http://localhost:2379",)
    return EtcdMember(
        pod=md.get("name", ""), namespace=md.get("namespace", ""), node=spec.get("nodeName") or "",
        container=c.get("name", ""), name=name, data_dir=data_dir, wal_dir=flags.get("wal-dir") or None,
        listen_client_urls=listen, advertise_client_urls=_urls(flags.get("advertise-client-urls")),
        peer_urls=_urls(flags.get("initial-advertise-peer-urls")) or ("http://localhost:2380",),
        trusted_ca_file=flags.get("trusted-ca-file"), cert_file=flags.get("cert-file"),
        key_file=flags.get("key-file"), quota_backend_bytes=quota, static_pod=static, mounts=mounts,
        warnings=tuple(warnings), image=str(c.get("image") or ""))


def members_from_pods(pods: Sequence[dict[str, Any]]) -> list[EtcdMember]:
    """Members of every pod that is not being deleted, sorted by member name."""
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    return sorted((member_from_pod(p) for p in live), key=lambda m: (m.name, m.pod))


def initial_cluster(members: Sequence[EtcdMember]) -> str:
    """name1=peerURL1,name2=peerURL2,... of all members (what a full restore gives every member)."""
    return ",".join(f"{m.name}={u}" for m in members for u in m.peer_urls)


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    """'3.5.21', 'v3.5.21-0', '3.5' -> (3, 5, 21) / (3, 5, 0); None when there is no version."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return (int(m[1]), int(m[2]), int(m[3] or 0)) if m else None


def image_etcd_version(image: str) -> tuple[int, int, int] | None:
    """The version in an image reference's tag (registry.k8s.io/etcd:3.5.21-0, quay.io/coreos/etcd:v3.5.9,
    index.docker.io/rancher/hardened-etcd:v3.5.19-k3s1-build20250306); a digest-only reference has none."""
    ref = image.split("@", 1)[0]
    tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else ""
    return parse_version(tag) if re.match(r"v?\d+\.\d+", tag) else None


# ------------------------------------------------------------------------------------------------ distributions
KUBEADM, K3S, RKE2 = "kubeadm", "k3s", "rke2"
DISTRIBUTIONS = (KUBEADM, K3S, RKE2)
DEFAULT_DATA_DIRS = {K3S: "/var/lib/rancher/k3s", RKE2: "/var/lib/rancher/rke2"}
ETCD_ROLE_LABEL = "node-role.kubernetes.io/etcd"
_NODE_ARGS = {K3S: "k3s.io/node-args", RKE2: "rke2.io/node-args"}


@dataclass(frozen=True)
class ServerNode:
    """A node as its Node object describes it: what the distribution recorded about the server process."""

    name: str
    kubelet_version: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    args: tuple[str, ...] = ()  # k3s.io/node-args or rke2.io/node-args: the server's argv (and config file)

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)

    @property
    def etcd(self) -> bool:
        """Runs an etcd member (k3s and RKE2 label their etcd servers)."""
        return self.label(ETCD_ROLE_LABEL) == "true"

    @property
    def flags(self) -> dict[str, str]:
        return parse_flags(self.args)

    def data_dir(self, distribution: str) -> str:
        return self.flags.get("data-dir") or self.flags.get("d") or DEFAULT_DATA_DIRS.get(distribution, "")

    @property
    def joins(self) -> bool:
        """Started with --server (joins another server) rather than --cluster-init."""
        return bool(self.flags.get("server") or self.flags.get("s"))

    def says(self) -> str | None:
        """The distribution the node itself names, or None."""
        v = self.kubelet_version
        for dist in (K3S, RKE2):
            if f"+{dist}" in v or self.label("node.kubernetes.io/instance-type") == dist:
                return dist
        return None


def node_from_api(node: dict[str, Any]) -> ServerNode:
    md = node.get("metadata") or {}
    annotations = md.get("annotations") or {}
    args: list[str] = []
    for key in _NODE_ARGS.values():
        try:
            parsed = json.loads(annotations.get(key) or "[]")
        except ValueError:
            parsed = []
        if isinstance(parsed, list) and parsed:
            args = [str(a) for a in parsed]
            break
    info = (node.get("status") or {}).get("nodeInfo") or {}
    return ServerNode(md.get("name", ""), str(info.get("kubeletVersion") or ""),
                      tuple(sorted((md.get("labels") or {}).items())), tuple(args))


def detect_distribution(nodes: Sequence[ServerNode], members: Sequence[EtcdMember]) -> tuple[str | None, str]:
    """(kubeadm|k3s|rke2, the evidence), or (None, why not) when the nodes and pods do not tell.

    k3s and RKE2 name themselves in each node's kubelet version (v1.33.1+k3s1, v1.33.1+rke2r1) and instance-type
    label; RKE2's etcd pods keep their data under /var/lib/rancher/rke2; k3s's embedded etcd has no pods. Etcd static
    pods on nodes that are neither are kubeadm's (or laid out like them)."""
    said = {n.name: d for n in nodes if (d := n.says())}
    kinds = sorted(set(said.values()))
    if len(kinds) > 1:
        return None, "the nodes name different distributions: " + ", ".join(f"{n} {d}" for n, d in said.items())
    if kinds:
        dist = kinds[0]
        some = sorted(n for n, d in said.items() if d == dist)
        return dist, (f"node {some[0]} says {dist} (kubelet version "
                      f"{next(n.kubelet_version for n in nodes if n.name == some[0])})")
    if any("/var/lib/rancher/rke2" in (m.on_host(m.data_dir) or m.data_dir) for m in members):
        return RKE2, "the etcd pods keep their data under /var/lib/rancher/rke2"
    if members:
        static = [m for m in members if m.static_pod]
        if static:
            return KUBEADM, f"etcd static pods ({', '.join(m.pod for m in static)})"
        return None, "the etcd pods are not static pods (an operator-managed etcd?)"
    return None, "no etcd pods (see --etcd-namespace/--etcd-selector) and no node names k3s or RKE2"


def etcd_servers(nodes: Sequence[ServerNode], members: Sequence[EtcdMember]) -> list[ServerNode]:
    """The servers that run etcd members, in name order: the nodes labeled etcd, else those of the etcd pods."""
    labeled = [n for n in nodes if n.etcd]
    if labeled:
        return sorted(labeled, key=lambda n: n.name)
    by_name = {n.name: n for n in nodes}
    return [by_name.get(node, ServerNode(node)) for node in sorted({m.node for m in members if m.node})]
