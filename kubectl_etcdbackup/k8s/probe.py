"""Ask each etcd member about itself: `etcdctl endpoint status` and `endpoint health` exec'ed in its pod
(argv only, no shell), all members at once, each call bounded."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .api import Forbidden, Kube, KubeError, NoEtcdPods
from .etcd_pods import EtcdMember, ServerNode, members_from_pods, node_from_api
from .etcd_status import MemberStatus, member_status

EXEC_TIMEOUT = 20.0  # etcdctl itself gives up after its dial + command timeouts


def etcd_members(kube: Kube, namespace: str, selector: str) -> list[EtcdMember]:
    pods = kube.list_pods(namespace, selector)
    members = members_from_pods(pods)
    if not members:
        raise NoEtcdPods(f"no etcd pods with label {selector} in namespace {namespace} "
                         "(etcd outside Kubernetes? see --etcd-namespace / --etcd-selector)")
    return members


def etcd_pod_members(kube: Kube, namespace: str, selector: str) -> list[EtcdMember]:
    """The members the etcd pods describe; none for k3s, whose etcd runs inside the k3s process."""
    return members_from_pods(kube.list_pods(namespace, selector))


def server_nodes(kube: Kube) -> tuple[list[ServerNode], str]:
    """Every Node as a ServerNode, and "" -- or no nodes and why (listing Nodes is cluster-scoped: an operator
    allowed to read pods in kube-system only may not list them; the distribution is then told from the pods)."""
    try:
        with kube.calling("list", "nodes"):
            items = kube._request("GET", "/api/v1/nodes")["items"]  # Kube has no list_nodes (yet)
    except Forbidden as e:
        return [], str(e)
    return [node_from_api(n) for n in items], ""


def pod_nodes(kube: Kube, namespace: str, selector: str) -> list[str]:
    """Nodes running the pods that match (e.g. the kube-apiservers), in name order."""
    return sorted({n for p in kube.list_pods(namespace, selector) if (n := (p.get("spec") or {}).get("nodeName"))})


def _run(kube: Kube, m: EtcdMember, command: Sequence[str]) -> tuple[int, str, str] | str:
    """(exit code, stdout, stderr) of etcdctl in the member's pod, or why it could not run there."""
    try:
        r = kube.exec(m.namespace, m.pod, m.container or None, m.etcdctl_argv(*command), EXEC_TIMEOUT)
    except Forbidden:
        raise
    except KubeError as e:  # not running, exec refused...: the member is shown as unreachable
        return f"cannot exec in pod {m.pod}: {e}"
    return r.exit_code, r.stdout, r.stderr


def probe_members(kube: Kube, members: Sequence[EtcdMember]) -> list[MemberStatus]:
    """`endpoint status` and `endpoint health` of every member, all at once."""
    with ThreadPoolExecutor(max_workers=min(16, 2 * max(1, len(members)))) as pool:
        futures: list[tuple[EtcdMember, Any, Any]] = [
            (m, pool.submit(_run, kube, m, ("endpoint", "status")), pool.submit(_run, kube, m, ("endpoint", "health")))
            for m in members]
        rows = []
        for m, fs, fh in futures:
            status, health = fs.result(), fh.result()
            failed = next((r for r in (status, health) if isinstance(r, str)), "")
            rows.append(member_status(m, None if isinstance(status, str) else status,
                                      None if isinstance(health, str) else health, failed))
        return rows
