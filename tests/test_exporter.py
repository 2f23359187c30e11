"""`agent exporter` at scale: a refresh lists the store once and reads only new or changed manifests (requests
counted on a real S3 API, moto over HTTP), answers within 0.5 s with 1,000 snapshots, serves /metrics and
/healthz only; the duration histogram observes each snapshot once; the exporter judges manifests exactly as
the catalog does (and redoes the "in the future" check as time passes)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from infra.ports import allocate_port
from prometheus_client.parser import text_string_to_metric_families

from kubectl_etcdbackup.catalog import list_snapshots, save_manifest
from kubectl_etcdbackup.exporter import DURATION_BUCKETS, make_exporter
from kubectl_etcdbackup.keys import Keyring, decode_keyring, generate_key
from kubectl_etcdbackup.manifest import SnapshotManifest, format_time, manifest_name, object_name
from kubectl_etcdbackup.run_status import RunStatus, save_status
from kubectl_etcdbackup.stores import FileStore, Store
from kubectl_etcdbackup.stores.s3_store import S3Store

NOW = datetime.now(UTC)


def keyring() -> Keyring:
    return decode_keyring(generate_key(), "test key")


def put_snapshot(store: Store, keys: Keyring | None, n: int, *, age: timedelta | None = None,
                 duration: float = 2.0, at: datetime | None = None) -> SnapshotManifest:
    """A small dummy object and its authenticated manifest, written with the catalog API (no etcd)."""
    t = at or NOW - (age if age is not None else timedelta(minutes=n))
    sid = f"etcd-{t:%Y%m%dT%H%M%S}{t.microsecond // 1000:03d}Z-{n:04x}"
    m = SnapshotManifest(
        id=sid, created_at=format_time(t), etcd_revision=1000 + n, key_count=10, etcd_version="3.5.21",
        cluster_id="cdf818194e3a8c32", member_id="8e9e05c52164694d", member_endpoint="https://127.0.0.1:2379",
        raw_size=64, stored_size=48,
        raw_sha256="a" * 64, stored_sha256="b" * 64, codec="zstd", cipher="aes-256-gcm" if keys else "none",
        key_id=keys.primary_id.hex() if keys else "", duration_seconds=duration, verified=True)
    store.put_bytes(object_name(sid), b"x" * 48)
    save_manifest(store, m, keys)
    return m


class RequestCounter:
    """Counts the HTTP requests a boto3 client sends (every attempt), by operation, and the time spent waiting
    for S3's answers (from sending a request to having its whole body, before parsing it)."""

    def __init__(self, client: object) -> None:
        self.calls: list[str] = []
        self.waited = 0.0
        self._sent = threading.local()
        client.meta.events.register("before-send.s3", self._send)  # type: ignore[attr-defined]
        client.meta.events.register("before-parse.s3", self._answered)  # type: ignore[attr-defined]

    def _send(self, event_name: str, **_: object) -> None:  # before-send.s3.<Operation>
        self.calls.append(event_name.rsplit(".", 1)[-1])
        self._sent.at = time.monotonic()

    def _answered(self, **_: object) -> None:
        self.waited += time.monotonic() - self._sent.at

    def take(self) -> list[str]:
        out, self.calls, self.waited = self.calls, [], 0.0
        return out


