"""Continuous backup in the catalog (issue 11): chains in `list`/`describe`, `verify --chain`, retention of
segments in `prune`, `restore --to-revision` of a member, stream metrics and status. Real etcd 3.5.1 with mTLS,
a file store and S3 over HTTP (moto); helpers shared with test_continuous."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli, write_key
from infra.etcd_binaries import EtcdBinaries
from infra.ports import allocate_ports, release_ports
from prometheus_client.parser import text_string_to_metric_families
from test_continuous import State, _base, _client, _put, _state, _streaming, _tls, _wait_covered

from kubectl_etcdbackup.backup import BackupOptions, take_backup
from kubectl_etcdbackup.catalog import list_snapshots
from kubectl_etcdbackup.continuous.chain import segment_retention
from kubectl_etcdbackup.continuous.segment import SegmentManifest, segment_object_name
from kubectl_etcdbackup.continuous.stored import read_stream
from kubectl_etcdbackup.etcd.client import EtcdClient
from kubectl_etcdbackup.etcd.rpc import Stubs
from kubectl_etcdbackup.exporter import make_exporter
from kubectl_etcdbackup.keys import Keyring, load_keyring
from kubectl_etcdbackup.manifest import SnapshotManifest
from kubectl_etcdbackup.retention import RetentionPolicy
from kubectl_etcdbackup.stores import Store, open_store
from kubectl_etcdbackup.usecases.prune import KEEP, WOULD_DELETE, PruneOptions, run_prune
from kubectl_etcdbackup.usecases.source import SourceSpec
from kubectl_etcdbackup.usecases.status import StatusOptions, _backups


@dataclass
class Streamed:
    url: str
    store: Store
    key: Path
    ring: Keyring
    base: int  # the chain's base snapshot revision
    mid: int  # a revision inside the chain
    want_mid: State  # the cluster's state at `mid`
    covered: int


@pytest.fixture(scope="module")
def streamed(etcd35_tls_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Streamed:
    """A file store with a base snapshot and a delta chain of several segments (shared: copy before damaging)."""
    cluster, d = etcd35_tls_cluster, tmp_path_factory.mktemp("catalog")
    key = write_key(d / "key")
    ring = load_keyring(str(key), None)
    assert ring is not None
    url = f"file://{d / 'store'}"
    store = open_store(url, create=True)
    p = f"/catalog/{uuid.uuid4().hex[:8]}/"
    base = _base(cluster, store, ring)
    with _client(cluster) as kv, _streaming(cluster, store, ring, flush=0.3):
        for i in range(3):
            mid = _put(kv, f"{p}a{i}", f"v{i}")
            _wait_covered(store, ring, mid)
        for i in range(3):
            rev = _put(kv, f"{p}b{i}", "later")
            _wait_covered(store, ring, rev)
        covered = _wait_covered(store, ring, rev)
        want_mid, _ = _state(kv, mid)
    return Streamed(url, store, key, ring, base, mid, want_mid, covered)


def _chain_id(s: Streamed) -> str:
    return next(m.id for m in list_snapshots(s.store, s.ring).snapshots if m.etcd_revision == s.base)


# ---------------------------------------------------------------------------- list, describe, verify


def test_list_shows_each_chain_with_its_window(streamed: Streamed, capsys: pytest.CaptureFixture[str]) -> None:
    s, chain = streamed, _chain_id(streamed)
    segs = sorted(read_stream(s.store, s.ring).segments, key=lambda m: m.first_revision)
    table = run_cli(capsys, "list", "--store", s.url, "--key-file", s.key)
    assert table.rc == 0, table.err
    assert "Delta chains" in table.out and f"{s.base}..{s.covered}" in table.out
    plain = run_cli(capsys, "list", "--store", s.url, "--key-file", s.key, "-o", "json").json()
    assert isinstance(plain, list) and [m["id"] for m in plain] == [chain]  # the snapshot array, unchanged
    [c] = run_cli(capsys, "list", "--chains", "--store", s.url, "--key-file", s.key, "-o", "json").json()
    assert (c["chain"], c["from_revision"], c["to_revision"], c["segments"], c["state"], c["current"]) == \
        (chain, s.base, s.covered, len(segs), "ok", True)
    assert c["from_time"] < c["to_time"] <= datetime.now(UTC).isoformat()
    d = run_cli(capsys, "describe", "--chain", "latest", "--store", s.url, "--key-file", s.key, "-o", "json").json()
    assert [x["segment"] for x in d["segment_list"]] == [m.id for m in segs]
    assert d["segment_list"][0]["first_revision"] == s.base + 1
    shown = run_cli(capsys, "describe", "--chain", chain, "--store", s.url, "--key-file", s.key)
    assert shown.rc == 0 and segs[-1].id in shown.out


def test_verify_chain_passes_and_names_a_tampered_segment(streamed: Streamed, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    s = streamed
    ok = run_cli(capsys, "verify", "--chain", "latest", "--store", s.url, "--key-file", s.key, "-o", "json")
    assert ok.rc == 0, ok.err
    assert ok.json() and all(r["status"] == "ok" for r in ok.json())
    copy = tmp_path / "store"
    shutil.copytree(s.url.removeprefix("file://"), copy)
    seg = sorted(read_stream(s.store, s.ring).segments, key=lambda m: m.first_revision)[1]
    obj = copy / segment_object_name(seg.id)
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 1
    obj.write_bytes(bytes(data))
    bad = run_cli(capsys, "verify", "--chain", "latest", "--store", f"file://{copy}", "--key-file", s.key)
    assert bad.rc == 1
    assert seg.id in bad.err and "does not match" in bad.err, bad.err
    assert len(bad.err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- prune


def test_prune_keeps_the_segments_a_kept_snapshot_needs(etcd35_tls_cluster: Any, s3_server: Any,
                                                        s3_store_url: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    cluster = etcd35_tls_cluster
    key = write_key(tmp_path / "key")
    ring = load_keyring(str(key), None)
    assert ring is not None
    store = open_store(s3_store_url, s3_endpoint_url=s3_server.endpoint_url)
    p = f"/prune/{uuid.uuid4().hex[:8]}/"
    first = _base(cluster, store, ring)
    with _client(cluster) as kv, _streaming(cluster, store, ring, flush=0.3):
        for i in range(3):
            _wait_covered(store, ring, _put(kv, f"{p}a{i}", "x"))
        second = take_backup(BackupOptions(cluster.endpoints, store, ring, _tls(cluster), progress=False))
        for i in range(3):
            last = _put(kv, f"{p}b{i}", "y")
            _wait_covered(store, ring, last)
    before = read_stream(store, ring).segments
    older = {m.id for m in before if m.last_revision <= second.etcd_revision}
    assert older and len(older) < len(before)
    policy = RetentionPolicy(keep_last=1)
    dry = run_prune(PruneOptions(store, ring, policy, dry_run=True))
    assert {m.id for m in read_stream(store, ring).segments} == {m.id for m in before}  # nothing deleted
    rows = [r for r in dry.rows if r.kind == "segments"]
    assert [r.action for r in rows] == [WOULD_DELETE, KEEP], rows
    assert "is gone" in rows[0].reasons[0] and second.id in rows[0].reasons[0]
    assert f"window of snapshot {second.id}" in rows[1].reasons[0]

    r = run_cli(capsys, "prune", "--keep-last", "1", "--store", s3_store_url, "--s3-endpoint-url",
                s3_server.endpoint_url, "--key-file", key, "-o", "json")
    assert r.rc == 0, r.err
    after = read_stream(store, ring).segments
    assert {m.id for m in after} == {m.id for m in before} - older
    assert not any(n.endswith(tuple(older)) for n in store.list_names())  # objects gone with their manifests
    [c] = run_cli(capsys, "list", "--chains", "--store", s3_store_url, "--s3-endpoint-url", s3_server.endpoint_url,
                  "--key-file", key, "-o", "json").json()
    assert (c["base"], c["start"], c["from_revision"], c["state"]) == (None, second.id, second.etcd_revision, "ok")
    assert c["to_revision"] >= last and first < second.etcd_revision


def _seg(chain: str, first: int, last: int, cluster: str = "c1") -> SegmentManifest:
    return SegmentManifest(f"{chain}.seg-{first:020d}", chain, cluster, "2026-01-01T00:00:00.000Z", first, last,
                           last - first + 1, 1, "", "", 1, "", 1, "", "zstd", "aes-256-gcm", "")


def _snap(sid: str, revision: int, cluster: str = "c1") -> SnapshotManifest:
    return SnapshotManifest(sid, "2026-01-01T00:00:00.000Z", revision, 1, "3.5.1", cluster, "m", "e", 1, 1, "", "",
                            "zstd", "aes-256-gcm", "", 0.0, True)


def test_segment_retention_rules() -> None:
    segs = [_seg("A", 11, 20), _seg("A", 21, 30), _seg("A", 31, 40),  # chain A: base A (revision 10), deleted
            _seg("B", 51, 60), _seg("B", 71, 80),  # chain B: base B (revision 50) kept, a hole at 61..70
            _seg("C", 91, 95)]  # chain C: base gone, nothing kept after it
    kept = [_snap("K", 25), _snap("B", 50), _snap("OLD", 5, cluster="c2")]
    v = {x.segment.id: x for x in segment_retention(segs, kept, {"K", "B", "OLD"})}
    keep = {i for i, x in v.items() if x.keep}
    assert keep == {"A.seg-00000000000000000021", "A.seg-00000000000000000031", "B.seg-00000000000000000051",
                    "B.seg-00000000000000000071"}
    assert "older than kept snapshot K" in v["A.seg-00000000000000000011"].reason
    assert "window of snapshot K" in v["A.seg-00000000000000000031"].reason
    assert "after a hole" in v["B.seg-00000000000000000071"].reason
    assert "base C is gone and no kept snapshot" in v["C.seg-00000000000000000091"].reason


# ---------------------------------------------------------------------------- restore --to-revision


@contextlib.contextmanager
def _etcd_on(data_dir: Path, name: str, client: int, peer: int, bins: EtcdBinaries) -> Iterator[Stubs]:
    """A real etcd started on a restored data dir, stopped (bounded) afterwards."""
    url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    log = open(data_dir.parent / f"{name}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(bins.etcd), "--name", name, "--data-dir", str(data_dir), "--listen-client-urls", url,
                             "--advertise-client-urls", url, "--listen-peer-urls", peer_url],
                            stdout=log, stderr=subprocess.STDOUT, env={"PATH": os.environ.get("PATH", "")})
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (data_dir.parent / f"{name}.log").read_text()[-2000:]
            try:
                with EtcdClient(url, dial_timeout=1.0) as c:
                    if c.status().healthy:
                        break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            assert time.monotonic() < deadline, "restored etcd did not become healthy within 30 s"
            time.sleep(0.2)
        with EtcdClient(url) as c:
            yield Stubs.of(c)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def test_restore_to_revision_gives_the_cluster_state_then(streamed: Streamed, etcd_bins_35: EtcdBinaries,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    s = streamed
    monkeypatch.setenv("ETCDBACKUP_ETCD", str(etcd_bins_35.etcd))  # the throwaway replay etcd
    ports = allocate_ports(2)
    try:
        data_dir = tmp_path / "m1.etcd"
        args = ["restore", "latest", "--to-revision", str(s.mid), "--store", s.url, "--key-file", s.key,
                "--name", "m1", "--data-dir", data_dir, "--initial-cluster", f"m1=http://127.0.0.1:{ports[1]}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{ports[1]}", "--bump-revision", "0",
                "--etcdutl", etcd_bins_35.etcdutl, "--no-progress"]
        plan = run_cli(capsys, *args, "--dry-run", "-o", "json")
        assert plan.rc == 0, plan.err
        doc = plan.json()
        chain = _chain_id(s)
        assert doc["point_in_time"]["base_snapshot"] == chain and doc["point_in_time"]["revision"] == s.mid
        assert doc["point_in_time"]["segments"] and chain in doc["steps"][0] and not data_dir.exists()
        done = run_cli(capsys, *args, "-o", "json")
        assert done.rc == 0, done.err
        assert done.json()[0]["revision"] == s.mid and done.json()[0]["base"] == chain
        assert not list(tmp_path.glob("m1.etcd.restoring-*"))
        with _etcd_on(data_dir, "m1", ports[0], ports[1], etcd_bins_35) as kv:
            got, rev = _state(kv)
        assert rev == s.mid and got == s.want_mid
    finally:
        release_ports(ports)


def test_restore_to_time_needs_latest_and_one_target(streamed: Streamed, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--store", streamed.url, "--key-file", streamed.key, "--name", "m1", "--data-dir", tmp_path / "d",
              "--initial-cluster", "m1=http://127.0.0.1:2380", "--initial-advertise-peer-urls",
              "http://127.0.0.1:2380", "--dry-run"]
    r = run_cli(capsys, "restore", _chain_id(streamed), "--to-revision", "5", *common)
    assert r.rc == 2 and "latest" in r.err
    r = run_cli(capsys, "restore", "latest", "--to-revision", "5", "--to-time", "2026-01-01T00:00:00Z", *common)
    assert r.rc == 2 and "not both" in r.err


# ---------------------------------------------------------------------------- metrics, status


def _scrape(store: Store, ring: Keyring | None) -> dict[str, float]:
    port = allocate_ports(1)[0]
    server = make_exporter(store, ring, "127.0.0.1", port, max_age_seconds=3600, cache_seconds=0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        server.shutdown()
        server.server_close()
        t.join(timeout=10)
        release_ports([port])
    return {x.name: x.value for fam in text_string_to_metric_families(body) for x in fam.samples}


def test_exporter_and_status_report_the_stream(streamed: Streamed, etcd35_tls_cluster: Any,
                                               tmp_path: Path) -> None:
    s = streamed
    m = _scrape(s.store, s.ring)
    cov = read_stream(s.store, s.ring).coverage
    assert cov is not None
    assert m["etcd_backup_stream_covered_revision"] == cov.revision >= s.covered
    assert m["etcd_backup_stream_covered_timestamp"] == pytest.approx(cov.at.timestamp(), abs=0.01)
    assert 0 <= m["etcd_backup_stream_lag_seconds"] < 600
    assert m["etcd_backup_stream_segments"] == len(read_stream(s.store, s.ring).segments)

    plain = open_store(f"file://{tmp_path / 'plain'}", create=True)
    _base(etcd35_tls_cluster, plain, s.ring)
    assert not any(k.startswith("etcd_backup_stream_") for k in _scrape(plain, s.ring))

    b = _backups(StatusOptions(SourceSpec(store=s.url)), [])
    assert b.stream is not None and b.stream.covered_revision == cov.revision
    assert b.stream_lag_seconds is not None and 0 <= b.stream_lag_seconds < 600
    assert "delta stream" in b.freshness and json.dumps(b.as_dict())
    assert b.as_dict()["stream"]["lag_seconds"] >= 0
    assert _backups(StatusOptions(SourceSpec(store=plain.url)), []).stream is None
