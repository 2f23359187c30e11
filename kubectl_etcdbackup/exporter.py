"""Metrics exporter: serves /metrics by reading the store itself, so it alerts even when the CronJob is
gone or keeps failing. /healthz answers "ok"; every other path is a 404.

A refresh (at most every `cache_seconds`) lists the store once, with each object's size and ETag (a file store:
size, mtime and inode), and reads only the manifests and records that are new or changed since the previous
refresh: with nothing new, a scrape costs the listing alone (S3: one request per 1,000 objects) whatever the
number of snapshots. A changed manifest is judged again; the "dated in the future" check is redone at every
refresh, as time passes.

etcd_backup_duration_seconds is a histogram of the backups' durations (the manifests' duration_seconds): each
trusted snapshot is observed once, when the exporter first sees it, so it only grows while the exporter runs, as
a Prometheus histogram must (a restart starts again from the snapshots then in the store).
etcd_backup_last_duration_seconds is the newest verified snapshot's duration.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, TypeVar, cast
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .catalog import FUTURE_SKEW, Listing, Trust, read_manifest
from .errors import EtcdBackupError, FormatError, SnapshotNotFound
from .keys import Keyring
from .manifest import MANIFEST_SUFFIX, OBJECT_SUFFIX, SnapshotManifest, parse_time
from .monitor import assess
from .run_status import DRILL_OBJECT, STATUS_OBJECT, DrillRecord, RunStatus, load_drill, load_status
from .stores import Store
from .stores.base import ObjectInfo

if TYPE_CHECKING:
    from .continuous.stored import StreamSummary

R = TypeVar("R")

# Backups take seconds to a quarter of an hour (the CronJob's default deadline).
DURATION_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0)
READ_THREADS = 8  # manifests read at once after a change (the first refresh reads them all)
# Judging a manifest when it is read checks its MAC only; whether it is dated in the future is checked at
# every refresh, against the time then.
_NO_FUTURE = datetime.max.replace(tzinfo=UTC) - FUTURE_SKEW


@dataclass(frozen=True)
class _Read:
    """A manifest as read at one version (etag) of its object: the manifest, or why it is not one."""

    etag: str
    manifest: SnapshotManifest | None
    mac_reason: str  # the judgement of its MAC ("" when it authenticates or no keyring is given)
    problem: str  # "" or why it is not a snapshot manifest


@dataclass(frozen=True)
class StoreView:
    listing: Listing
    status: RunStatus
    drill: DrillRecord
    stream: StreamSummary | None


class IncrementalReader:
    """Reads a store's catalog, run record and stream coverage, reusing what has not changed since the last
    refresh (by name and etag). Not thread-safe: one refresh at a time."""

    def __init__(self, store: Store, keyring: Keyring | None):
        self.store = store
        self.keyring = keyring
        self._manifests: dict[str, _Read] = {}
        self._records: dict[str, tuple[str, Any]] = {}  # record object name -> (etag, record)
        self._stream: tuple[tuple[str, str], StreamSummary | None] | None = None

    def refresh(self, now: datetime) -> StoreView:
        """EtcdBackupError when the store cannot be listed; a manifest that cannot be read or trusted is a
        problem in the listing (as in catalog.list_snapshots), never an error."""
        objects = {o.name: o for o in self.store.list_objects()}
        return StoreView(self._listing(objects, now), self._record(objects, STATUS_OBJECT, load_status, RunStatus),
                         self._record(objects, DRILL_OBJECT, load_drill, DrillRecord), self._stream_summary(objects))

    def _listing(self, objects: dict[str, ObjectInfo], now: datetime) -> Listing:
        listing = Listing([])
        wanted: list[ObjectInfo] = []
        for name, info in sorted(objects.items()):
            if not name.endswith(MANIFEST_SUFFIX):
                continue
            sid = name[: -len(MANIFEST_SUFFIX)]
            if sid + OBJECT_SUFFIX not in objects:
                listing.problems.append(f"{sid}: manifest without its object")
            else:
                wanted.append(info)
        stale = [i for i in wanted if not self._fresh(self._manifests.get(i.name), i)]
        read: dict[str, _Read | str | None] = {}
        if stale:
            with ThreadPoolExecutor(min(READ_THREADS, len(stale)), thread_name_prefix="exporter-read") as pool:
                read = dict(zip([i.name for i in stale], pool.map(self._read, stale), strict=True))
        kept: dict[str, _Read] = {}
        for info in wanted:
            entry = read[info.name] if info.name in read else self._manifests[info.name]
            if entry is None:  # deleted since the listing
                continue
            if isinstance(entry, str):  # a read error: a problem now, read again next time
                listing.problems.append(entry)
                continue
            kept[info.name] = entry
            if entry.manifest is None:
                listing.problems.append(entry.problem)
                continue
            m = entry.manifest
            Trust(now=now).judge({}, m)  # the date only (no keyring): the catalog's own "in the future" reason
            m.untrusted_reason = m.untrusted_reason or entry.mac_reason
            listing.snapshots.append(m)
        self._manifests = kept
        listing.orphans = sorted(n for n in objects if n.endswith(OBJECT_SUFFIX)
                                 and n[: -len(OBJECT_SUFFIX)] + MANIFEST_SUFFIX not in objects)
        listing.snapshots.sort(key=lambda m: (m.created_at, m.id), reverse=True)
        return listing

    @staticmethod
    def _fresh(entry: _Read | None, info: ObjectInfo) -> bool:
        return entry is not None and bool(info.etag) and entry.etag == info.etag

    def _read(self, info: ObjectInfo) -> _Read | str | None:
        try:
            data = self.store.get_bytes(info.name)
        except SnapshotNotFound:
            return None
        except EtcdBackupError as e:
            return str(e)
        try:
            m = read_manifest(data, info.name, Trust(self.keyring, now=_NO_FUTURE))
        except FormatError as e:  # this content is not a manifest: cached until it changes
            return _Read(info.etag, None, "", str(e))
        return _Read(info.etag, m, m.untrusted_reason, "")

    def _record(self, objects: dict[str, ObjectInfo], name: str, load: Callable[[Store], R], empty: type[R]) -> R:
        """The agent's record `name` (run record, drill record), read again only when its object changed."""
        info = objects.get(name)
        if info is None:
            self._records.pop(name, None)
            return empty()
        cached = self._records.get(name)
        if cached is None or not info.etag or cached[0] != info.etag:
            cached = self._records[name] = (info.etag, load(self.store))
        return cast(R, cached[1])

    def _stream_summary(self, objects: dict[str, ObjectInfo]) -> StreamSummary | None:
        """How far continuous backup reaches (only with a key to trust it): re-read when the coverage record
        (or, without one, the newest segment manifest) changed; the segment count comes from the listing."""
        from .continuous.segment import COVERAGE_NAME, first_revision_of, is_segment_manifest
        from .continuous.stored import stream_summary

        if self.keyring is None:
            return None
        segments = [n for n in objects if is_segment_manifest(n)]
        if COVERAGE_NAME in objects:
            source = COVERAGE_NAME
        elif segments:
            source = max(segments, key=lambda n: first_revision_of(n) or 0)
        else:
            self._stream = None
            return None
        key = (source, objects[source].etag)
        if self._stream is None or not key[1] or self._stream[0] != key:
            try:
                self._stream = (key, stream_summary(self.store, self.keyring, list(objects)))
            except EtcdBackupError:
                self._stream = None
                return None
        summary = self._stream[1]
        return None if summary is None else replace(summary, segments=len(segments))


