"""Pre-flight checks before each backup: member health and alarms (a real NOSPACE), the client files, and the
certificates' expiry, the server's as seen in a real TLS handshake with etcd 3.5 (certs made here, short-lived)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_helpers import write_key
from infra.certs import generate_tls
from infra.etcd_cluster import EtcdctlError
from prometheus_client.parser import text_string_to_metric_families

from kubectl_etcdbackup.backup import BackupOptions
from kubectl_etcdbackup.etcd.client import TLSFiles
from kubectl_etcdbackup.keys import load_keyring
from kubectl_etcdbackup.preflight import run_preflight
from kubectl_etcdbackup.retention import RetentionPolicy
from kubectl_etcdbackup.stores.file_store import FileStore
from kubectl_etcdbackup.usecases.backup_run import BackupRunOptions, run_backup


def tls_of(cluster) -> TLSFiles:
    t = cluster.client_tls
    return TLSFiles(str(t.ca), str(t.cert), str(t.key))


def run_options(cluster, store_dir: Path, key: Path, prom: Path) -> BackupRunOptions:
    backup = BackupOptions(cluster.endpoints, FileStore(store_dir), load_keyring(str(key), None), tls_of(cluster),
                           verify="hash", dial_timeout=2.0)
    return BackupRunOptions(backup, RetentionPolicy(keep_last=3), metrics_textfile=str(prom))


def cert_expiry(prom: Path) -> dict[str, float]:
    return {s.labels["cert"]: s.value for fam in text_string_to_metric_families(prom.read_text())
            for s in fam.samples if s.name == "etcd_backup_cert_expiry_timestamp_seconds"}


def test_certificates_expiring_soon_are_warned_about(etcd_cluster_factory, tmp_path) -> None:
    certs = generate_tls(tmp_path / "pki", days=400, server_days=9.5, client_days=3.5)
    cluster = etcd_cluster_factory("3.5", 1, certs)
    key, prom = write_key(tmp_path / "key"), tmp_path / "m.prom"
    report = run_backup(run_options(cluster, tmp_path / "store", key, prom))
    assert report.ok, report.error
    host_port = cluster.endpoints[0].removeprefix("https://")
    warnings = "\n".join(report.warnings)
    assert "pre-flight: client certificate (O=system:masters,CN=kube-etcd-healthcheck-client) expires in 3." in warnings
    assert f"pre-flight: server {host_port} certificate (CN=etcd-server) expires in 9." in warnings
    assert "ca certificate" not in warnings  # 400 days left
    expiry = cert_expiry(prom)
    now = datetime.now(UTC).timestamp()
    assert set(expiry) == {"client", "ca", f"server {host_port}"}
    assert 3.4 * 86400 < expiry["client"] - now < 3.6 * 86400
    assert 9.4 * 86400 < expiry[f"server {host_port}"] - now < 9.6 * 86400
    assert expiry["ca"] - now > 399 * 86400
    # the run record keeps them too, so the exporter (which reads the store) can publish them
    from kubectl_etcdbackup.run_status import load_status
    from kubectl_etcdbackup.stores import open_store

    assert load_status(open_store(f"file://{tmp_path / 'store'}")).cert_expiry == expiry


def test_client_files_are_checked(tls_certs, other_tls_certs, tmp_path) -> None:
    def problems(tls: TLSFiles) -> list[str]:
        return [w for w in run_preflight([], tls, 1.0).warnings if "expires" not in w]

    mismatched = TLSFiles(str(tls_certs.ca), str(tls_certs.client_cert), str(other_tls_certs.client_key))
    assert problems(mismatched) == [
        f"client key {other_tls_certs.client_key} does not match the certificate {tls_certs.client_cert}"]
    missing = TLSFiles(str(tmp_path / "nope.pem"), str(tls_certs.client_cert), str(tls_certs.client_key))
    assert problems(missing) == [f"cannot read CA bundle {tmp_path / 'nope.pem'}: No such file or directory"]
    files = TLSFiles(str(tls_certs.ca), str(tls_certs.client_cert), str(tls_certs.client_key))
    later = datetime.now(UTC) + timedelta(days=366)  # the session certs live a year
    expired = run_preflight([], files, 1.0, now=later).warnings
    assert [w.split(" (")[0] + w.split(")")[1].split(" on ")[0] for w in expired] == [
        "client certificate expired", "ca certificate expired"]
    assert run_preflight([], files, 1.0).warnings == []
    soon = [w.split(" (")[0] for w in run_preflight([], files, 1.0, now=later - timedelta(days=10)).warnings]
    assert soon == ["client certificate", "ca certificate"]


def test_an_unreachable_member_is_a_warning(etcd35_tls_cluster) -> None:
    report = run_preflight([*etcd35_tls_cluster.endpoints, "https://127.0.0.1:1"], tls_of(etcd35_tls_cluster), 2.0)
    assert [w for w in report.warnings if "127.0.0.1:1" in w] == [
        "member https://127.0.0.1:1 is not usable: etcd https://127.0.0.1:1: status failed: connection refused",
        "cannot read the server certificate of https://127.0.0.1:1: [Errno 111] Connection refused"]
    assert len(report.certs) == 2 + len(etcd35_tls_cluster.endpoints)  # client, ca, one per member


def test_nospace_alarm_is_a_warning_and_the_backup_still_runs(etcd_cluster_factory, tmp_path) -> None:
    quota = 2 << 20
    cluster = etcd_cluster_factory("3.5", 1, True, extra_args=("--quota-backend-bytes", str(quota)))
    with pytest.raises(EtcdctlError, match="database space exceeded"):
        for i in range(100):
            cluster.put_many(f"/fill{i}/", 64, 8192)
    key, prom = write_key(tmp_path / "key"), tmp_path / "m.prom"
    report = run_backup(run_options(cluster, tmp_path / "store", key, prom))
    nospace = [w for w in report.warnings if "NOSPACE" in w]
    assert len(nospace) == 1, report.warnings
    assert "of its quota 2.0 MiB" in nospace[0] and "pre-flight: etcd alarm NOSPACE on member " in nospace[0]
    assert report.ok, report.error  # a snapshot only reads: a cluster out of space is still backed up
