#!/usr/bin/env python3
"""The default backup (verified while streaming) against `etcdctl snapshot save`, and our restore against plain
`etcdutl snapshot restore` of the same db, on a file store and on S3 (moto), side by side in one run.

One run: start a private single-member etcd 3.5 and a moto S3 server on 127.0.0.1 (ports from
tests/infra/ports.py), load data, then `--repeat` interleaved rounds (one warm-up round first) of
  backup:  etcdctl snapshot save (raw) | ours --verify status (default), file | the same, S3 | ours --verify hash
  restore: etcdutl snapshot restore raw.db | the same with --skip-hash-check (info) | ours, file | ours, S3
           | verify --verify status, file
Each run records wall time, CPU (user+sys of the process and its waited-for children, from wait4), the peak of
the summed RSS of the whole process tree (polled from /proc every 20 ms, so etcdutl children count), and for
backups the CPU the etcd server spent. Best and median of the rounds; ratios against the raw tools.

usage: .venv/bin/python bench/bench_verify_restore.py [--keys 100000] [--value-size 2048] [--repeat 3]
       [--json out.json] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_bench as rb  # noqa: E402 - the shared process, etcd and loading helpers

MB, MIB = rb.MB, rb.MIB
BUCKET = "bench"
TARGET_WALL, TARGET_CPU, TARGET_TREE_MIB = 1.1, 1.4, 150.0


class MotoServer:
    """moto_server in its own process group on a port from the tests' allocator; stop() is idempotent."""

    def __init__(self, python: Path, log: Path):
        self.python, self.log_path = python, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 30.0) -> None:
        port = rb.free_ports(1)[0]
        exe = self.python.parent / "moto_server"
        if not exe.is_file():
            raise rb.BenchError("moto_server not found next to this python (pip install 'moto[server]')")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise rb.BenchError(f"moto_server exited; see {self.log_path}")
            try:
                urllib.request.urlopen(self.url + "/", timeout=2).close()  # noqa: S310 - our own server
                return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                pass
            time.sleep(0.2)
        raise rb.BenchError("moto_server did not answer")

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is not None:
            rb.stop_group(p)