class DurationHistogram:
    """Backup durations, each snapshot observed once (by id)."""

    def __init__(self, buckets: tuple[float, ...] = DURATION_BUCKETS):
        self.buckets = buckets
        self.counts = [0] * len(buckets)  # per bucket, not cumulative
        self.count = 0
        self.sum = 0.0
        self._seen: set[str] = set()

    def observe_new(self, snapshots: Iterable[SnapshotManifest]) -> None:
        present = set()
        for m in snapshots:
            present.add(m.id)
            if m.id in self._seen:
                continue
            self._seen.add(m.id)
            self.count += 1
            self.sum += m.duration_seconds
            for i, le in enumerate(self.buckets):
                if m.duration_seconds <= le:
                    self.counts[i] += 1
                    break
        self._seen &= present  # deleted snapshots need not be remembered (they never come back under their id)

    def cumulative(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for le, n in zip(self.buckets, self.counts, strict=True):
            total += n
            out.append((floatToGoString(le), total))
        return [*out, ("+Inf", self.count)]


class StoreCollector(Collector):
    def __init__(self, store: Store, keyring: Keyring | None, max_age_seconds: float, cache_seconds: float = 15.0):
        self.store = store
        self.keyring = keyring
        self.max_age_seconds = max_age_seconds
        self.cache_seconds = cache_seconds
        self.reader = IncrementalReader(store, keyring)
        self.durations = DurationHistogram()
        self._lock = threading.Lock()
        self._cached: tuple[float, list] | None = None

    def _families(self) -> list:
        labels = ["store"]
        url = [self.store.url]
        up = GaugeMetricFamily("etcd_backup_store_up", "1 if the store could be read", labels=labels)
        now = datetime.now(UTC)
        try:
            view = self.reader.refresh(now)
        except EtcdBackupError:
            up.add_metric(url, 0)
            return [up]
        up.add_metric(url, 1)
        listing = view.listing
        self.durations.observe_new(listing.trusted)
        fresh = assess(listing.trusted, self.max_age_seconds, now)
        last = GaugeMetricFamily("etcd_backup_last_success_timestamp",
                                 "Unix time of the newest verified snapshot in the store", labels=labels)
        last_dur = GaugeMetricFamily("etcd_backup_last_duration_seconds",
                                     "Duration of the newest verified snapshot's backup", labels=labels)
        size = GaugeMetricFamily("etcd_backup_size_bytes", "Stored size of the newest snapshot", labels=labels)
        fails = CounterMetricFamily("etcd_backup_failures", "Failed backup runs recorded by the agent",
                                    labels=labels)
        fails.add_metric(url, view.status.failures_total)
        hist = HistogramMetricFamily("etcd_backup_duration_seconds", "Durations of the backups of the trusted "
                                     "snapshots (each counted once, since the exporter started)", labels=labels)
        hist.add_metric(url, self.durations.cumulative(), self.durations.sum)
        out = [up, fails, hist]
        if fresh.newest is not None:
            last.add_metric(url, fresh.newest.created.timestamp())
            last_dur.add_metric(url, fresh.newest.duration_seconds)
            size.add_metric(url, fresh.newest.stored_size)
            out += [last, last_dur, size]
        count = GaugeMetricFamily("etcd_backup_snapshots", "Trusted snapshots in the store", labels=labels)
        count.add_metric(url, len(listing.trusted))
        untrusted = GaugeMetricFamily(
            "etcd_backup_untrusted_manifests", "Manifests that are invalid, do not authenticate under the key, or "
            "are dated in the future (ignored)", labels=labels)
        untrusted.add_metric(url, len(listing.snapshots) - len(listing.trusted) + len(listing.problems))
        stale = GaugeMetricFamily("etcd_backup_stale", "1 if the newest verified backup is older than max age",
                                  labels=labels)
        stale.add_metric(url, 1 if fresh.stale else 0)
        max_age = GaugeMetricFamily("etcd_backup_max_age_seconds", "Allowed age of the newest backup",
                                    labels=labels)
        max_age.add_metric(url, self.max_age_seconds)
        return out + [count, untrusted, stale, max_age] + self._stream_families(view.stream, labels, url) + \
            _drill_families(view.drill, url) + _cert_families(view.status, url)

    @staticmethod
    def _stream_families(summary: StreamSummary | None, labels: list[str], url: list[str]) -> list:
        """How far continuous backup reaches, only when the store has a delta stream (and a key to trust it)."""
        if summary is None:
            return []
        covered = summary.covered_time.timestamp()
        values = [("etcd_backup_stream_covered_revision", "Every revision up to this one is in the delta stream",
                   summary.covered_revision),
                  ("etcd_backup_stream_covered_timestamp", "Unix time of the newest point the delta stream covers",
                   covered),
                  ("etcd_backup_stream_lag_seconds", "Seconds since the newest point the delta stream covers (the "
                   "data a total loss now would lose)", max(0.0, time.time() - covered)),
                  ("etcd_backup_stream_segments", "Delta segments in the store", summary.segments)]
        families = []
        for name, doc, value in values:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(url, value)
            families.append(g)
        return families

    def collect(self) -> Iterator:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self.cache_seconds:
                self._cached = (now, self._families())
            yield from self._cached[1]


def _drill_families(drill: DrillRecord, url: list[str]) -> list:
    """The restore drills' record (`agent drill` writes it to the store), when there has been one."""
    if not drill.last_time:
        return []
    values = [("etcd_backup_drill_success", "1 when the last restore drill passed, else 0", float(drill.last_ok)),
              ("etcd_backup_restore_estimated_seconds", "Seconds the last complete drill took to fetch, restore and "
               "start etcd: an RTO estimate", drill.estimated_restore_seconds)]
    if drill.last_success_time:
        values.append(("etcd_backup_drill_last_success_timestamp", "Unix time of the last restore drill that passed",
                       parse_time(drill.last_success_time).timestamp()))
    out: list = []
    for name, doc, value in values:
        g = GaugeMetricFamily(name, doc, labels=["store"])
        g.add_metric(url, value)
        out.append(g)
    fails = CounterMetricFamily("etcd_backup_drill_failures", "Restore drills that failed", labels=["store"])
    fails.add_metric(url, drill.failures_total)
    return [*out, fails]


def _cert_families(status: RunStatus, url: list[str]) -> list:
    """When each TLS certificate the backup uses expires, as the last backup run's pre-flight saw it."""
    if not status.cert_expiry:
        return []
    g = GaugeMetricFamily("etcd_backup_cert_expiry_timestamp_seconds", "Unix time when a TLS certificate the backup "
                          "uses expires (client, CA, each member's server certificate)", labels=["store", "cert"])
    for cert, when in sorted(status.cert_expiry.items()):
        g.add_metric([*url, cert], when)
    return [g]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


class _ThreadingWSGIServer(ThreadingHTTPServer):
    daemon_threads = True


def make_exporter(store: Store, keyring: Keyring | None, host: str, port: int, max_age_seconds: float,
                  cache_seconds: float = 15.0):
    """A WSGI server (not yet serving) with /metrics and /healthz (404 elsewhere); call
    serve_forever()/shutdown()."""
    registry = CollectorRegistry()
    registry.register(StoreCollector(store, keyring, max_age_seconds, cache_seconds))
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: the exporter serves /metrics and /healthz\n"]

    from wsgiref.simple_server import WSGIServer

    class Server(_ThreadingWSGIServer, WSGIServer):
        pass

    return make_server(host, port, app, server_class=Server, handler_class=_QuietHandler)
