"""Free TCP ports on 127.0.0.1, strictly below 32768.

Ports are handed out in aligned chunks of CHUNK consecutive ports. A chunk is reserved across processes with
an ``flock`` on a per-chunk lock file (released automatically when the process exits), so concurrent pytest
runs on the same machine do not race each other; within a chunk every handed-out port is bind-checked.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import socket
import tempfile
import threading
from pathlib import Path

HOST = "127.0.0.1"
LOW = 20000  # inclusive
HIGH = 32000  # exclusive; stays below the ephemeral range (32768..60999 here)
CHUNK = 16

_lock = threading.Lock()
_held: dict[int, int] = {}  # chunk start -> fd of its lock file (kept open while reserved)
_rng = random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "big"))


class NoFreePortsError(RuntimeError):
    pass


def _lock_dir() -> Path:
    d = Path(tempfile.gettempdir()) / f"kubectl-etcdbackup-test-ports-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if a listening socket could bind ``host:port`` right now (no SO_REUSEADDR: strict)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _try_reserve(start: int) -> int | None:
    path = _lock_dir() / f"{start}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def allocate_ports(n: int) -> list[int]:
    """Return ``n`` consecutive free ports in [LOW, HIGH), reserved for the life of this process
    (or until :func:`release_ports`)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    chunks_needed = -(-n // CHUNK)
    starts = list(range(LOW, HIGH - chunks_needed * CHUNK + 1, CHUNK))
    offset = _rng.randrange(len(starts))
    with _lock:
        for k in range(len(starts)):
            first = starts[(offset + k) % len(starts)]
            group = [first + j * CHUNK for j in range(chunks_needed)]
            if any(g in _held for g in group):
                continue
            fds: list[int] = []
            for g in group:
                fd = _try_reserve(g)
                if fd is None:
                    break
                fds.append(fd)
            ports = list(range(first, first + n))
            if len(fds) == len(group) and all(port_is_free(p) for p in ports):
                _held.update(zip(group, fds, strict=True))
                return ports
            for fd in fds:
                os.close(fd)  # closing releases the flock
    raise NoFreePortsError(f"no {n} consecutive free ports in [{LOW}, {HIGH})")


def allocate_port() -> int:
    return allocate_ports(1)[0]


def release_ports(ports: list[int]) -> None:
    """Give back the chunks holding ``ports`` (optional; everything is released at process exit)."""
    with _lock:
        for start in {LOW + (p - LOW) // CHUNK * CHUNK for p in ports}:
            fd = _held.pop(start, None)
            if fd is not None:
                os.close(fd)
