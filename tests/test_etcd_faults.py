"""etcd members that stall, refuse or reject us, on real etcd 3.5.1 with mTLS (through tests/infra/tcp_proxy.py):
the backup falls back to the next member quickly, and every failure is one line naming its real cause, with no
gRPC C-core log lines on stderr."""

from __future__ import annotations

import ast
import os
import re
import time
from pathlib import Path

import pytest
from cli_helpers import Result, run_cli_subprocess, tls_args
from infra.certs import TLSCerts
from infra.etcd_cluster import EtcdCluster
from infra.ports import allocate_ports, release_ports
from infra.tcp_proxy import TcpProxy

import kubectl_etcdbackup
from kubectl_etcdbackup.etcd.client import EtcdClient, TLSFiles

# gRPC C-core log lines: "E0000 00:00:..." / "I1203 06:22:29.598944  15827 ssl_transport_security.cc:2563] ..."
_CORE_LOG = re.compile(r"^[DIWEF]\d{4} |ev_poll_posix|ssl_transport_security|\.cc:\d+\]", re.MULTILINE)
_STALL_AFTER = 64 << 10  # bytes: past the TLS handshake, Status and the key count, inside the snapshot


def _env(**extra: str) -> dict[str, str]:
    """The environment without GRPC_* (this pytest process has set GRPC_VERBOSITY itself by importing the
    package; a child must not inherit that as if the user had set it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    return env | extra


def _backup(cluster: EtcdCluster, endpoints: list[str], store: str, *extra: str, tls: list[str] | None = None,
            env: dict[str, str] | None = None, timeout: float = 60) -> tuple[Result, float]:
    args = ["agent", "backup", "--endpoints", ",".join(endpoints),
            *(tls_args(cluster) if tls is None else tls), "--store", store, "--no-encryption", "--no-progress",
            "--verify", "hash", *extra]
    t0 = time.monotonic()
    r = run_cli_subprocess(*args, timeout=timeout, env=env or _env())
    return r, time.monotonic() - t0


def _failure(r: Result) -> str:
    """The one error line of a failed run, after checking stderr is nothing but our own lines."""
    assert r.rc != 0, r.out
    assert not _CORE_LOG.search(r.err), r.err
    errors = [line for line in r.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, r.err
    return errors[0]


def _db_size(cluster: EtcdCluster, timeout: float = 15.0) -> int:
    """The db size of member 0, once it holds the preloaded keys (etcd reports the size as of its last
    backend commit, which may lag a fresh preload)."""
    tls = cluster.client_tls
    assert tls
    deadline = time.monotonic() + timeout
    with EtcdClient(cluster.endpoints[0], TLSFiles(str(tls.ca), str(tls.cert), str(tls.key))) as c:
        while (size := c.status().db_size) < 4 * _STALL_AFTER:
            assert time.monotonic() < deadline, f"db still {size} bytes"
            time.sleep(0.2)
    return size


def test_stalled_member_falls_back_to_the_next(etcd35_tls_cluster: EtcdCluster, file_store_url: str) -> None:
    c = etcd35_tls_cluster
    _db_size(c)  # big enough to stall inside the snapshot
    with TcpProxy(c.endpoints[0], stall_after=_STALL_AFTER) as stalled:
        r, took = _backup(c, [stalled.url, c.endpoints[1]], file_store_url, "--idle-timeout", "3s")
        assert stalled.stalled.is_set()
    assert r.rc == 0, r.err
    assert r.json()["member"] == c.endpoints[1]
    assert (f"warning: etcd {stalled.url}: snapshot stalled (no bytes for 3s); fell back to {c.endpoints[1]}"
            in r.err.splitlines()), r.err
    assert not _CORE_LOG.search(r.err), r.err
    assert took < 3 + 20, took  # idle timeout + start-up and a small backup on a busy 2-core machine


def test_throttled_stream_that_keeps_moving_is_not_aborted(etcd35_tls_cluster: EtcdCluster,
                                                          file_store_url: str) -> None:
    c = etcd35_tls_cluster
    seconds = 4  # the stream takes about this long, never idle for the 1 s idle timeout
    with TcpProxy(c.endpoints[0], rate=_db_size(c) // seconds) as slow:
        r, took = _backup(c, [slow.url], file_store_url, "--idle-timeout", "1s")
    assert r.rc == 0, r.err
    assert "warning" not in r.err, r.err
    assert took > 2, took  # the throttle really held the stream back past the idle timeout


def test_slow_consumer_is_not_idle(etcd35_tls_cluster: EtcdCluster) -> None:
    """Time spent between messages (compressing, uploading) is not the stream's idle time."""
    tls = etcd35_tls_cluster.client_tls
    assert tls
    with EtcdClient(etcd35_tls_cluster.endpoints[1], TLSFiles(str(tls.ca), str(tls.cert), str(tls.key))) as c:
        size = 0
        for i, resp in enumerate(c.snapshot(timeout=60, idle_timeout=0.5)):
            if i < 2:
                time.sleep(1.0)
            size += len(resp.blob)
    assert size > 4 * _STALL_AFTER


