"""Restore plan for one member (pure): what will be fetched, where it is staged, what is moved aside,
and the exact `snapshot restore` flags. The same plan drives --dry-run output and the real restore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath

from .errors import RestoreRefused, UsageError

DEFAULT_BUMP_REVISION = 1_000_000_000  # what Kubernetes recommends: more than any write rate between backups


@dataclass(frozen=True)
class MemberSpec:
    name: str
    data_dir: str
    initial_cluster: str  # name1=https://ip1:2380,name2=...
    initial_advertise_peer_urls: str
    initial_cluster_token: str | None = None  # default: derived from the snapshot id, same on every member
    bump_revision: int = DEFAULT_BUMP_REVISION
    mark_compacted: bool = True
    wal_dir: str | None = None


@dataclass
class RestorePlan:
    snapshot_id: str
    store_url: str
    member: MemberSpec
    token: str
    snapshot_file: str  # the fetched db, inside staging_dir
    staging_dir: str  # <data-dir>.restoring-<stamp> (0700): all a killed restore leaves behind
    restored_dir: str  # what `snapshot restore` writes, inside staging_dir; renamed to final_dir
    final_dir: str
    aside_dir: str | None
    steps: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"snapshot": self.snapshot_id, "store": self.store_url, "member": self.member.name,
                "initial_cluster": self.member.initial_cluster, "token": self.token,
                "data_dir": self.final_dir, "staging_dir": self.staging_dir, "moved_aside_to": self.aside_dir,
                "bump_revision": self.member.bump_revision, "mark_compacted": self.member.mark_compacted,
                "steps": self.steps, "warnings": self.warnings}


def parse_initial_cluster(text: str) -> dict[str, list[str]]:
    members: dict[str, list[str]] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, url = part.partition("=")
        if not sep or not name or "://" not in url:
            raise UsageError(f"bad --initial-cluster entry {part!r} (want name=https://host:2380)")
        members.setdefault(name, []).append(url)
    if not members:
        raise UsageError("--initial-cluster is empty")
    return members


def default_token(snapshot_id: str) -> str:
    return f"restore-{snapshot_id}"


def plan_restore(snapshot_id: str, store_url: str, member: MemberSpec, *, data_dir_exists: bool,
                 move_aside: bool, now: datetime | None = None) -> RestorePlan:
    cluster = parse_initial_cluster(member.initial_cluster)
    if member.name not in cluster:
        raise UsageError(f"member {member.name!r} is not in --initial-cluster ({', '.join(cluster)})")
    own = sorted(u.strip() for u in member.initial_advertise_peer_urls.split(",") if u.strip())
    if sorted(cluster[member.name]) != own:
        raise UsageError(f"--initial-advertise-peer-urls {','.join(own)} differ from {member.name}'s "
                         f"entry in --initial-cluster ({','.join(cluster[member.name])})")
    if member.bump_revision < 0:
        raise UsageError("--bump-revision must not be negative")
    if member.mark_compacted and not member.bump_revision:
        raise UsageError("--mark-compacted needs --bump-revision > 0")
    if data_dir_exists and not move_aside:
        raise RestoreRefused(f"data dir {member.data_dir} already exists; nothing was changed. Pass "
                             "--move-aside to move it aside (it is never deleted), or choose another --data-dir")
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    final = PurePosixPath(member.data_dir)
    if str(final) in ("/", "") or final.name in ("", ".", ".."):
        raise UsageError(f"refusing to restore into {member.data_dir!r}")
    staging = final.with_name(f"{final.name}.restoring-{stamp}")
    aside = final.with_name(f"{final.name}.before-restore-{stamp}") if data_dir_exists else None
    snap = staging / f"{snapshot_id}.db"
    restored = staging / "data"
    token = member.initial_cluster_token or default_token(snapshot_id)
    plan = RestorePlan(snapshot_id, store_url, member, token, str(snap), str(staging), str(restored), str(final),
                       str(aside) if aside else None)
    bump = (f" --bump-revision {member.bump_revision}" if member.bump_revision else "") + (
        " --mark-compacted" if member.mark_compacted else "")
    plan.steps = [
        f"lock {final} against other restores; remove its stale staging dirs (left by killed restores)",
        f"create {staging} (mode 0700); fetch {snapshot_id} from {store_url}; check stored sha256, decrypt and "
        f"authenticate every frame, decompress, check raw sha256 and etcd's appended hash -> {snap}",
        f"snapshot status {snap} (revision must match the manifest)",
        f"snapshot restore {snap} --name {member.name} --initial-cluster {member.initial_cluster} "
        f"--initial-cluster-token {token} --initial-advertise-peer-urls {member.initial_advertise_peer_urls}"
        f"{bump} --data-dir {restored}",
        f"remove the fetched {snap}; check again that no etcd runs on {final}",
    ]
    if aside:
        plan.steps.append(f"swap {restored} in as {final} in one step; the old {final} becomes {aside} "
                          "(kept, never deleted)")
    else:
        plan.steps.append(f"rename {restored} -> {final}")
    plan.steps.append(f"remove the empty {staging}")
    if not member.bump_revision:
        plan.warnings.append("revision not bumped: clients watching etcd (kube-apiserver informers) may "
                             "serve stale caches; restart every kube-apiserver and controller after restore")
    return plan
