"""The agent's behaviour around a backup: endpoint fall-back, retention, S3 multipart, metrics, exporter."""

from __future__ import annotations

import os
import threading
import time
import urllib.request

import pytest
from cli_helpers import backup_args, run_cli, run_cli_subprocess, write_key
from prometheus_client.parser import text_string_to_metric_families

from kubectl_etcdbackup.catalog import list_snapshots
from kubectl_etcdbackup.exporter import make_exporter
from kubectl_etcdbackup.stores import open_store
from kubectl_etcdbackup.stores import s3_store as s3_module


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    monkeypatch.setenv("ETCDBACKUP_S3_ENDPOINT_URL", s3_server.endpoint_url)
    return s3_server


def test_falls_back_to_next_endpoint(etcd35_tls_cluster, file_store_url, tmp_path, capsys) -> None:
    key = write_key(tmp_path / "key")
    args = backup_args(etcd35_tls_cluster, file_store_url, key, "--dial-timeout", "1s")
    eps = args.index("--endpoints") + 1
    args[eps] = "https://127.0.0.1:1," + etcd35_tls_cluster.endpoints[1]
    r = run_cli(capsys, *args)
    assert r.rc == 0, r.err
    assert r.json()["member"] == etcd35_tls_cluster.endpoints[1]


def test_falls_back_when_a_member_is_down(etcd_cluster_factory, file_store_url, tmp_path, capsys) -> None:
    cluster = etcd_cluster_factory("3.5", 3, True)
    cluster.put("/k", "v")
    cluster.stop_member(0)
    key = write_key(tmp_path / "key")
    r = run_cli(capsys, *backup_args(cluster, file_store_url, key, "--dial-timeout", "1s"))
    assert r.rc == 0, r.err
    assert r.json()["member"] == cluster.endpoints[1]


def test_retention_after_backup(etcd35_tls_cluster, file_store_url, tmp_path, capsys) -> None:
    key = write_key(tmp_path / "key")
    ids = []
    for _ in range(4):
        r = run_cli(capsys, *backup_args(etcd35_tls_cluster, file_store_url, key, "--verify", "hash"))
        assert r.rc == 0, r.err
        ids.append(r.json()["id"])
    dry = run_cli(capsys, "prune", "--store", file_store_url, "--key-file", key, "--keep-last", "2", "--dry-run",
                  "-o", "json")
    assert [row["action"] for row in dry.json()].count("would delete") == 2
    assert len(run_cli(capsys, "list", "--store", file_store_url, "-o", "json").json()) == 4
    r = run_cli(capsys, *backup_args(etcd35_tls_cluster, file_store_url, key, "--verify", "hash",
                                     "--retain-count", "2", "--retain-age", "0s"))
    assert r.rc == 0, r.err
    left = [m["id"] for m in run_cli(capsys, "list", "--store", file_store_url, "-o", "json").json()]
    assert left == [r.json()["id"], ids[-1]]
    assert "pruned" in r.err


def test_s3_multipart_upload_and_sse(etcd_cluster_factory, s3_env, s3_store_url, s3_bucket, tmp_path, capsys,
                                     monkeypatch) -> None:
    monkeypatch.setattr(s3_module, "PART_SIZE", 5 << 20)  # S3's minimum part size
    cluster = etcd_cluster_factory("3.5", 1, True)
    cluster.put_many("/multipart/", 16000, 2048)  # ~12 MB stored after zstd: three parts
    key = write_key(tmp_path / "key")
    r = run_cli(capsys, *backup_args(cluster, s3_store_url, key, "--s3-sse", "AES256"))
    assert r.rc == 0, r.err
    head = s3_env.client().head_object(Bucket=s3_bucket, Key=f"backups/{r.json()['id']}.etcdbak")
    assert "-" in head["ETag"], "expected a multipart ETag"
    assert head["ServerSideEncryption"] == "AES256"
    assert not s3_env.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


