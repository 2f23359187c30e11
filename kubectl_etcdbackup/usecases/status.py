"""`status`: the health of each etcd member (etcdctl exec'ed in its pod) and of the backups (the newest verified
snapshot's age against the allowed one, and the agent's run record). Problems are in the report; the command
decides what they mean for its exit code."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..defaults import ETCD_NAMESPACE, ETCD_SELECTOR
from ..durations import format_duration, parse_duration
from ..errors import EtcdBackupError
from ..k8s.etcd_status import MemberStatus, warnings_for
from ..manifest import SnapshotManifest, format_time, parse_time
from ..monitor import assess
from .source import SnapshotSource, SourceSpec, open_source

if TYPE_CHECKING:
    from ..continuous.stored import StreamSummary
    from ..k8s.store_catalog import Catalog

DEFAULT_MAX_AGE = 3600.0  # what the installed exporter alerts after, unless told otherwise


@dataclass(frozen=True)
class StatusOptions:
    source: SourceSpec  # the backups: --store, else the cluster's CronJob (its cluster is also etcd's)
    etcd_namespace: str = ETCD_NAMESPACE
    etcd_selector: str = ETCD_SELECTOR
    max_age: float | None = None  # seconds; None: the installed exporter's (ConfigMap <cronjob>-monitor), else 1h


@dataclass
class BackupSummary:
    """The backups' side of `status`; `error` says why they are unknown."""

    ok: bool
    error: str = ""
    store: str = ""
    source: str = ""
    snapshots: int = 0
    freshness: str = ""
    max_age_seconds: float = DEFAULT_MAX_AGE
    failures_total: int = 0
    last_failure_time: str = ""
    last_failure_message: str = ""
    last_failure_age_seconds: float | None = None
    problems: list[str] = field(default_factory=list)
    last_backup: SnapshotManifest | None = None
    last_backup_age_seconds: float | None = None
    stream: StreamSummary | None = None  # continuous backup, when the store has a delta stream
    stream_lag_seconds: float | None = None  # now - the newest point the stream covers

    def as_dict(self) -> dict[str, Any]:
        if self.error:
            return {"ok": False, "error": self.error}
        out: dict[str, Any] = {
            "ok": self.ok, "store": self.store, "source": self.source, "snapshots": self.snapshots,
            "freshness": self.freshness, "max_age_seconds": self.max_age_seconds,
            "failures_total": self.failures_total, "last_failure_time": self.last_failure_time or None,
            "last_failure_message": self.last_failure_message or None, "problems": self.problems}
        if self.last_backup is not None:
            out |= {"last_backup_id": self.last_backup.id, "last_backup_time": self.last_backup.created_at,
                    "last_backup_age_seconds": int(self.last_backup_age_seconds or 0),
                    "last_backup_revision": self.last_backup.etcd_revision}
        if self.stream is not None:
            out["stream"] = {"chain": self.stream.chain, "covered_revision": self.stream.covered_revision,
                             "covered_time": format_time(self.stream.covered_time),
                             "lag_seconds": round(self.stream_lag_seconds or 0.0, 3),
                             "segments": self.stream.segments, "authenticated": self.stream.authenticated}
        return out


@dataclass
class StatusReport:
    members: list[MemberStatus]
    backups: BackupSummary
    warnings: list[str] = field(default_factory=list)  # e.g. a member near its quota
    notes: list[str] = field(default_factory=list)  # what reading the backups had to say

    @property
    def problems(self) -> list[str]:
        """Why the cluster's backups or etcd are not fine (empty: all fine)."""
        out = [f"etcd member {m.member} on {m.node} is unhealthy" for m in self.members if not m.healthy]
        if self.backups.error:
            out.append(f"backups unknown: {self.backups.error}")
        elif not self.backups.ok:
            out.append(f"backups {self.backups.freshness}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"members": [m.as_dict() for m in self.members], "backups": self.backups.as_dict(),
                "warnings": self.warnings}


def run_status(opts: StatusOptions) -> StatusReport:
    """Probe the members (a failing API is an error: KubeError), then read the backups (a failure there makes
    them unknown, except when the API itself cannot be reached)."""
    from ..k8s.probe import etcd_members, probe_members
    from .cluster import connected

    kube = opts.source.kube
    with connected(kube.kubeconfig, kube.context) as k:
        members = probe_members(k, etcd_members(k, opts.etcd_namespace, opts.etcd_selector))
    notes: list[str] = []
    return StatusReport(members, _backups(opts, notes), warnings_for(members), notes)


def _backups(opts: StatusOptions, notes: list[str]) -> BackupSummary:
    from ..k8s.api import ClusterUnreachable, KubeConfigError, Unauthorized

    try:
        with open_source(opts.source) as src:
            try:
                cat, limit = _catalog(src), _max_age(src, opts.max_age)
                stream = _stream(src, notes)
            finally:
                notes += src.notes
    except (ClusterUnreachable, Unauthorized, KubeConfigError):
        raise
    except EtcdBackupError as e:
        return BackupSummary(False, error=str(e))
    now = datetime.now(UTC)
    fresh = assess(cat.snapshots, limit, now)
    rs = cat.run_status
    lag = max(0.0, (now - stream.covered_time).total_seconds()) if stream else None
    freshness = fresh.message + (f"; delta stream {format_duration(lag or 0.0)} behind (covers revision "
                                 f"{stream.covered_revision})" if stream else "")
    return BackupSummary(
        ok=not fresh.stale, store=cat.store_url, source=src.where, snapshots=len(cat.snapshots),
        freshness=freshness, max_age_seconds=limit, stream=stream, stream_lag_seconds=lag,
        failures_total=rs.failures_total,
        last_failure_time=rs.last_failure_time, last_failure_message=rs.last_failure_message,
        last_failure_age_seconds=_age(rs.last_failure_time, now), problems=list(cat.problems),
        last_backup=fresh.newest, last_backup_age_seconds=fresh.age_seconds)


def _stream(src: SnapshotSource, notes: list[str]) -> StreamSummary | None:
    """The delta stream's reach, read here without a key (shown only, never decided on); not from a volume in
    the cluster (its catalog does not carry it)."""
    from ..continuous.stored import stream_summary

    if src.store is None:
        return None
    try:
        return stream_summary(src.store, None)
    except EtcdBackupError as e:
        notes.append(f"cannot read the delta stream's coverage: {e}")
        return None


def _catalog(src: SnapshotSource) -> Catalog:
    from ..k8s.store_catalog import catalog_of

    if src.store is not None:
        return catalog_of(src.store)
    from ..k8s.cluster_store import read_catalog

    assert src.kube is not None and src.cronjob is not None and src.cluster is not None
    return read_catalog(src.kube, src.cronjob, src.cluster, src.notes)


def _max_age(src: SnapshotSource, given: float | None) -> float:
    """The given age, else the installed exporter's setting (ConfigMap <cronjob>-monitor), else 1h."""
    if given:
        return given
    if src.kube is None or src.cluster is None:
        return DEFAULT_MAX_AGE
    try:
        data = src.kube.get_configmap(src.cluster.namespace, f"{src.cluster.cronjob}-monitor").get("data") or {}
        return parse_duration(data["ETCDBACKUP_MAX_AGE"]) if data.get("ETCDBACKUP_MAX_AGE") else DEFAULT_MAX_AGE
    except (EtcdBackupError, ValueError):
        return DEFAULT_MAX_AGE


def _age(text: str, now: datetime) -> float | None:
    if not text:
        return None
    try:
        return (now - parse_time(text)).total_seconds()
    except EtcdBackupError:
        return None