def s3_env(work: Path, endpoint: str) -> dict[str, str]:
    """Dummy credentials for moto; no shared config files, no instance metadata."""
    return {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(work / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(work / "aws-credentials"), "ETCDBACKUP_S3_ENDPOINT_URL": endpoint}


def make_bucket(env: dict[str, str]) -> None:
    import boto3

    boto3.session.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).client(
        "s3", endpoint_url=env["ETCDBACKUP_S3_ENDPOINT_URL"], region_name="us-east-1").create_bucket(Bucket=BUCKET)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def bench(args: argparse.Namespace, tools: rb.Tools, work: Path, server: rb.EtcdServer, moto: MotoServer,
          ) -> dict[str, Any]:
    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    key = work / "backup.key"
    key.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    key.chmod(0o600)
    res: dict[str, Any] = {"keys": args.keys, "value_size": args.value_size, "repeat": args.repeat,
                           "loadavg_start": os.getloadavg()}
    say(f"starting etcd and moto in {work}")
    server.start()
    moto.start()
    env = dict(os.environ, ETCDCTL_API="3", ETCDBACKUP_ETCDUTL=str(tools.etcdutl), **s3_env(work, moto.url))
    make_bucket(env)
    say(f"loading {args.keys} keys x {args.value_size} B")
    res["load_seconds"] = rb.load_keys(server, 0, args.keys, args.value_size, args.load_procs)
    st = server.status()
    res["db_size_bytes"] = int(st["dbSize"])
    say(f"etcd db {res['db_size_bytes'] / MB:.1f} MB")

    series: dict[str, dict[str, list[float]]] = {}

    def record(name: str, r: rb.Run, etcd_cpu: float | None = None) -> rb.Run:
        s = series.setdefault(name, {"wall": [], "cpu": [], "tree_mib": [], "own_hwm_mib": [], "etcd_cpu": []})
        s["wall"].append(r.seconds)
        s["cpu"].append(r.cpu_s)
        s["tree_mib"].append(r.tree_kib / 1024)
        s["own_hwm_mib"].append(r.hwm_kib / 1024)
        if etcd_cpu is not None:
            s["etcd_cpu"].append(etcd_cpu)
        return r

    def with_etcd_cpu(fn: Callable[[], rb.Run]) -> tuple[rb.Run, float]:
        c0 = server.cpu_seconds()
        r = fn()
        return r, server.cpu_seconds() - c0

    raw = work / "raw.db"
    file_store = work / "store"
    ours = [str(tools.ours)]

    def backup(store: str, verify: str) -> rb.Run:
        r = rb.run([*ours, "agent", "backup", "--endpoints", server.endpoint, "--store", store, "--key-file", key,
                    "--verify", verify, "--no-progress", "--work-dir", work], timeout=args.timeout, env=env)
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1]
        out = json.loads(line)
        ids[store] = out["id"]
        return r

    def restore(store: str, data_dir: Path) -> rb.Run:
        shutil.rmtree(data_dir, ignore_errors=True)
        r = rb.run([*ours, "restore", ids[store], "--store", store, "--key-file", key, *rb.restore_args(data_dir),
                    "--bump-revision", "0", "--no-progress"], timeout=args.timeout, env=env)
        rb._check_restored(data_dir)
        shutil.rmtree(data_dir)
        return r

    def plain(data_dir: Path, *extra: str) -> rb.Run:
        shutil.rmtree(data_dir, ignore_errors=True)
        r = rb.run([tools.etcdutl, "snapshot", "restore", raw, *rb.restore_args(data_dir), *extra],
                   timeout=args.timeout, env=env)
        rb._check_restored(data_dir)
        shutil.rmtree(data_dir)
        return r

    ids: dict[str, str] = {}
    d = work / "restored"
    s3 = f"s3://{BUCKET}/backups"
    fs = f"file://{file_store}"
    for i in range(args.repeat + 1):
        warm = i == 0
        tag = "warm-up" if warm else f"round {i}/{args.repeat}"
        # interleaved, so that drift on a shared machine hits every variant alike
        say(f"{tag}: backups")
        for name, fn in (
                ("raw: etcdctl snapshot save", lambda: rb.raw_save(Ctx(tools, server, env, args.timeout), raw)),
                ("ours: backup, default verify (status), file", lambda: backup(fs, "status")),
                ("ours: backup, default verify (status), S3", lambda: backup(s3, "status")),
                ("ours: backup --verify hash, file", lambda: backup(fs, "hash"))):
            r, cpu = with_etcd_cpu(fn)
            if not warm:
                record(name, r, cpu)
        say(f"{tag}: restores")
        for name, fn in (
                ("plain: etcdutl snapshot restore", lambda: plain(d)),
                ("plain: etcdutl snapshot restore --skip-hash-check", lambda: plain(d, "--skip-hash-check")),
                ("ours: restore, file", lambda: restore(fs, d)),
                ("ours: restore, S3", lambda: restore(s3, d)),
                ("ours: verify (status level), file", lambda: rb.run(
                    [*ours, "verify", ids[fs], "--store", fs, "--key-file", key,
                     "--no-progress"], timeout=args.timeout, env=env))):
            r = fn()
            if not warm:
                record(name, r)
    res["raw_snapshot_bytes"] = raw.stat().st_size
    res["series"] = series
    res["loadavg_end"] = os.getloadavg()
    return res


class Ctx:
    """What run_bench.raw_save needs of its context."""

    def __init__(self, tools: rb.Tools, server: rb.EtcdServer, env: dict[str, str], timeout: float):
        self.tools, self.server, self.env, self.timeout = tools, server, env, timeout


