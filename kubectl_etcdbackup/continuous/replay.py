"""Rebuild etcd at a revision: a throwaway single-member etcd on 127.0.0.1, started on a restored full snapshot,
replays each recorded revision as ONE Txn, so every key's create/mod revision and version, and the final
revision, equal the original's (each Txn must land exactly on its recorded revision, else the replay stops).

Leases are re-created with their original ids and granted TTLs before the first Txn that uses them, and every
lease with keys is kept alive while the replay runs: a lease expiring here would delete keys in a revision
the original never had. (Leases the original revoked stay in the result until their TTL runs out after the
restore; their keys are deleted as recorded.)
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EtcdBackupError, EtcdUnavailable, IntegrityError, ToolError
from ..etcd import rpc
from ..etcd._proto import rpc_pb2
from ..etcd._proto.kv_pb2 import Event
from ..etcd.client import EtcdClient
from ..etcd.rpc import Stubs, describe
from ..etcd.tools import EtcdTool, RestoreArgs, find_binary, stop_process
from ..snapshot_hash import SnapshotHashCheck
from .segment import RevisionRecord

UNKNOWN_LEASE_TTL = 60  # a lease already gone when the stream asked for its TTL; its keys go in a later revision
_CALL_TIMEOUT = 60.0
_PAGE = 10_000
_NAME = "replay"


@dataclass(frozen=True)
class ReplayPorts:
    client: int
    peer: int


def free_ports() -> ReplayPorts:
    """Two ports on 127.0.0.1 the kernel says are free right now."""
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        return ReplayPorts(a.getsockname()[1], b.getsockname()[1])


class ThrowawayEtcd:
    """`with ThrowawayEtcd(snapshot, work_dir) as etcd:` restores the snapshot into work_dir, runs etcd on it
    (unsafe-no-fsync: nothing here must survive a crash) until the block ends, then stops it."""

    def __init__(self, snapshot: Path, work_dir: Path, ports: ReplayPorts | None = None, *,
                 etcd_binary: str | None = None, tool: EtcdTool | None = None, start_timeout: float = 30.0):
        self._snapshot = snapshot
        self._dir = work_dir
        self._ports = ports or free_ports()
        self._etcd = find_binary("etcd", etcd_binary)
        self._tool = tool or EtcdTool()
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self.client: EtcdClient | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._ports.client}"

    def __enter__(self) -> ThrowawayEtcd:
        if self._etcd is None:
            raise ToolError("etcd not found (install etcd or set ETCDBACKUP_ETCD): needed to replay the stream")
        peer = f"http://127.0.0.1:{self._ports.peer}"
        data_dir = self._dir / "replay.etcd"
        self._tool.restore(RestoreArgs(str(self._snapshot), str(data_dir), _NAME, f"{_NAME}={peer}",
                                       "etcdbackup-replay", peer))
        argv = [self._etcd, "--name", _NAME, "--data-dir", str(data_dir), "--listen-client-urls", self.endpoint,
                "--advertise-client-urls", self.endpoint, "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer, "--initial-cluster", f"{_NAME}={peer}",
                "--unsafe-no-fsync", "--max-txn-ops", "1000000", "--max-request-bytes", str(128 << 20),
                "--quota-backend-bytes", str(8 << 30), "--log-level", "warn"]
        with open(self._dir / "replay-etcd.log", "ab") as log:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          env={k: v for k, v in os.environ.items() if not k.startswith("ETCD_")})
        try:
            self.client = self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_ready(self) -> EtcdClient:
        deadline = time.monotonic() + self._start_timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ToolError(f"the replay etcd exited with code {self._proc.returncode}: {self._log_tail()}")
            client = EtcdClient(self.endpoint, dial_timeout=1.0)
            try:
                if client.status().healthy:
                    return client
            except EtcdUnavailable:
                pass
            client.close()
            if time.monotonic() > deadline:
                raise ToolError(f"the replay etcd did not start within {self._start_timeout:g}s: {self._log_tail()}")
            time.sleep(0.2)

    def _log_tail(self) -> str:
        lines = (self._dir / "replay-etcd.log").read_text(errors="replace").strip().splitlines()
        return lines[-1][:300] if lines else "no output"

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._proc is not None:
            stop_process(self._proc)

    @property
    def stubs(self) -> Stubs:
        assert self.client is not None, "etcd is not running"
        return Stubs.of(self.client)

    def revision(self) -> int:
        return int(self.stubs.kv.Range(rpc_pb2.RangeRequest(key=b"\0", count_only=True),
                                       timeout=_CALL_TIMEOUT).header.revision)

    def snapshot_to(self, dest: Path) -> int:
        """Save the db as `etcdctl snapshot save` does (db + etcd's sha256, checked), mode 0600, atomically.
        Returns its size."""
        assert self.client is not None
        check = SnapshotHashCheck()
        tmp = dest.with_name(f".{dest.name}.partial")
        tmp.unlink(missing_ok=True)
        try:
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                for resp in self.client.snapshot(timeout=3600.0, idle_timeout=60.0):
                    check.update(resp.blob)
                    f.write(resp.blob)
                f.flush()
                os.fsync(f.fileno())
            check.check("the replayed etcd's snapshot")
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return check.size


class Replayer:
    """Applies revision records to a ThrowawayEtcd, one Txn per revision, keeping its leases alive."""

    def __init__(self, etcd: ThrowawayEtcd, keepalive_interval: float = 1.0):
        self._stubs = etcd.stubs
        self._ttls: dict[int, int] = {}
        self._keepalive = _KeepAlive(self._stubs, keepalive_interval)
        self._granted = self._leases_in_use()
        self._keepalive.add(self._granted)
        self.revisions = 0
        self.events = 0

    def __enter__(self) -> Replayer:
        self._keepalive.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._keepalive.stop()

    def _leases_in_use(self) -> set[int]:
        leases: set[int] = set()
        start = b"\0"
        while True:
            r = self._stubs.kv.Range(rpc_pb2.RangeRequest(key=start, range_end=b"\0", keys_only=True, limit=_PAGE),
                                     timeout=_CALL_TIMEOUT)
            leases.update(kv.lease for kv in r.kvs if kv.lease)
            if not r.more:
                return leases
            start = r.kvs[-1].key + b"\0"

    def apply(self, rec: RevisionRecord) -> None:
        """Make `rec` the next revision, exactly; IntegrityError when etcd lands on another one."""
        self._ttls.update(rec.leases)
        for lease in {ev.kv.lease for ev in rec.events if ev.kv.lease and ev.type == Event.PUT} - self._granted:
            self._grant(lease)
        ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=ev.kv.key, value=ev.kv.value, lease=ev.kv.lease))
               if ev.type == Event.PUT else
               rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=ev.kv.key))
               for ev in rec.events]
        try:
            r = self._stubs.kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=_CALL_TIMEOUT)
        except rpc.RpcError as e:
            raise EtcdBackupError(f"replay of revision {rec.revision} failed: {describe(e)}") from None
        if r.header.revision != rec.revision:
            raise IntegrityError(f"replay of revision {rec.revision} landed on revision {r.header.revision}: the "
                                 "base snapshot and the delta stream do not fit together")
        self.revisions += 1
        self.events += len(rec.events)

    def _grant(self, lease: int) -> None:
        ttl = self._ttls.get(lease) or UNKNOWN_LEASE_TTL
        try:
            self._stubs.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=lease, TTL=ttl), timeout=_CALL_TIMEOUT)
        except rpc.RpcError as e:
            if "lease already exists" not in rpc.details(e):
                raise EtcdBackupError(f"replay: cannot re-create lease {lease:x}: {describe(e)}") from None
        self._granted.add(lease)
        self._keepalive.add({lease})


class _KeepAlive:
    """Renews a growing set of leases every `interval` seconds on one LeaseKeepAlive stream."""

    def __init__(self, stubs: Stubs, interval: float):
        self._stubs = stubs
        self._interval = interval
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._call: rpc.Future | None = None
        self._thread = threading.Thread(target=self._drain, name="replay-lease-keepalive", daemon=True)

    def add(self, ids: set[int]) -> None:
        with self._lock:
            self._ids |= ids

    def _requests(self) -> Iterator[Any]:
        while not self._stop.wait(self._interval):
            with self._lock:
                ids = list(self._ids)
            for lease in ids:
                yield rpc_pb2.LeaseKeepAliveRequest(ID=lease)

    def start(self) -> None:
        self._call = self._stubs.lease.LeaseKeepAlive(self._requests())
        self._thread.start()

    def _drain(self) -> None:
        assert self._call is not None
        with contextlib.suppress(rpc.RpcError):
            for _ in self._call:
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._call is not None:
            self._call.cancel()
            self._thread.join(10)
