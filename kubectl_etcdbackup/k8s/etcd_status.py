"""What `status` shows about each etcd member (pure): `etcdctl endpoint status/health -w json` output parsed
into rows, plus the warnings an operator must see (quota, leaders, health)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..textutil import last_line
from .etcd_pods import EtcdMember

QUOTA_WARN_RATIO = 0.8


@dataclass
class MemberStatus:
    member: str
    pod: str
    node: str
    endpoint: str
    member_id: str = ""  # hex
    cluster_id: str = ""
    leader: bool | None = None
    db_size: int | None = None
    db_size_in_use: int | None = None
    raft_index: int | None = None
    raft_term: int | None = None
    revision: int | None = None
    version: str = ""
    healthy: bool = False
    error: str = ""
    quota_backend_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _first_line(text: str) -> str:
    # etcdctl ends with "Error: ..." after any {"level":...} log lines; that line says most.
    line = last_line(text, prefer="Error:")
    return line[len("Error:"):].strip() if line.startswith("Error:") else line


def _json_list(stdout: str) -> list[dict[str, Any]]:
    data = json.loads(stdout)
    if not isinstance(data, list):
        raise ValueError("not a JSON list")
    return [d for d in data if isinstance(d, dict)]


def member_status(m: EtcdMember, status: tuple[int, str, str] | None, health: tuple[int, str, str] | None,
                  exec_error: str = "") -> MemberStatus:
    """Combine the (exit code, stdout, stderr) of `endpoint status` and `endpoint health` for member m."""
    row = MemberStatus(member=m.name, pod=m.pod, node=m.node, endpoint=m.client_url,
                       quota_backend_bytes=m.quota_backend_bytes)
    errors = [exec_error] if exec_error else []
    if status is not None:
        code, out, err = status
        try:
            st = (_json_list(out)[0].get("Status") or {}) if code == 0 else None
        except (ValueError, IndexError):
            st = None
        if st:
            hdr = st.get("header") or {}
            mid, leader = int(hdr.get("member_id", 0)), int(st.get("leader", 0))
            row.member_id, row.cluster_id = f"{mid:x}", f"{int(hdr.get('cluster_id', 0)):x}"
            row.leader = bool(mid) and mid == leader
            row.db_size, row.db_size_in_use = st.get("dbSize"), st.get("dbSizeInUse")
            row.raft_index, row.raft_term = st.get("raftIndex"), st.get("raftTerm")
            row.revision, row.version = hdr.get("revision"), str(st.get("version", ""))
            if st.get("errors"):
                errors.append("; ".join(map(str, st["errors"])))
        else:
            errors.append(_first_line(err) or _first_line(out) or f"endpoint status exited {code}")
    if health is not None:
        code, out, err = health
        try:
            h = _json_list(out)[0]
        except (ValueError, IndexError):
            h = {}
        row.healthy = bool(h.get("health")) and code == 0
        if not row.healthy:
            msg = str(h.get("error") or "") or _first_line(err) or f"endpoint health exited {code}"
            if msg not in errors:
                errors.append(msg)
    row.error = "; ".join(e for e in errors if e)
    return row


def warnings_for(rows: Sequence[MemberStatus], ratio: float = QUOTA_WARN_RATIO) -> list[str]:
    """Quota pressure, unhealthy members, leader count and split cluster ids."""
    out = []
    for r in rows:
        if r.db_size is not None and r.quota_backend_bytes and r.db_size >= ratio * r.quota_backend_bytes:
            pct = 100 * r.db_size / r.quota_backend_bytes
            out.append(f"member {r.member}: db size {r.db_size} bytes is {pct:.0f}% of its quota "
                       f"{r.quota_backend_bytes} bytes (--quota-backend-bytes); defragment, compact or raise "
                       "the quota before etcd turns read-only")
        if not r.healthy:
            out.append(f"member {r.member} on {r.node or '?'} is unhealthy: {r.error or 'no answer'}")
    answered = [r for r in rows if r.leader is not None]
    leaders = [r.member for r in answered if r.leader]
    if answered and len(leaders) != 1:
        out.append(f"{len(leaders)} members say they are the leader" + (f" ({', '.join(leaders)})" if leaders else
                                                                        ": the cluster has no leader"))
    if len({r.cluster_id for r in answered}) > 1:
        out.append("members report different cluster ids: they are not one cluster")
    return out
