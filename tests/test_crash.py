"""kill -9 at random points, on real components: the agent backup (file store and S3 on moto) never leaves a
listed partial snapshot and its leftovers are all found and removed; a restore always leaves a complete old or
new data dir at the final path, and the next restore succeeds.

Reproduce a run with CRASH_SEED=<seed printed by the failing test>.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_helpers import backup_args, run_cli, write_key
from infra.etcd_binaries import etcd35
from infra.etcd_cluster import ClusterLayout, EtcdCluster, EtcdClusterFactory

from kubectl_etcdbackup.etcd.tools import EtcdTool
from kubectl_etcdbackup.leftovers import find_leftovers, find_local_scratch, remove_leftovers, remove_local
from kubectl_etcdbackup.stores import open_store

pytestmark = pytest.mark.slow

KILLS = 20
PREFIX = "/crash/"
KEYS = 8000  # ~16 MB raw, about half of it random: two 5 MiB parts or more once stored
EXE = Path(sys.executable).parent / "kubectl-etcdbackup"
# The real CLI with S3's minimum part size, so that a few MB make a multipart upload (default: 8 MB parts).
SMALL_PARTS = ("import sys; from kubectl_etcdbackup.stores import s3_store; s3_store.PART_SIZE = 5 << 20; "
               "from kubectl_etcdbackup.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.fixture(scope="module")
def cluster(tls_certs, tmp_path_factory) -> Iterator[EtcdCluster]:
    bins = etcd35()
    if bins is None:
        pytest.skip("etcd 3.5 not installed")
    factory = EtcdClusterFactory(tmp_path_factory.mktemp("crash-etcd"), tls_certs, lambda _: bins)
    try:
        c = factory(bins, 1, True)
        c.put_many(PREFIX, KEYS, 2048)
        yield c
    finally:
        factory.close()


def seeded(name: str) -> random.Random:
    seed = int(os.environ.get("CRASH_SEED", time.time_ns() % 10**9))
    print(f"{name}: CRASH_SEED={seed}")
    return random.Random(seed)


def run_then_kill(argv: list[str], delay: float, timeout: float = 60.0) -> bool:
    """Start argv in its own process group, SIGKILL the whole group after `delay` s. True if it was killed
    (False: it had already finished)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return True
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def timed(argv: list[str], timeout: float = 60.0) -> float:
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    assert p.returncode == 0, p.stderr
    return time.monotonic() - t0


def check_backup_kills(capsys, store_url: str, argv: list[str], key: Path, work: Path, name: str,
                       ) -> tuple[int, float, int]:
    """Returns (runs killed, seconds of an uninterrupted run, leftovers found and removed). KILLS kills, and up to
    KILLS more while none has left anything behind yet (a loaded machine shifts the timing)."""
    rng = seeded(name)
    full = timed(argv)
    store = open_store(store_url, s3_endpoint_url=os.environ.get("ETCDBACKUP_S3_ENDPOINT_URL"))
    verified: set[str] = set()
    killed = removed = 0
    for i in range(2 * KILLS):
        if i >= KILLS and removed:
            break
        delay = rng.uniform(0, full * 1.1) if i % 2 else rng.uniform(full / 2, full)  # half: while it writes
        killed += run_then_kill(argv, delay)
        r = run_cli(capsys, "list", "--store", store_url, "-o", "json")
        assert r.rc == 0, r.err
        for sid in {row["id"] for row in r.json()} - verified:
            v = run_cli(capsys, "verify", sid, "--store", store_url, "--key-file", key)
            assert v.rc == 0, f"kill {i} after {delay:.2f}s: listed snapshot {sid} does not verify: {v.err}"
            verified.add(sid)
        now = datetime.now(UTC)
        leftovers = find_leftovers(store, now, 0)
        assert remove_leftovers(store, leftovers) == []
        assert find_leftovers(store, now, 0) == [], f"kill {i} after {delay:.2f}s"
        scratch = find_local_scratch(work, now, 0)
        assert remove_local(scratch) == []
        assert not list(work.iterdir())
        removed += len(leftovers) + len(scratch)
        print(f"kill {i} after {delay:.2f}s: removed {[f.kind for f in leftovers + scratch]}")
    return killed, full, removed


