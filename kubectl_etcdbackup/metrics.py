"""Prometheus metrics of the backup job and of restore drills: written to a node-exporter textfile and/or pushed to a
Pushgateway.

etcd_backup_failures_total is a counter across runs, so its previous value is read back from the
textfile (the textfile is the state between CronJob runs). Every backup metric has a `store` label: a run with
copies (`--copy-to`) reports each store on its own. etcd_backup_retention_expected_bytes and
etcd_backup_retention_fits say whether the retention policy's steady state fits the store (when known).
The pre-flight checks add etcd_backup_preflight_warnings and etcd_backup_cert_expiry_timestamp_seconds{cert}.
Drills (`agent drill`) have their own metrics, textfile and Pushgateway job (pushing replaces a job's metrics).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from .retention import RetentionFit

if TYPE_CHECKING:
    from .preflight import PreflightReport

JOB = "etcd_backup"
DRILL_JOB = "etcd_backup_drill"


@dataclass(frozen=True)
class StoreMetrics:
    """One store's outcome in a backup run."""

    store_url: str
    success: bool
    size: int | None = None  # stored size of the new snapshot
    retention: RetentionFit | None = None


def _previous(textfile: str | None, name: str) -> dict[str, float]:
    """Previous values of a metric in the textfile, by store label."""
    if not textfile or not os.path.isfile(textfile):
        return {}
    out: dict[str, float] = {}
    try:
        for fam in text_string_to_metric_families(Path(textfile).read_text()):
            for s in fam.samples:
                if s.name == name:
                    out[s.labels.get("store", "")] = s.value
    except (ValueError, OSError):
        return {}
    return out


def build_registry(stores: Sequence[StoreMetrics], *, duration: float, textfile: str | None,
                   preflight: PreflightReport | None = None) -> CollectorRegistry:
    reg = CollectorRegistry()
    last = Gauge("etcd_backup_last_success_timestamp", "Unix time of the last successful, verified backup",
                 ["store"], registry=reg)
    dur = Gauge("etcd_backup_last_duration_seconds", "Duration of the last backup attempt", ["store"],
                registry=reg)
    sz = Gauge("etcd_backup_size_bytes", "Stored size of the last successful backup", ["store"], registry=reg)
    fails = Counter("etcd_backup_failures", "Failed backup attempts", ["store"], registry=reg)
    prev_last = _previous(textfile, "etcd_backup_last_success_timestamp")
    prev_size = _previous(textfile, "etcd_backup_size_bytes")
    prev_fail = _previous(textfile, "etcd_backup_failures_total")
    for s in stores:
        labels = {"store": s.store_url}
        dur.labels(**labels).set(duration)
        if s.success:
            last.labels(**labels).set(time.time())
            sz.labels(**labels).set(s.size or 0)
        else:
            if s.store_url in prev_last:
                last.labels(**labels).set(prev_last[s.store_url])
            if s.store_url in prev_size:
                sz.labels(**labels).set(prev_size[s.store_url])
        fails.labels(**labels).inc(prev_fail.get(s.store_url, 0.0) + (0 if s.success else 1))
    _retention_gauges(reg, {s.store_url: s.retention for s in stores if s.retention is not None})
    if preflight is not None:
        _preflight_gauges(reg, preflight)
    return reg


def _retention_gauges(reg: CollectorRegistry, fits: dict[str, RetentionFit]) -> None:
    if not fits:
        return
    expected = Gauge("etcd_backup_retention_expected_bytes", "Bytes the retention policy keeps in the long run "
                     "(steady-state snapshot count x newest stored size)", ["store"], registry=reg)
    fits_gauge = Gauge("etcd_backup_retention_fits", "1 when the retention policy's steady state (plus the snapshot "
                       "being written) fits the store's capacity, else 0", ["store"], registry=reg)
    for store_url, fit in fits.items():
        expected.labels(store=store_url).set(fit.expected_bytes)
        if fit.fits is not None:
            fits_gauge.labels(store=store_url).set(1 if fit.fits else 0)


def _preflight_gauges(reg: CollectorRegistry, preflight: PreflightReport) -> None:
    Gauge("etcd_backup_preflight_warnings", "Warnings of the pre-flight checks of the last backup run (member "
          "health and alarms, certificates, store room)", registry=reg).set(len(preflight.warnings))
    expiry = Gauge("etcd_backup_cert_expiry_timestamp_seconds", "Unix time when a TLS certificate the backup uses "
                   "expires: the client certificate, each CA, and each etcd member's server certificate (as seen "
                   "in the TLS handshake)", ["cert"], registry=reg)
    for cert in preflight.certs:
        expiry.labels(cert=cert.name).set(cert.not_after.timestamp())


def publish(stores: Sequence[StoreMetrics], *, duration: float, textfile: str | None = None,
            pushgateway: str | None = None, preflight: PreflightReport | None = None) -> list[str]:
    """Write/push the metrics of a backup run. Returns problems (metrics must never fail the backup itself)."""
    reg = build_registry(stores, duration=duration, textfile=textfile, preflight=preflight)
    return _emit(reg, textfile, pushgateway, JOB)


def publish_drill(store_url: str, *, success: bool, duration: float, estimated_restore: float | None,
                  textfile: str | None = None, pushgateway: str | None = None) -> list[str]:
    """Write/push the metrics of a restore drill (its own textfile and Pushgateway job). Returns problems."""
    reg = CollectorRegistry()
    labels = {"store": store_url}
    last = Gauge("etcd_backup_drill_last_success_timestamp", "Unix time of the last restore drill that passed",
                 ["store"], registry=reg)
    Gauge("etcd_backup_drill_duration_seconds", "Duration of the last restore drill", ["store"], registry=reg,
          ).labels(**labels).set(duration)
    Gauge("etcd_backup_drill_success", "1 when the last restore drill passed, else 0", ["store"], registry=reg,
          ).labels(**labels).set(1 if success else 0)
    estimate = Gauge("etcd_backup_restore_estimated_seconds", "Time a restore of the newest snapshot took in the "
                     "last drill (fetch and decrypt + etcdutl restore + etcd healthy): an RTO estimate",
                     ["store"], registry=reg)
    if success:
        last.labels(**labels).set(time.time())
    elif store_url in (prev := _previous(textfile, "etcd_backup_drill_last_success_timestamp")):
        last.labels(**labels).set(prev[store_url])
    if estimated_restore is not None:
        estimate.labels(**labels).set(estimated_restore)
    elif store_url in (prev := _previous(textfile, "etcd_backup_restore_estimated_seconds")):
        estimate.labels(**labels).set(prev[store_url])
    return _emit(reg, textfile, pushgateway, DRILL_JOB)


def _emit(reg: CollectorRegistry, textfile: str | None, pushgateway: str | None, job: str) -> list[str]:
    problems: list[str] = []
    if textfile:
        try:
            Path(textfile).parent.mkdir(parents=True, exist_ok=True)
            write_to_textfile(textfile, reg)
        except OSError as e:
            problems.append(f"cannot write metrics textfile {textfile}: {e.strerror}")
    if pushgateway:
        try:
            push_to_gateway(pushgateway, job=job, registry=reg, timeout=10)
        except OSError as e:
            problems.append(f"cannot push metrics to {pushgateway}: {e}")
    return problems
