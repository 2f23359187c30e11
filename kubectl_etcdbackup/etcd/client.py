"""etcd v3 gRPC client: status, key count and the streaming Maintenance.Snapshot, over TLS or mTLS."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import grpc
import grpc.experimental

from ..errors import EtcdUnavailable, UsageError
from ._proto import rpc_pb2, rpc_pb2_grpc

# Streams are 32 KiB messages; leave room for large Range responses too. Receiving the snapshot stream on
# the calling thread (no hand-off to gRPC's polling thread) saves a quarter of the client's receive CPU.
# Keepalive: a ping every 10 s when quiet (etcd accepts one per 5 s), however long the stream has sent no
# data (max_pings_without_data 0 = no cap); a ping unanswered for 20 s means the connection is dead.
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.enable_retries", 0),
                    (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1),
                    ("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 20_000),
                    ("grpc.http2.ping_timeout_ms", 20_000), ("grpc.keepalive_permit_without_calls", 1),
                    ("grpc.http2.max_pings_without_data", 0)]
_CLIENT_CERT_REJECTED = "client certificate rejected (--cert/--key missing, or not signed by a CA etcd trusts)"
# Markers in gRPC's status details (this grpcio with BoringSSL, against etcd 3.5) -> the cause, first match
# wins. gRPC says UNAVAILABLE for all of them.
_CAUSES = (
    ("Connection refused", "connection refused"),
    ("CERTIFICATE_VERIFY_FAILED", "server certificate not trusted (wrong --cacert?)"),
    ("Hostname Verification Check failed", "server certificate not valid for this host name"),
    ("ALERT_BAD_CERTIFICATE", _CLIENT_CERT_REJECTED),  # etcd 3.5.1 (Go 1.16): no cert and unknown CA alike
    ("ALERT_CERTIFICATE_REQUIRED", _CLIENT_CERT_REJECTED),  # what newer TLS 1.3 servers send for no cert
    ("ALERT_UNKNOWN_CA", _CLIENT_CERT_REJECTED),
    ("Handshake read failed", "TLS handshake failed: connection closed (a plain-http endpoint given as https?)"),
    ("Socket closed", "connection closed by the server"),
    ("ping timeout", "connection lost (keepalive ping unanswered for 20s)"),
    ("keepalive watchdog timeout", "connection lost (keepalive ping unanswered for 20s)"),
    ("errors resolving", "host name not found"),
)


@dataclass(frozen=True)
class TLSFiles:
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if bool(self.cert) != bool(self.key):
            raise UsageError("--cert and --key must be given together")

        def read(p: str | None) -> bytes | None:
            if not p:
                return None
            try:
                return Path(p).read_bytes()
            except OSError as e:
                raise UsageError(f"cannot read TLS file {p}: {e.strerror}") from None

        return grpc.ssl_channel_credentials(read(self.cacert), read(self.key), read(self.cert))


@dataclass(frozen=True)
class EndpointStatus:
    endpoint: str
    member_id: str
    cluster_id: str
    version: str
    db_size: int
    db_size_in_use: int
    leader: str
    raft_index: int
    raft_term: int
    revision: int
    is_learner: bool
    errors: tuple[str, ...]

    @property
    def is_leader(self) -> bool:
        return self.member_id == self.leader

    @property
    def healthy(self) -> bool:
        return not self.errors and self.leader != "0"


def _target(endpoint: str) -> tuple[str, bool]:
    """('host:port', secure) from https://host:port, http://host:port or host:port."""
    u = urlparse(endpoint if "://" in endpoint else f"//{endpoint}")
    if u.scheme not in ("", "http", "https", "unix", "unixs") or not u.hostname:
        raise UsageError(f"invalid etcd endpoint {endpoint!r}")
    port = u.port or 2379
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    return f"{host}:{port}", u.scheme == "https"


def _hex(n: int) -> str:
    return format(n, "x")