def test_kill_backup_on_file_store(cluster, file_store_url, tmp_store_dir, tmp_path, capsys) -> None:
    key = write_key(tmp_path / "key")
    work = tmp_path / "work"
    work.mkdir()
    argv = [str(EXE), *backup_args(cluster, file_store_url, key, "--work-dir", str(work))]
    killed, full, removed = check_backup_kills(capsys, file_store_url, argv, key, work, "backup-file")
    assert not list(tmp_store_dir.glob(".tmp-*"))
    print(f"backup to a file store: {full:.1f} s uninterrupted, {killed}/{KILLS} runs killed, {removed} leftovers")
    assert killed >= KILLS // 2 and removed > 0


def test_kill_backup_on_s3(cluster, s3_server, s3_bucket, s3_store_url, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("ETCDBACKUP_S3_ENDPOINT_URL", s3_server.endpoint_url)
    key = write_key(tmp_path / "key")
    work = tmp_path / "work"
    work.mkdir()
    argv = [sys.executable, "-c", SMALL_PARTS, *backup_args(cluster, s3_store_url, key, "--work-dir", str(work))]
    killed, full, removed = check_backup_kills(capsys, s3_store_url, argv, key, work, "backup-s3")
    assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    print(f"backup to S3: {full:.1f} s uninterrupted, {killed}/{KILLS} runs killed, {removed} leftovers")
    assert killed >= KILLS // 2 and removed > 0


def assert_complete_data_dir(data_dir: Path, revision: int, where: str) -> None:
    """A whole restored member: its bbolt db opens with the real etcdutl at the snapshot's revision, with a WAL."""
    assert data_dir.is_dir(), f"{where}: {data_dir} is missing"
    status = EtcdTool().snapshot_status(str(data_dir / "member" / "snap" / "db"))
    assert status.revision >= revision and status.total_key >= KEYS, where
    assert list((data_dir / "member" / "wal").glob("*.wal")), f"{where}: no WAL"


def next_second() -> None:
    """Staging and move-aside dirs are stamped to the second: a rerun in the same second would find them."""
    time.sleep(1.001 - time.time() % 1)


def test_kill_restore(cluster, file_store_url, tmp_path, capsys, etcd_cluster_factory) -> None:
    rng = seeded("restore")
    key = write_key(tmp_path / "key")
    r = run_cli(capsys, *backup_args(cluster, file_store_url, key))
    assert r.rc == 0, r.err
    sid, revision = r.json()["id"], r.json()["revision"]
    layout = ClusterLayout.allocate(1, tls=True, name_prefix="r")
    data_dir = tmp_path / "restore" / "m.etcd"
    args = ["restore", sid, "--store", file_store_url, "--key-file", key, "--data-dir", data_dir, "--name",
            layout.names[0], "--initial-cluster", layout.initial_cluster, "--initial-advertise-peer-urls",
            layout.peer_urls[0], "--bump-revision", "0", "--no-progress"]
    r = run_cli(capsys, *args)  # the old data dir
    assert r.rc == 0, r.err
    argv = [str(EXE), *map(str, args), "--move-aside"]
    next_second()
    full = timed(argv)
    killed = 0
    for i in range(KILLS):
        next_second()
        delay = rng.uniform(0, full * 1.1)
        killed += run_then_kill(argv, delay)
        assert_complete_data_dir(data_dir, revision, f"kill {i} after {delay:.2f}s")
        for aside in data_dir.parent.glob("m.etcd.before-restore-*"):  # keep the disk use bounded
            subprocess.run(["rm", "-rf", str(aside)], check=True, timeout=60)
    next_second()
    r = run_cli(capsys, *map(str, args), "--move-aside")
    assert r.rc == 0, r.err
    print(f"restore: {full:.1f} s uninterrupted, {killed}/{KILLS} runs killed")
    assert killed >= KILLS // 2
    restored = etcd_cluster_factory("3.5", 1, True, layout=layout, data_dirs=[data_dir])
    assert restored.key_count(PREFIX) == KEYS
