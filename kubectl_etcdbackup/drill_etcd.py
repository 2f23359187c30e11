"""A throwaway etcd on a restored data dir, for restore drills: started on 127.0.0.1 only (plain http, free ports
below the ephemeral range), waited for until healthy, always stopped (by its PID); and the reads a drill makes of it
(live key counts, keys by prefix, whether keys exist)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import EtcdBackupError, EtcdUnavailable, ToolError
from .etcd._proto import rpc_pb2, rpc_pb2_grpc
from .etcd.client import EndpointStatus, EtcdClient
from .etcd.rpc import RpcError, describe
from .etcd.tools import find_binary, stop_process
from .textutil import last_line

QUOTA_BYTES = 8 << 30  # etcd's largest recommended quota: a restored db of any real cluster fits under it
_PAGE = 5000


@contextmanager
def scratch_etcd(data_dir: Path, name: str, client_port: int, peer_port: int, log: Path, *,
                 timeout: float, etcd: str | None = None) -> Iterator[tuple[EtcdClient, EndpointStatus]]:
    """Run etcd on data_dir (restored as member `name` with peer URL http://127.0.0.1:peer_port); yield a client
    and its first healthy status. Raises EtcdUnavailable (with the log's last line) when it exits or is not healthy
    within `timeout` s. The process is stopped on the way out, whatever happens."""
    binary = find_binary("etcd", etcd)
    if binary is None:
        raise ToolError("no etcd binary found (a drill starts one): put etcd on PATH or pass --etcd PATH")
    client_url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, "--name", name, "--data-dir", str(data_dir), "--listen-client-urls", client_url,
             "--advertise-client-urls", client_url, "--listen-peer-urls", peer_url,
             "--initial-advertise-peer-urls", peer_url, "--initial-cluster", f"{name}={peer_url}",
             "--quota-backend-bytes", str(QUOTA_BYTES)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        client = EtcdClient(client_url, dial_timeout=2.0)
        try:
            yield client, _wait_healthy(proc, client, log, timeout)
        finally:
            client.close()
    finally:
        stop_process(proc, 15.0)


def _wait_healthy(proc: subprocess.Popen[bytes], client: EtcdClient, log: Path, timeout: float) -> EndpointStatus:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        if proc.poll() is not None:
            raise EtcdUnavailable(f"the drill's etcd exited with code {proc.returncode}: {_log_tail(log)}")
        try:
            status = client.status()
            if status.healthy:
                return status
            last = ", ".join(status.errors) or "no leader"
        except EtcdUnavailable as e:
            last = str(e)
        if time.monotonic() > deadline:
            raise EtcdUnavailable(f"the drill's etcd was not healthy within {timeout:g}s ({last})")
        time.sleep(0.1)


def _log_tail(log: Path) -> str:
    try:
        return last_line(log.read_text(errors="replace")) or "no output"
    except OSError:
        return "no log"


def _range(client: EtcdClient, request: rpc_pb2.RangeRequest, timeout: float = 60.0) -> rpc_pb2.RangeResponse:
    try:
        return rpc_pb2_grpc.KVStub(client.channel).Range(request, timeout=timeout)
    except RpcError as e:
        raise EtcdBackupError(f"the drill's etcd: range failed: {describe(e, timeout)}") from None


def live_key_count(client: EtcdClient) -> int:
    return int(_range(client, rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0", count_only=True)).count)


def iter_keys(client: EtcdClient) -> Iterator[bytes]:
    """Every live key, in order, a page at a time (keys only, at one revision)."""
    start, revision = b"\0", 0
    while True:
        resp = _range(client, rpc_pb2.RangeRequest(key=start, range_end=b"\0", keys_only=True, limit=_PAGE,
                                                   revision=revision))
        revision = revision or resp.header.revision
        for kv in resp.kvs:
            yield kv.key
        if not resp.more or not resp.kvs:
            return
        start = resp.kvs[-1].key + b"\0"


def missing_keys(client: EtcdClient, keys: list[str]) -> list[str]:
    return [k for k in keys if not _range(client, rpc_pb2.RangeRequest(key=k.encode(), count_only=True)).count]
