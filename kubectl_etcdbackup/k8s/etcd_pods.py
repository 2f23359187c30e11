"""etcd members as their pod specs describe them (pure): flags, node paths, and the etcdctl argv to run inside.

Fits kubeadm's static pods (flags in `command`, data and certs on hostPath volumes) and anything else that
passes etcd its flags as `--flag=value`, `--flag value` or `ETCD_*` environment variables.
"""

from __future__ import annotations

import os
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
        warnings=tuple(warnings))


def members_from_pods(pods: Sequence[dict[str, Any]]) -> list[EtcdMember]:
    """Members of every pod that is not being deleted, sorted by member name."""
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    return sorted((member_from_pod(p) for p in live), key=lambda m: (m.name, m.pod))


def initial_cluster(members: Sequence[EtcdMember]) -> str:
    """name1=peerURL1,name2=peerURL2,... of all members (what a full restore gives every member)."""
    return ",".join(f"{m.name}={u}" for m in members for u in m.peer_urls)
