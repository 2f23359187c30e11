"""The linux/amd64 krew archive, built for real (wheels from the package index, as in a release), installs
and runs with nothing but the system python3 and the archive: `env -i`, every package index pointed at a
trap port that fails the test if anything connects. kubectl finds the plugin on PATH, as after
`kubectl krew install`; it backs up a real etcd. Prints the archive size and the first/second run times."""

from __future__ import annotations

import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import backup_args, write_key
from infra.ports import HOST, allocate_port, release_ports
from k8s_helpers import KUBECTL, needs_kubectl

from kubectl_etcdbackup import __version__

pytestmark = [pytest.mark.slow, needs_kubectl]

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "scripts" / "build-release.py"
ARCHIVE = f"kubectl-etcdbackup_{__version__}_linux_amd64.tar.gz"
SYSTEM_PYTHON = Path("/usr/bin/python3")


def build(out: Path) -> Path:
    r = subprocess.run([sys.executable, str(BUILD), "--out", str(out), "--platform", "linux/amd64"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out / ARCHIVE


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("dist"))


class Trap:
    """A listening port standing in for every package index and proxy; `connections()` says who came."""

    def __init__(self) -> None:
        self.port = allocate_port()
        self.sock = socket.create_server((HOST, self.port))
        self.sock.settimeout(0.1)
        self.url = f"http://{HOST}:{self.port}"

    def connections(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        self.sock.close()
        release_ports([self.port])


@pytest.fixture
def trap() -> Iterator[Trap]:
    t = Trap()
    try:
        yield t
    finally:
        t.close()


def test_the_archive_build_is_reproducible(archive: Path, tmp_path: Path) -> None:
    assert build(tmp_path).read_bytes() == archive.read_bytes()
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert {"kubectl-etcdbackup", "LICENSE", "README.md", "requirements.txt"} <= set(names)
    assert any(n.startswith(f"wheels/kubectl_etcdbackup-{__version__}-py3-none-any") for n in names)
    for py in ("311", "312", "313", "314"):
        assert any(n.startswith("wheels/grpcio-") and f"-cp{py}-" in n for n in names), py


@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no system python3")
def test_offline_install_and_backup_through_kubectl(archive: Path, tmp_path: Path, etcd35_tls_cluster,
                                                     trap: Trap) -> None:
    trap_url = trap.url
    plugin_dir = tmp_path / "krew-store"
    plugin_dir.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(plugin_dir, filter="data")
    bin_dir = tmp_path / "bin"  # as ~/.krew/bin: a link to the launcher; kubectl beside it
    bin_dir.mkdir()
    (bin_dir / "kubectl-etcdbackup").symlink_to(plugin_dir / "kubectl-etcdbackup")
    (bin_dir / "kubectl").symlink_to(KUBECTL)
    (bin_dir / "python3").symlink_to(SYSTEM_PYTHON)
    home = tmp_path / "home"
    (home / ".config" / "pip").mkdir(parents=True)
    (home / ".config" / "pip" / "pip.conf").write_text(f"[global]\nindex-url = {trap_url}/simple\n")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "PIP_INDEX_URL": f"{trap_url}/simple",
           "PIP_NO_INDEX": "1", "http_proxy": trap_url, "https_proxy": trap_url, "HTTPS_PROXY": trap_url,
           # as on a workstation behind a proxy: the local etcd (gRPC honours https_proxy too) is reached directly
           "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}

    def kubectl(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
        start = time.monotonic()
        r = subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), "kubectl", "etcdbackup", *args],
                           capture_output=True, text=True, timeout=300)
        return r, time.monotonic() - start

    first, first_time = kubectl("--help")
    assert first.returncode == 0, first.stderr
    assert "Usage: kubectl etcdbackup" in first.stdout
    (line,) = first.stderr.splitlines()  # one line says what happens, nothing else
    assert line.startswith(f"kubectl-etcdbackup: first run of {__version__} with Python 3.") and " MB" in line
    second, second_time = kubectl("version")
    assert (second.returncode, second.stdout, second.stderr) == (0, f"{__version__}\n", "")
    key = write_key(tmp_path / "key")
    store = f"file://{tmp_path / 'store'}"
    backup, _ = kubectl(*backup_args(etcd35_tls_cluster, store, key))
    assert backup.returncode == 0, backup.stderr
    assert '"revision"' in backup.stdout
    assert trap.connections() == 0
    print(f"\n{ARCHIVE}: {archive.stat().st_size / 1e6:.1f} MB; first run (install) {first_time:.1f} s; "
          f"second run {second_time:.2f} s; venv {du(home) / 1e6:.0f} MB")


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())