def summarize(res: dict[str, Any]) -> None:
    s = res["series"]
    rows = {}
    for name, v in s.items():
        rows[name] = {"best": min(v["wall"]), "median": median(v["wall"]), "cpu_best": min(v["cpu"]),
                      "cpu_median": median(v["cpu"]), "tree_mib": max(v["tree_mib"]),
                      "own_hwm_mib": max(v["own_hwm_mib"]),
                      "etcd_cpu_median": median(v["etcd_cpu"]) if v["etcd_cpu"] else None}
    res["rows"] = rows
    raw, plain = rows["raw: etcdctl snapshot save"], rows["plain: etcdutl snapshot restore"]

    def ratio(name: str, of: str, to: dict[str, Any], target: float | None = None, cpu: bool = False,
              ) -> dict[str, Any]:
        a = rows[of]
        k_best, k_med = ("cpu_best", "cpu_median") if cpu else ("best", "median")
        best, med = a[k_best] / to[k_best], a[k_med] / to[k_med]
        out: dict[str, Any] = {"name": name, "best": best, "median": med}
        if target is not None:
            out |= {"target": f"<= {target:g}x", "verdict": "PASS" if best <= target else "MISS",
                    "median_verdict": "PASS" if med <= target else "MISS"}
        return out

    res["ratios"] = [
        ratio("default backup wall / etcdctl save (file)", "ours: backup, default verify (status), file", raw,
              TARGET_WALL),
        ratio("default backup CPU / etcdctl save CPU (file)", "ours: backup, default verify (status), file", raw,
              TARGET_CPU, cpu=True),
        ratio("default backup wall / etcdctl save (S3)", "ours: backup, default verify (status), S3", raw),
        ratio("default backup CPU / etcdctl save CPU (S3)", "ours: backup, default verify (status), S3", raw,
              cpu=True),
        ratio("--verify hash backup wall / etcdctl save", "ours: backup --verify hash, file", raw),
        ratio("restore wall / etcdutl restore (file)", "ours: restore, file", plain),
        ratio("restore wall / etcdutl restore (S3)", "ours: restore, S3", plain),
        ratio("etcdutl --skip-hash-check / etcdutl restore", "plain: etcdutl snapshot restore --skip-hash-check",
              plain),
    ]


def print_report(res: dict[str, Any]) -> None:
    print()
    print(f"data: {res['keys']} keys x {res['value_size']} B; etcd db {res['db_size_bytes'] / MB:.1f} MB, snapshot "
          f"{res['raw_snapshot_bytes'] / MB:.1f} MB; {res['repeat']} interleaved rounds after a warm-up; 1-min load "
          f"avg {res['loadavg_start'][0]:.2f} at start, {res['loadavg_end'][0]:.2f} at end")
    print()
    print(f"{'measurement':52s} {'best s':>7s} {'median s':>8s} {'CPU best':>8s} {'CPU med':>7s} {'etcd CPU':>8s} "
          f"{'tree MiB':>8s} {'own MiB':>7s}")
    for name, r in res["rows"].items():
        etcd = f"{r['etcd_cpu_median']:8.2f}" if r["etcd_cpu_median"] is not None else f"{'':8s}"
        print(f"{name:52s} {r['best']:7.2f} {r['median']:8.2f} {r['cpu_best']:8.2f} {r['cpu_median']:7.2f} {etcd} "
              f"{r['tree_mib']:8.1f} {r['own_hwm_mib']:7.1f}")
    print("(CPU: user+sys of the client process and its children; tree: peak of the summed RSS of the process and "
          "its children; own: peak RSS of the process itself; both max over rounds)")
    print()
    print("ratios (best-of; median in brackets):")
    for r in res["ratios"]:
        tail = f"target {r['target']}: {r['verdict']} [{r['median_verdict']}]" if "target" in r else "(info)"
        print(f"  {r['name']:52s} {r['best']:5.2f}x [{r['median']:5.2f}x]  {tail}")
    for label, rows in (("backups", [k for k in res["rows"] if k.startswith("ours: backup")]),
                        ("restores/verify", [k for k in res["rows"] if k.startswith("ours") and "backup" not in k])):
        tree = max(res["rows"][k]["tree_mib"] for k in rows)
        own = max(res["rows"][k]["own_hwm_mib"] for k in rows)
        print(f"  {'peak RSS of our ' + label + ': tree / own':52s} {tree:5.1f} / {own:5.1f} MiB  target <= "
              f"{TARGET_TREE_MIB:g} MiB: tree {'PASS' if tree <= TARGET_TREE_MIB else 'MISS'}, own "
              f"{'PASS' if own <= TARGET_TREE_MIB else 'MISS'}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=100_000, help="keys to load (default 100000: a ~410 MB db)")
    ap.add_argument("--value-size", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--load-procs", type=int, default=2)
    ap.add_argument("--workdir", help="parent of the temporary directory (needs ~4x the db size)")
    ap.add_argument("--timeout", type=float, default=900.0, help="per command")
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, rb._on_signal)
    tools = rb.find_tools()
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="etcdbackup-bench-vr-", dir=args.workdir))
    server = rb.EtcdServer(tools, work / "etcd-data", 8 << 30)
    moto = MotoServer(tools.python, work / "moto.log")
    try:
        res = bench(args, tools, work, server, moto)
    finally:
        server.stop()
        moto.stop()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    summarize(res)
    print_report(res)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except rb.BenchError as e:
        print(f"bench failed: {e}", file=sys.stderr)
        sys.exit(1)
