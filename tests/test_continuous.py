"""Continuous backup (issue 11): the watch-fed delta stream and point-in-time restore, on real etcd 3.5.1 with
mTLS, a file store and S3 over HTTP (moto). Every rebuilt snapshot is compared with the cluster's own state at
that revision (a Range at the revision), key by key: value, create/mod revision, version and lease."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli, tls_args, write_key
from infra.etcd_binaries import EtcdBinaries
from infra.ports import allocate_ports, release_ports

from kubectl_etcdbackup.backup import BackupOptions, take_backup
from kubectl_etcdbackup.continuous.chain import ChainError, Target
from kubectl_etcdbackup.continuous.replay import ReplayPorts, ThrowawayEtcd
from kubectl_etcdbackup.continuous.segment import segment_manifest_name, segment_object_name
from kubectl_etcdbackup.continuous.stored import read_segment, read_stream
from kubectl_etcdbackup.etcd._proto import rpc_pb2
from kubectl_etcdbackup.etcd.client import EtcdClient, TLSFiles
from kubectl_etcdbackup.etcd.rpc import RpcError, Stubs
from kubectl_etcdbackup.etcd.tools import EtcdTool
from kubectl_etcdbackup.keys import Keyring, load_keyring
from kubectl_etcdbackup.stores import Store, open_store
from kubectl_etcdbackup.usecases.point_in_time import PitrOptions, PitrReport, materialize
from kubectl_etcdbackup.usecases.stream import StreamOptions, StreamReport, run_stream

State = dict[bytes, tuple[bytes, int, int, int, int]]  # key -> (value, create rev, mod rev, version, lease)


# ---------------------------------------------------------------------------- helpers


def _tls(cluster: Any) -> TLSFiles | None:
    t = cluster.client_tls
    return TLSFiles(str(t.ca), str(t.cert), str(t.key)) if t else None


@contextlib.contextmanager
def _client(cluster: Any, member: int = 0) -> Iterator[Stubs]:
    with EtcdClient(cluster.endpoints[member], _tls(cluster)) as c:
        yield Stubs.of(c)


def _state(stubs: Stubs, revision: int = 0) -> tuple[State, int]:
    r = stubs.kv.Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0", revision=revision), timeout=60)
    return {kv.key: (kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) for kv in r.kvs}, \
        r.header.revision


def _put(stubs: Stubs, key: str, value: str, lease: int = 0) -> int:
    return stubs.kv.Put(rpc_pb2.PutRequest(key=key.encode(), value=value.encode(), lease=lease),
                        timeout=30).header.revision


def _txn(stubs: Stubs, puts: dict[str, str], deletes: list[str]) -> int:
    ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k.encode(), value=v.encode()))
           for k, v in puts.items()]
    ops += [rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=k.encode())) for k in deletes]
    return stubs.kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=30).header.revision


@pytest.fixture
def keyring(tmp_path: Path) -> tuple[Path, Keyring]:
    path = write_key(tmp_path / "key")
    ring = load_keyring(str(path), None)
    assert ring is not None
    return path, ring


@pytest.fixture
def ports() -> Iterator[ReplayPorts]:
    p = allocate_ports(2)
    yield ReplayPorts(p[0], p[1])
    release_ports(p)


def _base(cluster: Any, store: Store, ring: Keyring) -> int:
    return take_backup(BackupOptions(cluster.endpoints, store, ring, _tls(cluster), progress=False)).etcd_revision


@contextlib.contextmanager
def _streaming(cluster: Any, store: Store, ring: Keyring, flush: float = 0.5) -> Iterator[StreamOptions]:
    """run_stream on a thread for the block; stopped and joined (bounded) afterwards."""
    opts = StreamOptions(cluster.endpoints, store, ring, _tls(cluster), flush_interval=flush, lock_stale_after=3)
    result: list[StreamReport | BaseException] = []

    def run() -> None:
        try:
            result.append(run_stream(opts))
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            result.append(e)

    t = threading.Thread(target=run, name="test-stream", daemon=True)
    t.start()
    try:
        yield opts
    finally:
        opts.stop.set()
        t.join(30)
        assert not t.is_alive(), "stream did not stop within 30 s"
    if isinstance(result[0], BaseException):
        raise result[0]


def _wait_covered(store: Store, ring: Keyring, revision: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        cov = read_stream(store, ring).coverage
        if cov is not None and cov.revision >= revision:
            return cov.revision
        assert time.monotonic() < deadline, f"stream did not cover revision {revision} within {timeout:g}s"
        time.sleep(0.2)


def _pitr(store: Store, ring: Keyring, bins: EtcdBinaries, work: Path, ports: ReplayPorts, target: Target,
          ) -> PitrReport:
    work.mkdir(parents=True, exist_ok=True)
    return materialize(PitrOptions(store, ring, work / "out.db", target, str(work), ports, str(bins.etcd),
                                   EtcdTool(str(bins.etcdutl))))


def _db_state(db: Path, bins: EtcdBinaries, work: Path, ports: ReplayPorts) -> tuple[State, int]:
    """The keys and revision of a snapshot file, read from an etcd started on a fresh restore of it."""
    d = work / f"inspect-{uuid.uuid4().hex[:6]}"
    d.mkdir(parents=True)
    with ThrowawayEtcd(db, d, ports, etcd_binary=str(bins.etcd), tool=EtcdTool(str(bins.etcdutl))) as etcd:
        return _state(etcd.stubs)


# ---------------------------------------------------------------------------- point in time


def test_point_in_time_to_revision_and_time_equals_cluster_state(etcd35_tls_cluster: Any, etcd_bins_35: EtcdBinaries,
                                                                 keyring: tuple[Path, Keyring], tmp_path: Path,
                                                                 file_store_url: str, ports: ReplayPorts) -> None:
    cluster, (_, ring) = etcd35_tls_cluster, keyring
    store = open_store(file_store_url)
    p = f"/continuous/{uuid.uuid4().hex[:8]}/"
    base = _base(cluster, store, ring)
    with _client(cluster) as kv, _streaming(cluster, store, ring):
        lease = kv.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=600), timeout=30).ID
        for i in range(30):
            _put(kv, f"{p}a{i}", f"v{i}")
        _put(kv, f"{p}leased", "x", lease)
        _txn(kv, {f"{p}t{i}": "txn" for i in range(5)}, [f"{p}a0", f"{p}a1"])  # one revision, 7 events
        rev_a = _put(kv, f"{p}a2", "again")
        time.sleep(1.5)
        at = datetime.now(UTC)
        time.sleep(1.5)
        for i in range(20):
            _put(kv, f"{p}b{i}", "b" * 100)
        rev_b = _txn(kv, {f"{p}a3": "changed"}, [f"{p}leased", f"{p}t0"])
        covered = _wait_covered(store, ring, rev_b)
        want_a, _ = _state(kv, rev_a)
        want_end, _ = _state(kv, covered)

    r = _pitr(store, ring, etcd_bins_35, tmp_path / "rev", ports, Target(revision=rev_a))
    assert (r.revision, r.base_revision) == (rev_a, base) and r.revisions_replayed == rev_a - base
    got, got_rev = _db_state(Path(r.output), etcd_bins_35, tmp_path, ports)
    assert got_rev == rev_a and got == want_a
    assert got[f"{p}leased".encode()][4] == lease  # the key keeps its original lease id
    assert os.stat(r.output).st_mode & 0o777 == 0o600

    r = _pitr(store, ring, etcd_bins_35, tmp_path / "time", ports, Target(time=at))
    assert r.revision == rev_a
    assert _db_state(Path(r.output), etcd_bins_35, tmp_path, ports) == (want_a, rev_a)

    r = _pitr(store, ring, etcd_bins_35, tmp_path / "newest", ports, Target())
    assert r.revision == covered
    assert _db_state(Path(r.output), etcd_bins_35, tmp_path, ports) == (want_end, covered)


def test_leases_come_back_with_original_id_and_ttl(etcd35_tls_cluster: Any, etcd_bins_35: EtcdBinaries,
                                                   keyring: tuple[Path, Keyring], tmp_path: Path,
                                                   s3_server: Any, s3_store_url: str, ports: ReplayPorts) -> None:
    cluster, (_, ring) = etcd35_tls_cluster, keyring
    store = open_store(s3_store_url, s3_endpoint_url=s3_server.endpoint_url)
    p = f"/continuous/{uuid.uuid4().hex[:8]}/"
    _base(cluster, store, ring)
    with _client(cluster) as kv, _streaming(cluster, store, ring):
        leases = [kv.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=30).ID for ttl in (300, 900)]
        for i, lease in enumerate(leases):
            _put(kv, f"{p}k{i}", f"v{i}", lease)
        rev = _put(kv, f"{p}plain", "p")
        _wait_covered(store, ring, rev)
        want, _ = _state(kv, rev)
    r = _pitr(store, ring, etcd_bins_35, tmp_path / "pitr", ports, Target(revision=rev))
    d = tmp_path / "inspect"
    d.mkdir()
    with ThrowawayEtcd(Path(r.output), d, ports, etcd_binary=str(etcd_bins_35.etcd),
                       tool=EtcdTool(str(etcd_bins_35.etcdutl))) as etcd:
        got, got_rev = _state(etcd.stubs)
        ttls = [etcd.stubs.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease), timeout=10).grantedTTL
                for lease in leases]
    assert (got, got_rev) == (want, rev)
    assert [got[f"{p}k{i}".encode()][4] for i in range(2)] == leases
    assert ttls == [300, 900]


# ---------------------------------------------------------------------------- resume, broken chains


def _agent(cluster: Any, store_url: str, key: Path, flush: str = "0.5s") -> subprocess.Popen[str]:
    exe = shutil.which("kubectl-etcdbackup", path=str(Path(sys.executable).parent)) or "kubectl-etcdbackup"
    argv = [exe, "agent", "stream", "--endpoints",
            ",".join(cluster.endpoints), *tls_args(cluster), "--store", store_url, "--key-file", str(key),
            "--flush-interval", flush, "--lock-stale-after", "3s"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[str, str]:
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate(timeout=10)


def _stored_revisions(store: Store, ring: Keyring) -> list[int]:
    segs = sorted(read_stream(store, ring).segments, key=lambda s: s.first_revision)
    return [rec.revision for s in segs for rec in read_segment(store, s, ring)]


def test_resume_after_the_agent_is_killed_leaves_no_gap_and_no_duplicate(
        etcd35_tls_cluster: Any, keyring: tuple[Path, Keyring], file_store_url: str) -> None:
    cluster, (key, ring) = etcd35_tls_cluster, keyring
    store = open_store(file_store_url)
    p = f"/continuous/{uuid.uuid4().hex[:8]}/"
    base = _base(cluster, store, ring)
    with _client(cluster) as kv:
        agent = _agent(cluster, file_store_url, key)
        try:
            _wait_covered(store, ring, base)
            rev = 0
            for i in range(50):
                rev = _put(kv, f"{p}first{i}", "x")
            _wait_covered(store, ring, rev)
            for i in range(20):  # received, maybe not stored, when it dies
                rev = _put(kv, f"{p}dying{i}", "x")
        finally:
            _stop(agent, signal.SIGKILL)
        for i in range(30):  # while no agent runs
            rev = _put(kv, f"{p}down{i}", "x")
        agent = _agent(cluster, file_store_url, key)
        try:
            for i in range(30):
                rev = _put(kv, f"{p}after{i}", "x")
            covered = _wait_covered(store, ring, rev, timeout=45)
        finally:
            out, err = _stop(agent)
        assert agent.returncode == 0, err
        assert '"stopped": true' in out
    revisions = _stored_revisions(store, ring)
    assert revisions == list(range(base + 1, covered + 1))  # every revision exactly once, in order


@pytest.mark.slow
def test_a_member_killed_while_streaming_resumes_on_another_without_a_gap(
        etcd_cluster_factory: Any, keyring: tuple[Path, Keyring], file_store_url: str) -> None:
    """The member the agent watches dies: it goes on from another member, every revision stored exactly once."""
    cluster = etcd_cluster_factory("3.5", size=3)
    key, ring = keyring
    store = open_store(file_store_url)
    base = _base(cluster, store, ring)
    agent = _agent(cluster, file_store_url, key)
    try:
        with _client(cluster, member=1) as kv:
            _wait_covered(store, ring, base)
            rev = 0
            for i in range(40):
                rev = _put(kv, f"/kill/before{i}", "x")
            _wait_covered(store, ring, rev)
            cluster.kill_member(0)  # the first endpoint: the one the agent follows
            deadline = time.monotonic() + 30
            for i in range(40):
                while True:  # it may have been the leader: the first writes wait for a new one
                    try:
                        rev = _put(kv, f"/kill/after{i}", "x")
                        break
                    except RpcError:
                        assert time.monotonic() < deadline, "no leader 30 s after the kill"
                        time.sleep(0.5)
            covered = _wait_covered(store, ring, rev, timeout=60)
    finally:
        out, err = _stop(agent)
    assert _stored_revisions(store, ring) == list(range(base + 1, covered + 1)), err
    assert cluster.endpoints[0] in err  # the switch is said on stderr


@pytest.fixture
def chain(etcd35_tls_cluster: Any, keyring: tuple[Path, Keyring], file_store_url: str) -> tuple[Store, list[Any]]:
    """A store with a base snapshot and at least four segments."""
    cluster, (_, ring) = etcd35_tls_cluster, keyring
    store = open_store(file_store_url)
    p = f"/continuous/{uuid.uuid4().hex[:8]}/"
    _base(cluster, store, ring)
    with _client(cluster) as kv, _streaming(cluster, store, ring, flush=0.3):
        for i in range(4):
            rev = _put(kv, f"{p}{i}", "x")
            _wait_covered(store, ring, rev)
    segs = sorted(read_stream(store, ring).segments, key=lambda s: s.first_revision)
    assert len(segs) >= 4
    return store, segs


def _cut(store: Store, name: str, how: str) -> None:
    path = Path(store.url.removeprefix("file://")) / name
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[:-20])
    else:  # alter one digit of a number in the JSON
        path.write_text(path.read_text().replace('"event_count": 1', '"event_count": 2', 1))


@pytest.mark.parametrize("damage", ["both deleted", "object deleted", "object truncated", "manifest altered",
                                    "newest deleted"])
def test_a_broken_chain_is_refused_naming_the_segment(chain: tuple[Store, list[Any]], keyring: tuple[Path, Keyring],
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      damage: str) -> None:
    store, segs = chain
    key, _ = keyring
    seg = segs[-1] if damage == "newest deleted" else segs[1]
    if damage in ("both deleted", "newest deleted"):
        _cut(store, segment_object_name(seg.id), "delete")
        _cut(store, segment_manifest_name(seg.id), "delete")
    elif damage == "object deleted":
        _cut(store, segment_object_name(seg.id), "delete")
    elif damage == "object truncated":
        _cut(store, segment_object_name(seg.id), "truncate")
    else:
        _cut(store, segment_manifest_name(seg.id), "alter")
    out = tmp_path / "out.db"
    r = run_cli(capsys, "snapshot", "pitr", "--store", store.url, "--key-file", key, "-f", out)
    assert r.rc == 1 and not out.exists()
    assert len(r.err.strip().splitlines()) == 1, r.err
    if damage == "newest deleted":
        assert f"no segment holds revision {seg.first_revision} onwards" in r.err
    else:
        assert seg.id in r.err, r.err


def test_compaction_starts_a_new_chain_and_records_the_gap(etcd_cluster_factory: Any, etcd_bins_35: EtcdBinaries,
                                                           keyring: tuple[Path, Keyring], tmp_path: Path,
                                                           file_store_url: str, ports: ReplayPorts) -> None:
    cluster = etcd_cluster_factory("3.5", size=1)
    _, ring = keyring
    store = open_store(file_store_url)
    base = _base(cluster, store, ring)
    with _client(cluster) as kv:
        for i in range(10):
            rev = _put(kv, f"/gap/{i}", "x")
        kv.kv.Compact(rpc_pb2.CompactionRequest(revision=rev, physical=True), timeout=30)
        with _streaming(cluster, store, ring):
            _wait_covered(store, ring, rev)  # the new chain's base snapshot is stored
            rev2 = _put(kv, "/gap/after", "y")
            _wait_covered(store, ring, rev2)
        want, _ = _state(kv)
    gaps = read_stream(store, ring).gaps
    assert [(g.from_revision, g.to_revision) for g in gaps] == [(base + 1, rev)]
    with pytest.raises(ChainError, match=rf"revisions {base + 1}\.\.{rev} are not in the delta stream"):
        _pitr(store, ring, etcd_bins_35, tmp_path / "gap", ports, Target(revision=rev - 3))
    r = _pitr(store, ring, etcd_bins_35, tmp_path / "ok", ports, Target())
    assert (r.base_revision, r.revision) == (rev, rev2)
    assert _db_state(Path(r.output), etcd_bins_35, tmp_path, ports) == (want, rev2)


# ---------------------------------------------------------------------------- RPO drill


@pytest.mark.slow
@pytest.mark.parametrize("flush", [1.0, 5.0])  # --flush-interval 1s, and the default 5s
def test_rpo_drill_all_members_killed(flush: float, etcd_cluster_factory: Any, etcd_bins_35: EtcdBinaries,
                                      keyring: tuple[Path, Keyring], tmp_path: Path, file_store_url: str,
                                      ports: ReplayPorts) -> None:
    cluster = etcd_cluster_factory("3.5", size=3)
    key, ring = keyring
    store = open_store(file_store_url)
    _base(cluster, store, ring)
    agent = _agent(cluster, file_store_url, key, flush=f"{flush:g}s")
    acked: list[tuple[str, str, int, float]] = []  # key, value, revision, when acknowledged
    attempted: dict[bytes, bytes] = {}
    stop = threading.Event()
    lock = threading.Lock()

    def writer(n: int) -> None:
        with _client(cluster) as kv:
            i = 0
            while not stop.is_set():
                k, v = f"/drill/{n}/{i:06d}", f"value-{n}-{i}-{random.random()}"
                with lock:
                    attempted[k.encode()] = v.encode()
                try:
                    rev = _put(kv, k, v)
                except Exception:  # noqa: BLE001 - the cluster is being killed
                    return
                with lock:
                    acked.append((k, v, rev, time.monotonic()))
                i += 1

    try:
        _wait_covered(store, ring, 1)
        threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(4)]
        started = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(random.uniform(2 * flush + 3.0, 2 * flush + 7.0))
        killed = time.monotonic()
        for i in range(cluster.size):
            cluster.kill_member(i)
        stop.set()
        for t in threads:
            t.join(30)
        rate = sum(1 for a in acked if a[3] <= killed) / (killed - started)
        time.sleep(0.5)
    finally:
        _stop(agent, signal.SIGKILL)
    assert rate >= 200, f"writer managed only {rate:.0f} puts/s"
    r = _pitr(store, ring, etcd_bins_35, tmp_path / "fresh", ports, Target())
    got, _ = _db_state(Path(r.output), etcd_bins_35, tmp_path, ports)
    old_enough = [a for a in acked if a[3] < killed - (flush + 1.0)]  # the RPO: flush interval + 1 s
    assert old_enough
    missing = [a for a in old_enough if (got[a[0].encode()][0], got[a[0].encode()][2]) != (a[1].encode(), a[2])
               if a[0].encode() in got] + [a for a in old_enough if a[0].encode() not in got]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
    assert all(attempted.get(k) == v[0] for k, v in got.items()), "a value that was never written appeared"
    print(f"\nRPO drill (flush {flush:g}s): {rate:.0f} puts/s, {len(acked)} acknowledged, rebuilt revision "
          f"{r.revision}, {len(acked) - sum(1 for a in acked if got.get(a[0].encode()))} newest writes not covered")


def test_cli_stream_needs_a_key(capsys: pytest.CaptureFixture[str], file_store_url: str) -> None:
    r = run_cli(capsys, "agent", "stream", "--endpoints", "https://127.0.0.1:1", "--store", file_store_url)
    assert r.rc == 2 and "--encryption-key-file" in r.err


def test_cli_pitr_rejects_both_targets(capsys: pytest.CaptureFixture[str], file_store_url: str,
                                       keyring: tuple[Path, Keyring], tmp_path: Path) -> None:
    r = run_cli(capsys, "snapshot", "pitr", "--store", file_store_url, "--key-file", keyring[0], "-f",
                tmp_path / "x.db", "--to-revision", "5", "--to-time", "2026-01-01T00:00:00Z")
    assert r.rc == 2 and "not both" in r.err