def test_refused_endpoints_fail_at_once(etcd35_tls_cluster: EtcdCluster, file_store_url: str) -> None:
    ports = allocate_ports(3)  # reserved and never listened on: connections are refused
    try:
        r, took = _backup(etcd35_tls_cluster, [f"https://127.0.0.1:{p}" for p in ports], file_store_url)
    finally:
        release_ports(ports)
    line = _failure(r)
    assert line.count("connection refused") == 3, line
    assert took < 6, took  # was 3 x the 5 s dial timeout


def test_wrong_ca_says_server_certificate_not_trusted(etcd35_tls_cluster: EtcdCluster, other_tls_certs: TLSCerts,
                                                      tls_certs: TLSCerts, file_store_url: str) -> None:
    tls = ["--cacert", str(other_tls_certs.ca), "--cert", str(tls_certs.client_cert),
           "--key", str(tls_certs.client_key)]
    r, _ = _backup(etcd35_tls_cluster, etcd35_tls_cluster.endpoints[:1], file_store_url, tls=tls)
    line = _failure(r)
    assert f"etcd {etcd35_tls_cluster.endpoints[0]}: " in line
    assert "server certificate not trusted" in line, line


@pytest.mark.parametrize("client_cert", ["other-ca", "none"])
def test_client_cert_rejected(client_cert: str, etcd35_tls_cluster: EtcdCluster, other_tls_certs: TLSCerts,
                              tls_certs: TLSCerts, file_store_url: str) -> None:
    tls = ["--cacert", str(tls_certs.ca)]
    if client_cert == "other-ca":
        tls += ["--cert", str(other_tls_certs.client_cert), "--key", str(other_tls_certs.client_key)]
    r, _ = _backup(etcd35_tls_cluster, etcd35_tls_cluster.endpoints[:1], file_store_url, tls=tls)
    assert "client certificate rejected" in _failure(r)


def test_explicit_grpc_verbosity_is_kept(etcd35_tls_cluster: EtcdCluster, other_tls_certs: TLSCerts,
                                         file_store_url: str) -> None:
    """Quiet by default, but a user who asks for gRPC's own logs gets them."""
    tls = ["--cacert", str(other_tls_certs.ca)]
    r, _ = _backup(etcd35_tls_cluster, etcd35_tls_cluster.endpoints[:1], file_store_url, tls=tls,
                   env=_env(GRPC_VERBOSITY="INFO"))
    assert r.rc != 0
    assert "ssl_transport_security" in r.err, r.err


def test_grpc_is_imported_only_behind_the_quiet_setting() -> None:
    """kubectl_etcdbackup/etcd/__init__.py sets GRPC_VERBOSITY before grpc is first imported; that holds
    only while every module importing grpc lives in that package."""
    root = Path(kubectl_etcdbackup.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n == "grpc" or n.startswith("grpc.") for n in names) and root / "etcd" not in path.parents:
                offenders.append(str(path.relative_to(root)))
    assert not offenders
