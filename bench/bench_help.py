"""How fast `kubectl etcdbackup --help` answers (the goal: <= 0.2 s here), side by side with a bare interpreter
start and `kubectl version --client`, interleaved, best and median of --repeat runs.

    .venv/bin/python bench/bench_help.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = Path(sys.executable).parent / "kubectl-etcdbackup"
KUBECTL = ROOT / ".ci" / "bin" / "kubectl"


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=True)
    return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    variants = {"python -c pass": [sys.executable, "-c", "pass"],
                "kubectl-etcdbackup --help": [str(PLUGIN), "--help"],
                "kubectl-etcdbackup restore --help": [str(PLUGIN), "restore", "--help"]}
    if KUBECTL.exists() or shutil.which("kubectl"):
        variants["kubectl version --client"] = [str(KUBECTL if KUBECTL.exists() else "kubectl"), "version", "--client"]
    times: dict[str, list[float]] = {k: [] for k in variants}
    for argv in variants.values():  # warm-up: page cache, .pyc files
        timed(argv)
    for _ in range(args.repeat):
        for name, argv in variants.items():
            times[name].append(timed(argv))
    base = statistics.median(times["python -c pass"])
    print(f"{'':36} {'best':>8} {'median':>8} {'median - python start':>22}")
    for name, ts in times.items():
        print(f"{name:36} {min(ts):7.3f}s {statistics.median(ts):7.3f}s {statistics.median(ts) - base:21.3f}s")
    median_help = statistics.median(times["kubectl-etcdbackup --help"])
    print(f"\n--help median {median_help:.3f}s: {'PASS' if median_help <= 0.2 else 'MISS'} (goal <= 0.2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
