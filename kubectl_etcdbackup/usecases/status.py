"""`status`: the health of each etcd member (etcdctl exec'ed in its pod; its server certificate's end, read here in a
TLS handshake with its advertised client URL) and of the backups (the newest verified snapshot's age against the
allowed one, the agent's run record, the last restore drill against its allowed age). Problems are in the report;
the command decides what they mean for its exit code."""

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
from ..run_status import DrillRecord
from .source import SnapshotSource, SourceSpec, open_source

if TYPE_CHECKING:
    from ..continuous.stored import StreamSummary
    from ..k8s.etcd_pods import EtcdMember
    from ..k8s.store_catalog import Catalog

DEFAULT_MAX_AGE = 3600.0  # what the installed exporter alerts after, unless told otherwise
DEFAULT_DRILL_MAX_AGE = 62 * 86400.0  # the chart's drill.maxAge: twice the monthly schedule
CERT_TIMEOUT = 5.0


@dataclass(frozen=True)
class StatusOptions:
    source: SourceSpec  # the backups: --store, else the cluster's CronJob (its cluster is also etcd's)
    etcd_namespace: str = ETCD_NAMESPACE
    etcd_selector: str = ETCD_SELECTOR
    max_age: float | None = None  # seconds; None: the installed exporter's (ConfigMap <cronjob>-monitor), else 1h
    drill_max_age: float | None = None  # seconds; None: the installed drill's (the same ConfigMap), else 62d


@dataclass
class DrillSummary:
    """The last restore drill (the store's etcdbackup.drill) judged against its allowed age."""

    record: DrillRecord
    max_age_seconds: float
    age_seconds: float | None = None  # since the last drill; None: none recorded
    problem: str = ""  # why the drills are not fine: the last one failed, or is too old
    expected: bool = False  # a drill CronJob is installed (or a limit was given): none recorded is worth a warning

    def as_dict(self) -> dict[str, Any]:
        r = self.record
        if not r.last_time:
            return {"ok": not self.problem, "last_time": None, "max_age_seconds": self.max_age_seconds}
        return {"ok": not self.problem, "problem": self.problem or None, "last_time": r.last_time,
                "last_ok": r.last_ok, "last_snapshot_id": r.last_snapshot_id, "last_message": r.last_message or None,
                "age_seconds": int(self.age_seconds or 0), "max_age_seconds": self.max_age_seconds,
                "last_success_time": r.last_success_time or None, "failures_total": r.failures_total,
                "estimated_restore_seconds": r.estimated_restore_seconds or None, "stages_seconds": r.stages_seconds}


def judge_drill(record: DrillRecord, limit: float, now: datetime, expected: bool = False) -> DrillSummary:
    """Not fine when the last drill failed or ran longer than `limit` seconds ago; none at all is not a problem
    (a new installation has not had its first one)."""
    out = DrillSummary(record, limit, _age(record.last_time, now), expected=expected)
    if not record.last_time:
        return out
    ago = format_duration(out.age_seconds) + " ago" if out.age_seconds is not None else record.last_time
    if not record.last_ok:
        out.problem = f"restore drill FAILED {ago}: {record.last_message or 'no reason recorded'}"
    elif out.age_seconds is None or out.age_seconds > limit:
        out.problem = f"restore drill STALE: the last one ran {ago} (limit {format_duration(limit)})"
    return out


@dataclass
class CertStatus:
    """A member's server certificate as it presents it (from here, to its advertised client URL)."""

    member: str
    endpoint: str
    subject: str = ""
    not_after: datetime | None = None
    days_left: float | None = None
    error: str = ""  # why it could not be read

    def as_dict(self) -> dict[str, Any]:
        return {"member": self.member, "endpoint": self.endpoint, "subject": self.subject or None,
                "not_after": format_time(self.not_after) if self.not_after else None,
                "days_left": None if self.days_left is None else round(self.days_left, 1),
                "error": self.error or None}


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
    drill: DrillSummary | None = None

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
        if self.drill is not None:
            out["drill"] = self.drill.as_dict()
        return out


@dataclass
class StatusReport:
    members: list[MemberStatus]
    backups: BackupSummary
    warnings: list[str] = field(default_factory=list)  # e.g. a member near its quota, a certificate expiring
    notes: list[str] = field(default_factory=list)  # what reading the backups had to say
    certificates: list[CertStatus] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Why the cluster's backups or etcd are not fine (empty: all fine)."""
        out = [f"etcd member {m.member} on {m.node} is unhealthy" for m in self.members if not m.healthy]
        if self.backups.error:
            out.append(f"backups unknown: {self.backups.error}")
        elif not self.backups.ok:
            out.append(f"backups {self.backups.freshness}")
        if self.backups.drill is not None and self.backups.drill.problem:
            out.append(self.backups.drill.problem)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"members": [m.as_dict() for m in self.members], "backups": self.backups.as_dict(),
                "certificates": [c.as_dict() for c in self.certificates], "warnings": self.warnings}


