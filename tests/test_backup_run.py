"""The backup-run use case: the outcome recorded once on success, failure and SIGTERM; warnings collected; and a
real full disk (tmpfs) that heals itself."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import backup_args, run_cli, write_key
from infra.ports import HOST, allocate_port
from prometheus_client.parser import text_string_to_metric_families

from kubectl_etcdbackup.backup import BackupOptions
from kubectl_etcdbackup.catalog import list_snapshots
from kubectl_etcdbackup.etcd.client import TLSFiles
from kubectl_etcdbackup.keys import load_keyring
from kubectl_etcdbackup.retention import RetentionPolicy
from kubectl_etcdbackup.run_status import STATUS_OBJECT, load_status
from kubectl_etcdbackup.stores.file_store import FileStore
from kubectl_etcdbackup.usecases.backup_run import BackupRunOptions, run_backup


class CountingFileStore(FileStore):
    """A real file store that counts how often the run record is written."""

    status_writes = 0

    def put_bytes(self, name: str, data: bytes) -> None:
        super().put_bytes(name, data)
        if name == STATUS_OBJECT:
            self.status_writes += 1


def metrics(path: Path) -> dict[str, float]:
    return {s.name: s.value for fam in text_string_to_metric_families(path.read_text()) for s in fam.samples}


def run_options(cluster, store, key: Path, prom: Path, endpoints: list[str] | None = None,
                policy: RetentionPolicy | None = None) -> BackupRunOptions:
    tls = cluster.client_tls
    backup = BackupOptions(endpoints or cluster.endpoints, store, load_keyring(str(key), None),
                           TLSFiles(tls.ca, tls.cert, tls.key), verify="hash", dial_timeout=1.0)
    return BackupRunOptions(backup, policy or RetentionPolicy(keep_last=5), metrics_textfile=str(prom))


def test_success_is_recorded_once(etcd35_tls_cluster, tmp_store_dir, tmp_path) -> None:
    store = CountingFileStore(tmp_store_dir)
    prom, key = tmp_path / "m.prom", write_key(tmp_path / "key")
    report = run_backup(run_options(etcd35_tls_cluster, store, key, prom))
    assert report.ok and not report.error, report.warnings
    assert store.status_writes == 1
    assert load_status(store).last_success_id == report.manifest.id
    m = metrics(prom)
    assert m["etcd_backup_failures_total"] == 0 and m["etcd_backup_size_bytes"] == report.manifest.stored_size
    assert "etcd_backup_retention_expected_bytes" not in m  # one snapshot: no interval to judge by yet
    second = run_backup(run_options(etcd35_tls_cluster, store, key, prom))
    assert second.fit is not None and second.fit.count == 5 and second.fit.fits is True
    m = metrics(prom)
    assert m["etcd_backup_retention_expected_bytes"] == second.fit.expected_bytes
    assert m["etcd_backup_retention_fits"] == 1


def test_failure_is_recorded_once_and_member_fallbacks_are_warnings(etcd35_tls_cluster, tmp_store_dir,
                                                                    tmp_path) -> None:
    store = CountingFileStore(tmp_store_dir)
    prom, key = tmp_path / "m.prom", write_key(tmp_path / "key")
    failed = run_backup(run_options(etcd35_tls_cluster, store, key, prom, endpoints=["https://127.0.0.1:1"]))
    assert not failed.ok and "127.0.0.1:1" in failed.error
    assert store.status_writes == 1 and load_status(store).failures_total == 1
    assert metrics(prom)["etcd_backup_failures_total"] == 1
    fell_back = run_backup(run_options(etcd35_tls_cluster, store, key, prom,
                                       endpoints=["https://127.0.0.1:1", etcd35_tls_cluster.endpoints[0]]))
    assert fell_back.ok and any("fell back to" in w for w in fell_back.warnings), fell_back.warnings
    assert store.status_writes == 2 and load_status(store).failures_total == 1


@contextlib.contextmanager
def silent_listener() -> Iterator[tuple[socket.socket, int]]:
    """A TCP port that accepts connections and never answers (etcd hung mid-handshake)."""
    port = allocate_port()
    sock = socket.socket()
    try:
        sock.bind((HOST, port))
        sock.listen(8)
        sock.settimeout(60)
        yield sock, port
    finally:
        sock.close()


def test_sigterm_is_recorded_once(file_store_url, tmp_store_dir, tmp_path) -> None:
    """Kubernetes ends a Job past its deadline with SIGTERM: the run record and the metrics still say so."""
    key, prom = write_key(tmp_path / "key"), tmp_path / "m.prom"
    with silent_listener() as (sock, port):
        exe = Path(sys.executable).parent / "kubectl-etcdbackup"
        proc = subprocess.Popen([str(exe), "agent", "backup", "--endpoints", f"https://{HOST}:{port}",
                                 "--dial-timeout", "60s", "--store", file_store_url, "--key-file", str(key),
                                 "--no-progress", "--keep-last", "3", "--metrics-textfile", str(prom)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            conn, _ = sock.accept()  # the agent is now inside the backup, waiting for etcd
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
            conn.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert proc.returncode == 128 + signal.SIGTERM, err
    status = load_status(FileStore(tmp_store_dir))
    assert status.failures_total == 1 and status.last_failure_message == "interrupted (SystemExit 143)"
    assert metrics(prom)["etcd_backup_failures_total"] == 1
    assert out == "" and not [p for p in tmp_store_dir.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_heals_itself(etcd_cluster_factory, tmpfs, tmp_path, capsys) -> None:
    """keep-last 3 on a volume that holds 4.25 snapshots; then etcd grows by 40%, so one run fails with ENOSPC
    (the store had room for the expected size, not the real one). The next scheduled run succeeds by itself.
    Before: prune ran only after a success, so every later run failed the same way, forever."""
    cluster = etcd_cluster_factory("3.5", 1, True)
    cluster.put_many("/fill/", 1200, 2048)
    key, prom = write_key(tmp_path / "key"), tmp_path / "m.prom"
    probe = run_cli(capsys, *backup_args(cluster, f"file://{tmp_path / 'probe'}", key, "--verify", "hash"))
    assert probe.rc == 0, probe.err
    size = probe.json()["stored_size"]
    pvc = tmpfs(int(size * 4.25) // 4096 * 4096)
    store_url = f"file://{pvc}"

    def scheduled_run() -> tuple[int, str]:
        r = run_cli(capsys, *backup_args(cluster, store_url, key, "--verify", "hash", "--keep-last", "3",
                                         "--metrics-textfile", prom))
        return r.rc, r.err

    for _ in range(5):  # steady state: 3 kept, the 4th fits while it is written
        rc, err = scheduled_run()
        assert rc == 0, err
    assert metrics(prom)["etcd_backup_retention_fits"] == 1
    cluster.put_many("/fill/", 500, 2048, start=1200)  # the next snapshot is ~40% larger than expected
    results = [scheduled_run() for _ in range(3)]
    assert results[0][0] == 1 and "no space left on device" in results[0][1]
    assert [rc for rc, _ in results[1:]] == [0, 0], results[1][1]  # healed on the next run, and stays healed
    assert metrics(prom)["etcd_backup_retention_fits"] == 0 and "more than the store's" in results[2][1]
    store = FileStore(pvc, create=False)
    assert len(list_snapshots(store, load_keyring(str(key), None)).trusted) == 3
    assert not [p for p in pvc.iterdir() if p.name.startswith(".tmp-")]
    assert load_status(store).failures_total == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_store_too_small_for_one_more_snapshot_prunes_first(etcd_cluster_factory, tmpfs, tmp_path, capsys) -> None:
    """keep-last 3 on a volume that holds 3.5 snapshots: the 4th run has no room for a 4th snapshot. It prunes
    first as if it existed (keeping 2), so no run fails. Before: the 4th and every later run failed (ENOSPC)."""
    cluster = etcd_cluster_factory("3.5", 1, True)
    cluster.put_many("/fill/", 1200, 2048)
    key = write_key(tmp_path / "key")
    probe = run_cli(capsys, *backup_args(cluster, f"file://{tmp_path / 'probe'}", key, "--verify", "hash"))
    assert probe.rc == 0, probe.err
    pvc = tmpfs(int(probe.json()["stored_size"] * 3.5) // 4096 * 4096)
    errs = []
    for _ in range(5):
        r = run_cli(capsys, *backup_args(cluster, f"file://{pvc}", key, "--verify", "hash", "--keep-last", "3"))
        assert r.rc == 0, r.err
        errs.append(r.err)
    assert sum("pruning first, as if it already existed" in e for e in errs) == 2  # runs 4 and 5
    assert len(list_snapshots(FileStore(pvc, create=False), load_keyring(str(key), None)).trusted) == 3