def test_s3_failed_upload_is_aborted(s3_env, s3_bucket, monkeypatch) -> None:
    monkeypatch.setattr(s3_module, "PART_SIZE", 5 << 20)
    store = open_store(f"s3://{s3_bucket}/p", s3_endpoint_url=s3_env.endpoint_url)
    w = store.writer("x.etcdbak")
    w.write(b"\0" * (11 << 20))  # two parts in flight
    w.abort()
    client = s3_env.client()
    assert not client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    assert "Contents" not in client.list_objects_v2(Bucket=s3_bucket)


def metrics(text: str) -> dict[str, float]:
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_metrics_textfile_counts_failures(etcd35_tls_cluster, file_store_url, tmp_path, capsys) -> None:
    key = write_key(tmp_path / "key")
    prom = tmp_path / "metrics" / "etcd_backup.prom"
    r = run_cli(capsys, *backup_args(etcd35_tls_cluster, file_store_url, key, "--metrics-textfile", prom))
    assert r.rc == 0, r.err
    ok = metrics(prom.read_text())
    assert ok["etcd_backup_size_bytes"] == r.json()["stored_size"]
    assert ok["etcd_backup_failures_total"] == 0 and ok["etcd_backup_last_success_timestamp"] > 0
    for _ in range(2):
        bad = run_cli(capsys, "agent", "backup", "--endpoints", "http://127.0.0.1:1", "--dial-timeout", "1s",
                      "--store", file_store_url, "--key-file", key, "--metrics-textfile", prom)
        assert bad.rc == 1
    after = metrics(prom.read_text())
    assert after["etcd_backup_failures_total"] == 2
    assert after["etcd_backup_last_success_timestamp"] == ok["etcd_backup_last_success_timestamp"]
    assert after["etcd_backup_last_duration_seconds"] > 0


