"""Metrics exporter: serves /metrics by reading the store itself, so it alerts even when the CronJob is
gone or keeps failing. Each scrape lists the store (cached for a few seconds to spare S3)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .catalog import list_snapshots
from .errors import EtcdBackupError
from .keys import Keyring
from .monitor import assess
from .run_status import load_status
from .stores import Store


class StoreCollector(Collector):
    def __init__(self, store: Store, keyring: Keyring | None, max_age_seconds: float, cache_seconds: float = 15.0):
        self.store = store
        self.keyring = keyring
        self.max_age_seconds = max_age_seconds
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, list] | None = None

    def _families(self) -> list:
        labels = ["store"]
        url = [self.store.url]
        up = GaugeMetricFamily("etcd_backup_store_up", "1 if the store could be read", labels=labels)
        try:
            listing = list_snapshots(self.store, self.keyring)
            status = load_status(self.store)
        except EtcdBackupError:
            up.add_metric(url, 0)
            return [up]
        up.add_metric(url, 1)
        fresh = assess(listing.trusted, self.max_age_seconds, datetime.now(UTC))
        last = GaugeMetricFamily("etcd_backup_last_success_timestamp",
                                 "Unix time of the newest verified snapshot in the store", labels=labels)
        dur = GaugeMetricFamily("etcd_backup_duration_seconds", "Duration of the newest snapshot's backup",
                                labels=labels)
        size = GaugeMetricFamily("etcd_backup_size_bytes", "Stored size of the newest snapshot", labels=labels)
        fails = CounterMetricFamily("etcd_backup_failures", "Failed backup runs recorded by the agent",
                                    labels=labels)
        fails.add_metric(url, status.failures_total)
        out = [up, fails]
        if fresh.newest is not None:
            last.add_metric(url, fresh.newest.created.timestamp())
            dur.add_metric(url, fresh.newest.duration_seconds)
            size.add_metric(url, fresh.newest.stored_size)
            out += [last, dur, size]
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
        return out + [count, untrusted, stale, max_age] + self._stream_families(labels, url)

    def _stream_families(self, labels: list[str], url: list[str]) -> list:
        """How far continuous backup reaches, only when the store has a delta stream (and a key to trust it)."""
        from .continuous.stored import stream_summary

        if self.keyring is None:
            return []
        try:
            summary = stream_summary(self.store, self.keyring)
        except EtcdBackupError:
            return []
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


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


class _ThreadingWSGIServer(ThreadingHTTPServer):
    daemon_threads = True


def make_exporter(store: Store, keyring: Keyring | None, host: str, port: int, max_age_seconds: float,
                  cache_seconds: float = 15.0):
    """A WSGI server (not yet serving) with /metrics and /healthz; call serve_forever()/shutdown()."""
    registry = CollectorRegistry()
    registry.register(StoreCollector(store, keyring, max_age_seconds, cache_seconds))
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        return metrics_app(environ, start_response)

    from wsgiref.simple_server import WSGIServer

    class Server(_ThreadingWSGIServer, WSGIServer):
        pass

    return make_server(host, port, app, server_class=Server, handler_class=_QuietHandler)
