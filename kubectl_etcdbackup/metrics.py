"""Prometheus metrics of the backup job: written to a node-exporter textfile and/or pushed to a Pushgateway.

etcd_backup_failures_total is a counter across runs, so its previous value is read back from the
textfile (the textfile is the state between CronJob runs). etcd_backup_retention_expected_bytes and
etcd_backup_retention_fits say whether the retention policy's steady state fits the store (when known).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from .retention import RetentionFit

JOB = "etcd_backup"


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


def build_registry(store_url: str, *, success: bool, duration: float, size: int | None,
                   textfile: str | None, retention: RetentionFit | None = None) -> CollectorRegistry:
    reg = CollectorRegistry()
    labels = {"store": store_url}
    last = Gauge("etcd_backup_last_success_timestamp", "Unix time of the last successful, verified backup",
                 ["store"], registry=reg)
    dur = Gauge("etcd_backup_duration_seconds", "Duration of the last backup attempt", ["store"], registry=reg)
    sz = Gauge("etcd_backup_size_bytes", "Stored size of the last successful backup", ["store"], registry=reg)
    fails = Counter("etcd_backup_failures", "Failed backup attempts", ["store"], registry=reg)
    prev_last = _previous(textfile, "etcd_backup_last_success_timestamp").get(store_url)
    prev_size = _previous(textfile, "etcd_backup_size_bytes").get(store_url)
    prev_fail = _previous(textfile, "etcd_backup_failures_total").get(store_url, 0.0)
    dur.labels(**labels).set(duration)
    if success:
        last.labels(**labels).set(time.time())
        sz.labels(**labels).set(size or 0)
    else:
        if prev_last is not None:
            last.labels(**labels).set(prev_last)
        if prev_size is not None:
            sz.labels(**labels).set(prev_size)
    fails.labels(**labels).inc(prev_fail + (0 if success else 1))
    if retention is not None:
        _retention_gauges(reg, labels, retention)
    return reg


def _retention_gauges(reg: CollectorRegistry, labels: dict[str, str], retention: RetentionFit) -> None:
    Gauge("etcd_backup_retention_expected_bytes", "Bytes the retention policy keeps in the long run "
          "(steady-state snapshot count x newest stored size)", ["store"], registry=reg,
          ).labels(**labels).set(retention.expected_bytes)
    if retention.fits is not None:
        Gauge("etcd_backup_retention_fits", "1 when the retention policy's steady state (plus the snapshot being "
              "written) fits the store's capacity, else 0", ["store"], registry=reg,
              ).labels(**labels).set(1 if retention.fits else 0)


def publish(store_url: str, *, success: bool, duration: float, size: int | None = None,
            textfile: str | None = None, pushgateway: str | None = None,
            retention: RetentionFit | None = None) -> list[str]:
    """Write/push the metrics. Returns problems (metrics must never fail the backup itself)."""
    problems: list[str] = []
    reg = build_registry(store_url, success=success, duration=duration, size=size, textfile=textfile,
                         retention=retention)
    if textfile:
        try:
            Path(textfile).parent.mkdir(parents=True, exist_ok=True)
            write_to_textfile(textfile, reg)
        except OSError as e:
            problems.append(f"cannot write metrics textfile {textfile}: {e.strerror}")
    if pushgateway:
        try:
            push_to_gateway(pushgateway, job=JOB, registry=reg, timeout=10)
        except OSError as e:
            problems.append(f"cannot push metrics to {pushgateway}: {e}")
    return problems