def run_status(opts: StatusOptions) -> StatusReport:
    """Probe the members (a failing API is an error: KubeError), then read the backups (a failure there makes
    them unknown, except when the API itself cannot be reached)."""
    from ..k8s.probe import etcd_members, probe_members
    from .cluster import connected

    kube = opts.source.kube
    with connected(kube.kubeconfig, kube.context) as k:
        pods = etcd_members(k, opts.etcd_namespace, opts.etcd_selector)
        members = probe_members(k, pods)
    notes: list[str] = []
    report = StatusReport(members, _backups(opts, notes), warnings_for(members), notes, _certificates(pods))
    now = datetime.now(UTC)
    for c in report.certificates:
        if c.error:
            report.notes.append(c.error)
        elif c.not_after is not None and (w := _cert_warning(c, now)):
            report.warnings.append(w)
    drill = report.backups.drill
    if drill is not None and drill.expected and not drill.record.last_time:
        report.warnings.append("no restore drill recorded yet: run kubectl etcdbackup drill")
    return report


def _certificates(members: list[EtcdMember]) -> list[CertStatus]:
    """Each member's server certificate, read from here (all at once, each bounded) at its advertised client URL
    (the address it gives clients; its loopback listener would be this machine's)."""
    from concurrent.futures import ThreadPoolExecutor

    from ..preflight import server_certificate

    def one(m: EtcdMember) -> CertStatus:
        url = (m.advertise_client_urls or m.listen_client_urls or ("",))[0]
        out = CertStatus(m.name, url)
        if not url.startswith("https://"):
            out.error = f"member {m.name}: no https client URL ({url or 'none'}): no certificate to check"
            return out
        try:
            cert = server_certificate(url, None, CERT_TIMEOUT)
        except EtcdBackupError as e:
            out.error = f"member {m.name}: {e}"
            return out
        out.subject, out.not_after = cert.subject, cert.not_after
        out.days_left = (cert.not_after - datetime.now(UTC)).total_seconds() / 86400
        return out

    if not members:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(members))) as pool:
        return list(pool.map(one, members))


def _cert_warning(c: CertStatus, now: datetime) -> str:
    from ..preflight import CertExpiry, expiry_warning

    assert c.not_after is not None
    return expiry_warning(CertExpiry(f"member {c.member} server", c.subject, c.not_after), now)


def _backups(opts: StatusOptions, notes: list[str]) -> BackupSummary:
    from ..k8s.api import ClusterUnreachable, KubeConfigError, Unauthorized

    try:
        with open_source(opts.source) as src:
            try:
                cat, (limit, drill_limit) = _catalog(src), _limits(src, opts.max_age, opts.drill_max_age)
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
        last_backup=fresh.newest, last_backup_age_seconds=fresh.age_seconds,
        drill=judge_drill(cat.drill, drill_limit or DEFAULT_DRILL_MAX_AGE, now, expected=drill_limit is not None))


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


def _limits(src: SnapshotSource, max_age: float | None, drill_max_age: float | None) -> tuple[float, float | None]:
    """The backups' allowed age: the given one, else the installed exporter's setting (ConfigMap <cronjob>-monitor),
    else 1h. The drills': the given one, else the installed drill's (the same ConfigMap), else None (no drill
    installed, or not known from here)."""
    data: dict[str, str] = {}
    if (not max_age or not drill_max_age) and src.kube is not None and src.cluster is not None:
        try:
            data = src.kube.get_configmap(src.cluster.namespace, f"{src.cluster.cronjob}-monitor").get("data") or {}
        except EtcdBackupError:
            data = {}

    def read(key: str) -> float | None:
        try:
            return parse_duration(data[key]) if data.get(key) else None
        except ValueError:
            return None

    return max_age or read("ETCDBACKUP_MAX_AGE") or DEFAULT_MAX_AGE, drill_max_age or read("ETCDBACKUP_DRILL_MAX_AGE")


def _age(text: str, now: datetime) -> float | None:
    if not text:
        return None
    try:
        return (now - parse_time(text)).total_seconds()
    except EtcdBackupError:
        return None
