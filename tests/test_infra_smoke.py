"""Fast checks that the shared test infrastructure works (real etcd 3.5/3.4 with mTLS, moto S3)."""

from __future__ import annotations

import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from infra.certs import TLSCerts
from infra.etcd_cluster import (
    PRELOAD_COUNT,
    PRELOAD_PREFIX,
    PRELOAD_VALUE_SIZE,
    ClientTLS,
    EtcdCluster,
    EtcdClusterFactory,
)
from infra.ports import HIGH, allocate_ports, port_is_free, release_ports
from infra.s3_server import S3Server

CLUSTERS = [
    pytest.param("etcd35_tls_cluster", id="3.5"),
    pytest.param("etcd34_tls_cluster", id="3.4", marks=pytest.mark.etcd34),
]


@pytest.fixture(params=CLUSTERS)
def cluster(request: pytest.FixtureRequest) -> EtcdCluster:
    return request.getfixturevalue(request.param)


def test_ports_below_ephemeral_range() -> None:
    ports = allocate_ports(9)
    try:
        assert ports == list(range(ports[0], ports[0] + 9))
        assert ports[-1] < HIGH <= 32768
        assert all(port_is_free(p) for p in ports)
        assert not set(ports) & set(allocate_ports(9))  # reserved: never handed out twice
    finally:
        release_ports(ports)


def test_cluster_healthy_with_mtls(cluster: EtcdCluster) -> None:
    assert cluster.size == 3 and len(cluster.endpoints) == 3
    assert all(u.startswith("https://127.0.0.1:") for u in cluster.endpoints + cluster.peer_urls)
    assert all(int(u.rsplit(":", 1)[1]) < 32768 for u in cluster.endpoints + cluster.peer_urls + cluster.metrics_urls)
    cluster.wait_healthy(timeout=10)
    members = cluster.members()
    assert sorted(m["name"] for m in members) == cluster.names
    status = cluster.endpoint_status()
    assert {s["Status"]["version"] for s in status} == {cluster.bins.version}
    assert cluster.initial_cluster.count("=https://127.0.0.1:") == 3
    assert cluster.client_tls is not None
    assert cluster.endpoint_args()[:2] == ["--endpoints", ",".join(cluster.endpoints)]


def test_preloaded_data(cluster: EtcdCluster) -> None:
    assert cluster.key_count(PRELOAD_PREFIX) == PRELOAD_COUNT
    assert len(cluster.preloaded_keys) == PRELOAD_COUNT
    data = cluster.get_all("/registry/")
    assert set(cluster.preloaded_keys) <= set(data)
    assert all(len(data[k]) == PRELOAD_VALUE_SIZE for k in cluster.preloaded_keys)
    assert cluster.revision() > 1


def test_wrong_or_missing_client_cert_is_rejected(cluster: EtcdCluster, other_tls_certs: TLSCerts) -> None:
    assert cluster.certs is not None
    cases = {
        "ok": cluster.client_tls,
        "no client cert": ClientTLS(cluster.certs.ca),
        "client cert from another CA": ClientTLS(cluster.certs.ca, other_tls_certs.client_cert,
                                                 other_tls_certs.client_key),
        "server not trusted": ClientTLS.from_certs(other_tls_certs),
    }

    def run(tls: ClientTLS | None) -> subprocess.CompletedProcess[str]:
        return cluster.etcdctl_run("get", "/x", endpoints=cluster.endpoints[:1], tls=tls,
                                   dial_timeout="1s", command_timeout="1s", timeout=20)

    with ThreadPoolExecutor(len(cases)) as pool:  # the failures each wait out the 1 s timeout
        results = dict(zip(cases, pool.map(run, cases.values()), strict=True))
    assert results.pop("ok").returncode == 0
    for case, r in results.items():
        assert r.returncode != 0, case
        assert "deadline exceeded" in r.stderr or "certificate" in r.stderr, (case, r.stderr)


def test_put_get_round_trip(cluster: EtcdCluster) -> None:
    prefix = f"/smoke/{uuid.uuid4().hex[:8]}/"
    cluster.put(prefix + "a", "-value with spaces")
    assert cluster.get(prefix + "a") == b"-value with spaces"
    assert cluster.get(prefix + "missing") is None
    rev = cluster.revision()
    keys = cluster.put_many(prefix + "k-", 300, 1024)
    got = cluster.get_all(prefix + "k-")
    assert sorted(got) == keys and all(len(v) == 1024 for v in got.values())
    assert cluster.key_count(prefix) == 301
    assert cluster.revision() >= rev + 3  # 3 txns of <=128 puts


def test_snapshot_restore_start_from_data_dirs(etcd_cluster_factory: EtcdClusterFactory,
                                               etcd_bins_35: object) -> None:
    """A fresh cluster -> etcdctl snapshot -> etcdutl restore into 3 data dirs -> start from them."""
    src = etcd_cluster_factory("3.5", size=3)
    src.put_many("/registry/pods/default/p-", 50, 512)
    before = src.get_all("/registry/")
    rev = src.revision()
    work = etcd_cluster_factory.workdir("restore")
    snap = work / "snap.db"
    src.etcdctl("snapshot", "save", str(snap), endpoints=src.endpoints[:1])

    layout = etcd_cluster_factory.layout(3, tls=True, name_prefix="r")
    dirs = [work / f"{n}.etcd" for n in layout.names]
    for name, peer, d in zip(layout.names, layout.peer_urls, dirs, strict=True):
        subprocess.run(
            [str(src.bins.restore_tool), "snapshot", "restore", str(snap), "--name", name,
             "--initial-cluster", layout.initial_cluster, "--initial-cluster-token", layout.token,
             "--initial-advertise-peer-urls", peer, "--data-dir", str(d)],
            check=True, capture_output=True, timeout=60, env=EtcdCluster.etcdctl_env(),
        )
    src.stop(kill=True)
    restored = etcd_cluster_factory("3.5", layout=layout, data_dirs=dirs)
    assert restored.get_all("/registry/") == before
    assert restored.revision() == rev
    assert sorted(m["name"] for m in restored.members()) == ["r0", "r1", "r2"]
    # member stop/start on its existing data dir
    restored.stop_member(1)
    restored.start_member(1)
    assert restored.key_count("/registry/") == 50


def test_moto_bucket_put_get(s3_server: S3Server, s3_bucket: str) -> None:
    assert s3_server.endpoint_url.startswith("http://127.0.0.1:")
    assert int(s3_server.endpoint_url.rsplit(":", 1)[1]) < 32768
    s3 = s3_server.client()
    s3.put_object(Bucket=s3_bucket, Key="backups/a.json", Body=b'{"ok": true}')
    assert s3.get_object(Bucket=s3_bucket, Key="backups/a.json")["Body"].read() == b'{"ok": true}'
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="backups/")["Contents"]]
    assert keys == ["backups/a.json"]


def test_boto3_default_env_reaches_moto(s3_server: S3Server, s3_bucket: str) -> None:
    """Code under test builds its own client from the environment + an endpoint URL."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint_url)
    s3.put_object(Bucket=s3_bucket, Key="x", Body=b"1")
    assert s3.head_object(Bucket=s3_bucket, Key="x")["ContentLength"] == 1