class EtcdClient:
    def __init__(self, endpoint: str, tls: TLSFiles | None = None, dial_timeout: float = 5.0):
        self.endpoint = endpoint
        self.dial_timeout = dial_timeout
        target, secure = _target(endpoint)
        if secure or (tls and (tls.cacert or tls.cert)):
            self._channel = grpc.secure_channel(target, (tls or TLSFiles()).credentials(), _CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(target, _CHANNEL_OPTIONS)
        self._maintenance = rpc_pb2_grpc.MaintenanceStub(self._channel)
        self._kv = rpc_pb2_grpc.KVStub(self._channel)

    @property
    def channel(self) -> grpc.Channel:
        """The connection, for stubs of further etcd services (etcd/rpc.py)."""
        return self._channel

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unavailable(self, what: str, e: grpc.RpcError, timeout: float) -> EtcdUnavailable:
        return EtcdUnavailable(f"etcd {self.endpoint}: {what} failed: {failure_cause(e, timeout)}")

    def status(self) -> EndpointStatus:
        """The member's status; the first call on a new client, so it also connects. It fails fast: a refused
        connection or a TLS failure is reported at once, only a silent peer takes dial_timeout."""
        try:
            r = self._maintenance.Status(rpc_pb2.StatusRequest(), timeout=self.dial_timeout)
        except grpc.RpcError as e:
            raise self._unavailable("status", e, self.dial_timeout) from None
        return EndpointStatus(
            endpoint=self.endpoint, member_id=_hex(r.header.member_id), cluster_id=_hex(r.header.cluster_id),
            version=r.version, db_size=r.dbSize, db_size_in_use=r.dbSizeInUse, leader=_hex(r.leader),
            raft_index=r.raftIndex, raft_term=r.raftTerm, revision=r.header.revision,
            is_learner=r.isLearner, errors=tuple(r.errors))

    def key_count(self, timeout: float = 30.0) -> int:
        """Number of live keys (a count-only range over the whole keyspace)."""
        try:
            r = self._kv.Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0", count_only=True,
                                                    serializable=True), timeout=timeout)
        except grpc.RpcError as e:
            raise self._unavailable("key count", e, timeout) from None
        return int(r.count)

    def snapshot(self, timeout: float, idle_timeout: float) -> Iterator[rpc_pb2.SnapshotResponse]:
        """The raw snapshot stream: db bytes followed by etcd's 32-byte sha256 of them.

        Fails (EtcdUnavailable) after ``timeout`` s in all, or once the stream stalls: no message for
        ``idle_timeout`` s while waiting for one. Closing the iterator early cancels the call.
        """
        call = self._maintenance.Snapshot(rpc_pb2.SnapshotRequest(), timeout=timeout)
        watchdog = _IdleWatchdog(call.cancel, idle_timeout)
        clock = time.monotonic
        try:
            with watchdog:
                watchdog.waiting_since = clock()
                for resp in call:
                    watchdog.waiting_since = None
                    yield resp
                    watchdog.waiting_since = clock()
        except grpc.RpcError as e:
            if watchdog.fired:
                raise EtcdUnavailable(
                    f"etcd {self.endpoint}: snapshot stalled (no bytes for {idle_timeout:g}s)") from None
            raise self._unavailable("snapshot", e, timeout) from None
        finally:
            call.cancel()


class _IdleWatchdog:
    """Calls ``cancel`` once the consumer of a stream has waited ``idle_timeout`` s for one message.

    The consumer brackets each wait: ``waiting_since = monotonic()`` before, ``None`` after. That is two
    attribute writes per 32 KiB message instead of a timer per message, so the stream keeps its speed, and
    time the consumer spends elsewhere (compressing, uploading) never counts as idle.
    """

    def __init__(self, cancel: Callable[[], object], idle_timeout: float):
        self.waiting_since: float | None = None
        self.fired = False
        self._cancel = cancel
        self._idle = idle_timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="etcd-snapshot-watchdog", daemon=True)

    def __enter__(self) -> _IdleWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        delay = self._idle / 4
        while not self._stop.wait(delay):
            since = self.waiting_since
            if since is None:  # busy elsewhere; a wait may start any moment
                delay = self._idle / 4
                continue
            delay = since + self._idle - time.monotonic()
            if delay <= 0:
                self.fired = True
                self._cancel()
                return


def failure_cause(e: grpc.RpcError, timeout: float) -> str:
    """What went wrong with a call, in a few words on one line: the one place that reads gRPC's reports.

    gRPC says UNAVAILABLE for refused connections and every TLS failure alike; the cause is only in the
    details text (see _CAUSES). ``timeout`` is the deadline the call had.
    """
    code = e.code() if isinstance(e, grpc.Call) else None
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"timed out after {timeout:g}s"
    details = (e.details() if isinstance(e, grpc.Call) else None) or str(code or e)
    for marker, cause in _CAUSES:
        if marker in details:
            return cause
    # "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.1:2379: <the reason>"
    return " ".join(details.rsplit("last error: ", 1)[-1].split())


def split_endpoints(endpoints: str | Sequence[str]) -> list[str]:
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    out = [e.strip() for e in items if e.strip()]
    if not out:
        raise UsageError("no etcd endpoints given (--endpoints https://host:2379,...)")
    return out


def connect_healthy(endpoint: str, tls: TLSFiles | None, dial_timeout: float,
                    ) -> tuple[EtcdClient, EndpointStatus]:
    """A connected client for an endpoint that answers and is healthy (has a leader, no alarms)."""
    client = EtcdClient(endpoint, tls, dial_timeout)
    try:
        st = client.status()
    except BaseException:
        client.close()
        raise
    if not st.healthy:
        client.close()
        raise EtcdUnavailable(f"etcd {endpoint}: unhealthy ({', '.join(st.errors) or 'no leader'})")
    return client, st