@contextmanager
def serving(store: Store, keys: Keyring | None, max_age: float = 3600) -> Iterator[str]:
    port = allocate_port()
    server = make_exporter(store, keys, "127.0.0.1", port, max_age_seconds=max_age, cache_seconds=0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        t.join(timeout=10)


def scrape(base: str) -> tuple[dict[str, float], float]:
    t0 = time.monotonic()
    body = urllib.request.urlopen(f"{base}/metrics", timeout=30).read().decode()
    took = time.monotonic() - t0
    samples = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            le = s.labels.get("le")
            samples[s.name + (f"{{le={le}}}" if le else "")] = s.value
    return samples, took


@pytest.mark.parametrize("count", [10, 100, 1000])
def test_scrape_reads_only_what_changed_on_s3(s3_server, s3_bucket, count) -> None:
    keys = keyring()
    writer = S3Store(s3_bucket, "etcd", client=s3_server.client())
    for n in range(count):
        put_snapshot(writer, keys, n, duration=1.0 + n % 20)
    store = S3Store(s3_bucket, "etcd", client=s3_server.client())
    counter = RequestCounter(store.client)
    def pages(objects: int) -> int:  # list_objects_v2 returns 1,000 keys a page
        return -(-objects // 1000)

    with serving(store, keys) as base:
        first, t_first = scrape(base)
        assert counter.take() == ["ListObjectsV2"] * pages(2 * count) + ["GetObject"] * count
        assert first["etcd_backup_snapshots"] == count and first["etcd_backup_untrusted_manifests"] == 0
        assert first["etcd_backup_duration_seconds_count"] == count
        unchanged, own = [], []
        for _ in range(3):  # the best of 3: other tests share the 2 cores (and moto runs in this process)
            second, took = scrape(base)
            own.append(took - counter.waited)  # the exporter's own time: moto's listing is not the exporter's
            assert counter.take() == ["ListObjectsV2"] * pages(2 * count)  # nothing changed: the listing only
            assert second == first
            unchanged.append(took)
        t_second = min(unchanged)
        # A new snapshot and a new run record: one GET each.
        newest = put_snapshot(writer, keys, count, age=timedelta(0), duration=42.0)
        save_status(writer, RunStatus(failures_total=3))
        third, t_third = scrape(base)
        assert sorted(counter.take()) == sorted(["ListObjectsV2"] * pages(2 * count + 3) + ["GetObject"] * 2)
        assert third["etcd_backup_snapshots"] == count + 1 and third["etcd_backup_failures_total"] == 3
        assert third["etcd_backup_last_duration_seconds"] == 42.0
        assert third["etcd_backup_last_success_timestamp"] == newest.created.timestamp()
        assert third["etcd_backup_duration_seconds_count"] == count + 1
        fourth, _ = scrape(base)
        assert counter.take() == ["ListObjectsV2"] * pages(2 * count + 3)
        assert fourth["etcd_backup_failures_total"] == 3
    print(f"\n{count} snapshots on S3: first scrape {pages(2 * count)} LIST + {count} GET in {t_first:.2f} s; "
          f"unchanged: {pages(2 * count)} LIST in {t_second:.3f} s (best of 3; worst {max(unchanged):.3f} s; the "
          f"exporter's own part {min(own):.3f} s); "
          f"a new snapshot and run record: {pages(2 * count + 3)} LIST + 2 GET in {t_third:.3f} s")
    # The whole answer takes <= 0.5 s on an idle 2-core VM (0.44 s at 1,000 snapshots, most of it moto listing
    # 2,000 keys); on a loaded one moto's part varies, so the bound is on the exporter's own part.
    assert min(own) <= 0.5, f"an unchanged scrape of {count} snapshots took the exporter {min(own):.2f} s"


def test_only_metrics_and_healthz_are_served(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    with serving(store, None) as base:
        assert urllib.request.urlopen(f"{base}/healthz", timeout=10).read() == b"ok\n"
        assert b"etcd_backup_store_up" in urllib.request.urlopen(f"{base}/metrics", timeout=10).read()
        for path in ("/", "/metricsx", "/metrics/", "/favicon.ico", "/api/v1/query"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"{base}{path}", timeout=10)
            assert e.value.code == 404, path


def test_duration_histogram_counts_each_snapshot_once(tmp_path: Path) -> None:
    keys = keyring()
    store = FileStore(tmp_path / "store")
    durations = [0.4, 3.0, 45.0, 200.0, 1200.0]
    made = [put_snapshot(store, keys, n, duration=d, age=timedelta(minutes=10 * (len(durations) - n)))
            for n, d in enumerate(durations)]
    with serving(store, keys) as base:
        m, _ = scrape(base)
        assert tuple(float(le) for le in (1, 5, 10, 30, 60, 120, 300, 600, 900)) == DURATION_BUCKETS
        expected = {"1.0": 1, "5.0": 2, "10.0": 2, "30.0": 2, "60.0": 3, "120.0": 3, "300.0": 4, "600.0": 4,
                    "900.0": 4, "+Inf": 5}
        assert {k: m[f"etcd_backup_duration_seconds_bucket{{le={k}}}"] for k in expected} == expected
        assert m["etcd_backup_duration_seconds_count"] == 5 and m["etcd_backup_duration_seconds_sum"] == sum(durations)
        assert m["etcd_backup_last_duration_seconds"] == 1200.0
        assert "etcd_backup_duration_seconds" not in m  # no gauge of that name any more
        # Retention deletes one: the histogram never goes down; a new one is observed once, however often scraped.
        store.delete(manifest_name(made[0].id))
        store.delete(object_name(made[0].id))
        put_snapshot(store, keys, 9, duration=7.0, age=timedelta(0))
        for _ in range(3):
            m, _ = scrape(base)
        assert m["etcd_backup_duration_seconds_count"] == 6 and m["etcd_backup_snapshots"] == 5
        assert m["etcd_backup_duration_seconds_bucket{le=10.0}"] == 3
        assert m["etcd_backup_last_duration_seconds"] == 7.0
        # A forged manifest is never observed.
        forged = put_snapshot(store, keys, 10, duration=3.0, age=timedelta(0))
        store.put_bytes(manifest_name(forged.id), forged.to_json().replace(b'"duration_seconds": 3.0',
                                                                           b'"duration_seconds": 1.0'))
        m, _ = scrape(base)
        assert m["etcd_backup_duration_seconds_count"] == 6 and m["etcd_backup_untrusted_manifests"] == 1


def test_exporter_judges_manifests_as_the_catalog_does(tmp_path: Path) -> None:
    """Every kind of bad manifest, and a changed one re-read: the exporter's counts equal list_snapshots'."""
    keys = keyring()
    store = FileStore(tmp_path / "store")
    good = put_snapshot(store, keys, 1, age=timedelta(minutes=30))
    put_snapshot(store, keys, 2, age=timedelta(minutes=20))
    lonely = put_snapshot(store, keys, 3, age=timedelta(minutes=10))
    store.delete(object_name(lonely.id))  # manifest without its object
    store.put_bytes("etcd-20260101T000000000Z-dead.json", b"{not json")  # and its object:
    store.put_bytes("etcd-20260101T000000000Z-dead.etcdbak", b"x")
    put_snapshot(store, keyring(), 4, age=timedelta(minutes=5))  # another key
    put_snapshot(store, None, 5, age=timedelta(minutes=1))  # plaintext while a key is given
    store.put_bytes(object_name("etcd-orphan"), b"x")

    def catalog_counts() -> tuple[int, int]:
        listing = list_snapshots(store, keys)
        return len(listing.trusted), len(listing.snapshots) - len(listing.trusted) + len(listing.problems)

    with serving(store, keys) as base:
        m, _ = scrape(base)
        assert (m["etcd_backup_snapshots"], m["etcd_backup_untrusted_manifests"]) == catalog_counts() == (2, 4)
        # Tampering with a trusted manifest (same size: a new mtime/inode) is seen at the next scrape.
        data = store.get_bytes(manifest_name(good.id))
        store.put_bytes(manifest_name(good.id), data.replace(b'"key_count": 10', b'"key_count": 11'))
        m, _ = scrape(base)
        assert (m["etcd_backup_snapshots"], m["etcd_backup_untrusted_manifests"]) == catalog_counts() == (1, 5)


def test_future_dated_manifest_counts_once_its_time_has_come(tmp_path: Path) -> None:
    """The date is judged at every refresh, without reading the manifest again."""
    keys = keyring()
    store = FileStore(tmp_path / "store")
    reads: list[str] = []
    get_bytes = store.get_bytes
    store.get_bytes = lambda name: reads.append(name) or get_bytes(name)  # type: ignore[method-assign]
    at = datetime.now(UTC) + timedelta(minutes=5, seconds=1.5)
    put_snapshot(store, keys, 1, at=at)
    with serving(store, keys) as base:
        m, _ = scrape(base)
        assert m["etcd_backup_snapshots"] == 0 and m["etcd_backup_untrusted_manifests"] == 1
        assert m["etcd_backup_stale"] == 1 and len(reads) == 1
        deadline = time.monotonic() + 10
        while m["etcd_backup_snapshots"] == 0 and time.monotonic() < deadline:
            time.sleep(0.25)
            m, _ = scrape(base)
        assert m["etcd_backup_snapshots"] == 1 and m["etcd_backup_untrusted_manifests"] == 0
        assert m["etcd_backup_duration_seconds_count"] == 1 and len(reads) == 1


def test_file_store_list_objects_tells_changes_apart(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    store.put_bytes("a.json", b"12345")
    store.put_bytes("b.etcdbak", b"1")
    (tmp_path / "store" / ".tmp-x").write_bytes(b"")
    before = {o.name: o for o in store.list_objects()}
    assert sorted(before) == store.list_names() == ["a.json", "b.etcdbak"]
    assert before["a.json"].size == 5 and before["a.json"].etag
    store.put_bytes("a.json", b"54321")  # same size, rewritten
    after = {o.name: o for o in store.list_objects()}
    assert after["a.json"].etag != before["a.json"].etag and after["b.etcdbak"] == before["b.etcdbak"]


def test_s3_list_objects_has_sizes_and_etags(s3_server, s3_bucket) -> None:
    store = S3Store(s3_bucket, "p", client=s3_server.client())
    store.put_bytes("a.json", b"12345")
    store.put_bytes("b.json", b"1")
    S3Store(s3_bucket, "p/nested", client=s3_server.client()).put_bytes("c.json", b"1")
    objs = store.list_objects()
    assert [(o.name, o.size) for o in objs] == [("a.json", 5), ("b.json", 1)] and [o.name for o in objs] == \
        store.list_names()
    store.put_bytes("a.json", b"54321")
    assert store.list_objects()[0].etag != objs[0].etag and store.list_objects()[1] == objs[1]


def test_drill_record_and_cert_expiry_are_published_from_the_store(tmp_path: Path) -> None:
    """What `agent drill` and the backup's pre-flight record in the store reaches Prometheus through the exporter
    (no Pushgateway needed): the drill alerts and the certificate alert have data."""
    from kubectl_etcdbackup.run_status import DrillRecord, save_drill

    store, keys = FileStore(tmp_path / "store"), keyring()
    put_snapshot(store, keys, 0)
    expiry = datetime(2027, 1, 2, tzinfo=UTC).timestamp()
    save_status(store, RunStatus(cert_expiry={"client": expiry, "server 127.0.0.1:2379": expiry + 60}))
    drill = DrillRecord(estimated_restore_seconds=42.5)
    drill.record("2026-12-01T03:00:00.000Z", "etcd-x", "")
    drill.record("2026-12-02T03:00:00.000Z", "etcd-y", "49 live keys, the manifest says 56")
    save_drill(store, drill)
    with serving(store, keys) as base:
        m, _ = scrape(base)
        body = urllib.request.urlopen(f"{base}/metrics", timeout=30).read().decode()
    certs = {s.labels["cert"]: s.value for fam in text_string_to_metric_families(body) for s in fam.samples
             if s.name == "etcd_backup_cert_expiry_timestamp_seconds"}
    assert certs == {"client": expiry, "server 127.0.0.1:2379": expiry + 60}
    assert m["etcd_backup_drill_success"] == 0 and m["etcd_backup_drill_failures_total"] == 1
    assert m["etcd_backup_drill_last_success_timestamp"] == datetime(2026, 12, 1, 3, tzinfo=UTC).timestamp()
    assert m["etcd_backup_restore_estimated_seconds"] == 42.5