@pytest.mark.parametrize("store_kind", ["file", "s3"])
def test_exporter_serves_metrics_from_the_store(store_kind, request, etcd35_tls_cluster, tmp_path, capsys) -> None:
    if store_kind == "s3":
        request.getfixturevalue("s3_env")
    url = request.getfixturevalue("file_store_url" if store_kind == "file" else "s3_store_url")
    key = write_key(tmp_path / "key")
    r = run_cli(capsys, *backup_args(etcd35_tls_cluster, url, key, "--verify", "hash"))
    assert r.rc == 0
    run_cli(capsys, "agent", "backup", "--endpoints", "http://127.0.0.1:1", "--dial-timeout", "1s", "--store", url,
            "--key-file", key)
    from infra.ports import allocate_ports

    port = allocate_ports(1)[0]
    import os

    store = open_store(url, s3_endpoint_url=os.environ.get("ETCDBACKUP_S3_ENDPOINT_URL"))
    server = make_exporter(store, None, "127.0.0.1", port, max_age_seconds=3600, cache_seconds=0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        server.shutdown()
        server.server_close()
        t.join(timeout=10)
    m = metrics(body)
    newest = list_snapshots(store).snapshots[0]
    assert m["etcd_backup_last_success_timestamp"] == newest.created.timestamp()
    assert m["etcd_backup_size_bytes"] == newest.stored_size
    assert m["etcd_backup_last_duration_seconds"] == newest.duration_seconds
    assert m["etcd_backup_duration_seconds_count"] == 1
    assert m["etcd_backup_duration_seconds_sum"] == newest.duration_seconds
    assert m["etcd_backup_failures_total"] == 1
    assert m["etcd_backup_stale"] == 0 and m["etcd_backup_store_up"] == 1


def test_monitor_reports_stale_backup(etcd35_tls_cluster, file_store_url, tmp_path, capsys) -> None:
    r = run_cli(capsys, "agent", "monitor", "--store", file_store_url, "--max-age", "1h")
    assert r.rc == 3 and "STALE: no verified backup" in r.out
    key = write_key(tmp_path / "key")
    assert run_cli(capsys, *backup_args(etcd35_tls_cluster, file_store_url, key, "--verify", "hash")).rc == 0
    r = run_cli(capsys, "agent", "monitor", "--store", file_store_url, "--max-age", "1h")
    assert r.rc == 0 and r.out.startswith("OK:")
    import time

    time.sleep(1.1)
    r = run_cli(capsys, "agent", "monitor", "--store", file_store_url, "--max-age", "1s")
    assert r.rc == 3 and r.out.startswith("STALE:") and "limit 1s" in r.out


def test_quickstart_as_documented(tmp_path) -> None:
    r = run_cli_subprocess("quickstart", "--store-dir", tmp_path / "etcd-backups", "--keys", "200", timeout=120)
    assert r.rc == 0, r.err
    assert "verified by a test restore" in r.out
    assert "aes-256-gcm" in r.out and (tmp_path / "etcd-backups.key").stat().st_mode & 0o777 == 0o600
    assert len(list((tmp_path / "etcd-backups").glob("*.etcdbak"))) == 1


def test_metrics_pushed_to_pushgateway(etcd35_tls_cluster, file_store_url, tmp_path, capsys) -> None:
    """A real HTTP receiver stands in for the Pushgateway: the agent PUTs the text format to /metrics/job/..."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from infra.ports import allocate_ports

    received: list[tuple[str, str, bytes]] = []

    class Gateway(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802 - http.server naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.command, self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", allocate_ports(1)[0]), Gateway)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        key = write_key(tmp_path / "key")
        r = run_cli(capsys, *backup_args(etcd35_tls_cluster, file_store_url, key, "--verify", "hash",
                                         "--pushgateway", f"http://127.0.0.1:{server.server_port}"))
        assert r.rc == 0, r.err
    finally:
        server.shutdown()
        server.server_close()
        t.join(timeout=10)
    assert len(received) == 1 and received[0][1] == "/metrics/job/etcd_backup"
    m = metrics(received[0][2].decode())
    assert m["etcd_backup_size_bytes"] == r.json()["stored_size"] and m["etcd_backup_failures_total"] == 0
    assert m["etcd_backup_last_success_timestamp"] > 0 and "etcd_backup_last_duration_seconds" in m


def test_prune_removes_only_day_old_orphans(etcd35_tls_cluster, file_store_url, tmp_store_dir, tmp_path,
                                            capsys) -> None:
    """An object without a manifest is a failed backup: prune removes it once it is over a day old."""
    key = write_key(tmp_path / "key")
    r = run_cli(capsys, *backup_args(etcd35_tls_cluster, file_store_url, key, "--verify", "hash"))
    assert r.rc == 0, r.err
    old = tmp_store_dir / "etcd-20200101T000000000Z-dead.etcdbak"
    fresh = tmp_store_dir / (r.json()["id"][:-4] + "beef.etcdbak")  # made just now: may be a backup in flight
    old.write_bytes(b"partial")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))  # the age that counts is the object's own
    fresh.write_bytes(b"in flight")
    listed = run_cli(capsys, "list", "--store", file_store_url, "-o", "json")
    assert len(listed.json()) == 1 and "2 object(s) without a manifest" in listed.err
    dry = run_cli(capsys, "prune", "--store", file_store_url, "--key-file", key, "--keep-last", "5", "--dry-run",
                  "-o", "json")
    assert [row["id"] for row in dry.json() if row["action"] == "would delete"] == [old.name] and old.exists()
    done = run_cli(capsys, "prune", "--store", file_store_url, "--key-file", key, "--keep-last", "5", "-o", "json")
    assert [row["id"] for row in done.json() if row["action"] == "deleted"] == [old.name]
    assert not old.exists() and fresh.exists()
    assert len(run_cli(capsys, "list", "--store", file_store_url, "-o", "json").json()) == 1
