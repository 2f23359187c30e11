"""A small TCP proxy on 127.0.0.1 for fault tests: pass bytes through, throttle them, or stall.

Typical use::

    with TcpProxy(cluster.endpoints[0], stall_after=64 << 10) as proxy:   # https://127.0.0.1:<port>
        ... connect to proxy.url ...
        assert proxy.stalled.is_set()

Modes (per connection, on the server -> client direction, which carries the snapshot):

- pass (default): forward everything;
- ``rate=N``: throttle to about N bytes/s (the stream keeps moving, in chunks of at most N/10 bytes);
- ``stall_after=N``: forward N bytes, then forward nothing in either direction while keeping both
  connections open (a hung member or middlebox), until the proxy stops.

Every thread is a daemon that waits with a timeout and ends once ``stop()`` is called; ``stop()`` closes
every socket and joins the threads (bounded).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Self
from urllib.parse import urlparse

from .ports import HOST, allocate_port, release_ports

_TICK = 0.1  # seconds: how often blocked threads look at the stop flag
_CHUNK = 64 << 10


class TcpProxy:
    def __init__(self, upstream: str, *, rate: int | None = None, stall_after: int | None = None) -> None:
        """``upstream``: ``host:port`` or a URL (``https://127.0.0.1:2379``)."""
        u = urlparse(upstream if "://" in upstream else f"//{upstream}")
        if not u.hostname or not u.port:
            raise ValueError(f"upstream needs host and port: {upstream!r}")
        self.scheme = u.scheme or "http"
        self.upstream = (u.hostname, u.port)
        self.rate = rate
        self.stall_after = stall_after
        self.port = allocate_port()
        self.stalled = threading.Event()  # set once a connection has stalled
        self.connections = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.port}"

    def start(self) -> Self:
        self._listener = socket.create_server((HOST, self.port))
        self._listener.settimeout(_TICK)
        self._spawn(self._accept_loop, "accept")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        if self._listener is not None:
            self._listener.close()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.close()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        release_ports([self.port])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        t = threading.Thread(target=target, args=args, name=f"tcp-proxy-{self.port}-{name}", daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.append(s)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            self._track(client)
            try:
                server = socket.create_connection(self.upstream, timeout=5.0)
            except OSError:
                client.close()
                continue
            self._track(server)
            self.connections += 1
            n = self.connections
            held = threading.Event()  # this connection has stalled
            self._spawn(self._pump, f"{n}-up", client, server, False, held)
            self._spawn(self._pump, f"{n}-down", server, client, True, held)

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool, held: threading.Event) -> None:
        """Copy src -> dst until EOF, an error or stop(); the downstream pump applies rate and stall."""
        sent = 0
        chunk = max(1, min(_CHUNK, self.rate // 10)) if downstream and self.rate else _CHUNK
        try:
            while not self._stop.is_set():
                if held.is_set():
                    self._stop.wait(_TICK)  # forward nothing either way, keep the sockets open
                    continue
                if not select.select([src], [], [], _TICK)[0]:
                    continue
                limit = chunk
                if downstream and self.stall_after is not None:
                    limit = min(limit, self.stall_after - sent)
                data = src.recv(limit)
                if not data:
                    break
                dst.sendall(data)
                sent += len(data)
                if downstream and self.stall_after is not None and sent >= self.stall_after:
                    held.set()
                    self.stalled.set()
                if downstream and self.rate:
                    self._stop.wait(len(data) / self.rate)
        except OSError:
            pass
        finally:
            if not held.is_set():  # pass the close on (a held connection is closed by stop())
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
