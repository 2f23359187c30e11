"""Watch the whole etcd keyspace from a revision on, as whole revisions, across endpoints.

etcd delivers the events of one revision in one WatchResponse, in revision order. The watcher asks for a progress
report every `progress_interval` seconds; a report whose revision is the last one received proves the stream
complete up to now even when nothing changes. (etcd 3.5.1 may answer a progress request before a lagging watcher
has caught up, so a report ahead of the received events proves nothing and only counts as a heartbeat.) A stream
that fails, or answers nothing for `idle_timeout` seconds, is cancelled and re-opened on the next healthy
endpoint from the revision after the last one received: no revision is skipped or repeated.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import EtcdBackupError, EtcdUnavailable
from ..etcd import rpc
from ..etcd._proto import rpc_pb2
from ..etcd._proto.kv_pb2 import Event
from ..etcd.client import EtcdClient, TLSFiles, connect_healthy
from ..etcd.rpc import Stubs, describe

_MAX_BACKOFF = 5.0


class WatchCompacted(EtcdBackupError):
    """etcd has compacted the revisions the stream needs."""

    def __init__(self, needed: int, compact_revision: int):
        super().__init__(f"etcd has compacted its history up to revision {compact_revision}; the stream needed "
                         f"revision {needed}")
        self.needed = needed
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class Revision:
    revision: int
    events: list[Event]


@dataclass(frozen=True)
class Disconnected:
    """The stream broke (`reason`); the watcher reconnects next."""

    reason: str


@dataclass(frozen=True)
class Progress:
    """Every revision up to `revision` has been received (when `complete`); else only a sign of life."""

    revision: int
    complete: bool


class Watcher:
    """Yields Revision and Progress items from `start_revision` on until `stop` is set.

    Raises WatchCompacted when etcd no longer has a needed revision. Each endpoint failure is yielded as
    Disconnected and retried (next endpoint, growing pause up to 5 s when all fail) until `stop`.
    """

    def __init__(self, endpoints: list[str], tls: TLSFiles | None, *, dial_timeout: float = 5.0,
                 progress_interval: float = 5.0, idle_timeout: float = 30.0):
        self._endpoints = endpoints
        self._tls = tls
        self._dial_timeout = dial_timeout
        self._progress_interval = progress_interval
        self._idle_timeout = idle_timeout
        self._client: EtcdClient | None = None
        self.cluster_id = ""

    def watch(self, start_revision: int, stop: threading.Event) -> Iterator[Revision | Progress | Disconnected]:
        next_revision = start_revision
        failures = 0
        while not stop.is_set():
            endpoint = self._endpoints[failures % len(self._endpoints)]
            try:
                for item in self._watch_endpoint(endpoint, next_revision, stop):
                    failures = 0
                    if isinstance(item, Revision):
                        next_revision = item.revision + 1
                    yield item
            except EtcdUnavailable as e:
                failures += 1
                yield Disconnected(str(e))
                if failures % len(self._endpoints) == 0:
                    stop.wait(min(_MAX_BACKOFF, 0.5 * failures / len(self._endpoints)))

    def lease_ttl(self, lease_id: int) -> int:
        """The granted TTL of a lease on the member being watched; 0 when it is gone or cannot be asked."""
        if self._client is None:
            return 0
        try:
            r = Stubs.of(self._client).lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id),
                                                             timeout=self._dial_timeout)
        except rpc.RpcError:
            return 0
        return max(0, int(r.grantedTTL)) if r.TTL >= 0 else 0

    def _watch_endpoint(self, endpoint: str, start: int, stop: threading.Event) -> Iterator[Revision | Progress]:
        client, status = connect_healthy(endpoint, self._tls, self._dial_timeout)
        self.cluster_id = status.cluster_id
        self._client = client
        requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
        requests.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=b"\0", range_end=b"\0", start_revision=start, progress_notify=True)))
        call = Stubs.of(client).watch.Watch(iter(requests.get, None))
        ticker = _Ticker(call, requests, stop, self._progress_interval, self._idle_timeout)
        last = start - 1
        try:
            with ticker:
                for resp in call:
                    ticker.alive()
                    if resp.compact_revision:
                        raise WatchCompacted(last + 1, resp.compact_revision)
                    if resp.canceled:
                        raise EtcdUnavailable(f"etcd {endpoint}: watch cancelled: {resp.cancel_reason or 'no reason'}")
                    if resp.events:
                        for item in _revisions(resp.events):
                            last = item.revision
                            yield item
                    elif not resp.created:
                        yield Progress(resp.header.revision, resp.header.revision == last)
        except rpc.RpcError as e:
            if stop.is_set():
                return
            cause = f"no answer for {self._idle_timeout:g}s" if ticker.fired else describe(e)
            raise EtcdUnavailable(f"etcd {endpoint}: watch failed: {cause}") from None
        finally:
            requests.put(None)
            call.cancel()
            self._client = None
            client.close()


def _revisions(events: list[Event]) -> Iterator[Revision]:
    """Group a response's events (in revision order) by revision."""
    group: list[Event] = []
    for ev in events:
        if group and ev.kv.mod_revision != group[0].kv.mod_revision:
            yield Revision(group[0].kv.mod_revision, group)
            group = []
        group.append(ev)
    if group:
        yield Revision(group[0].kv.mod_revision, group)


class _Ticker:
    """While a watch call runs: asks for a progress report every `interval` s, and cancels the call when it has
    answered nothing for `idle_timeout` s or `stop` is set."""

    def __init__(self, call: rpc.Future, requests: queue.Queue[rpc_pb2.WatchRequest | None],
                 stop: threading.Event, interval: float, idle_timeout: float):
        self._call = call
        self._requests = requests
        self._stop = stop
        self._interval = interval
        self._idle_timeout = idle_timeout
        self._last = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="etcd-watch-ticker", daemon=True)
        self.fired = False

    def alive(self) -> None:
        self._last = time.monotonic()

    def __enter__(self) -> _Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        tick = min(self._interval, 0.5)
        next_request = time.monotonic() + self._interval
        while not self._done.wait(tick):
            now = time.monotonic()
            if self._stop.is_set() or now - self._last > self._idle_timeout:
                self.fired = not self._stop.is_set()
                self._call.cancel()
                return
            if now >= next_request:
                self._requests.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
                next_request = now + self._interval
