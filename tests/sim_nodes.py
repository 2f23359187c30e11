"""Simulated kubeadm control-plane nodes for running the restore runbook's node scripts for real.

Each node is a directory tree (its root): `etc/kubernetes/manifests/etcd.yaml` (a static pod whose command starts
a real etcd), `etc/kubernetes/pki/etcd` (the test CA's certificates), `var/lib/etcd`. Commands run "on the node" in
a private mount namespace chrooted into that tree (`unshare -rm` + `chroot`; the host's /usr, /dev, /proc and
/etc/alternatives bound in), so the runbook's absolute paths are the node's. Stand-ins on its PATH (/opt/sim/bin):

* `ctr -n k8s.io run ... IMAGE ID CMD...` runs CMD from the real etcd binaries (bound at /opt/etcd-bin) after
  checking that IMAGE is "pulled" and that every path argument lies under one of its --mount destinations
  (mapped to the mount's source); `ctr -n k8s.io images ls -q` lists the node's images.
* `crictl ps -q --name '^NAME$'` lists the simulated kubelet's running containers.

`ssh NODE CMD` (a stand-in on the operator's PATH) runs CMD on the node the same way. `Kubelet` is the kubelet:
it starts etcd (a real process, paths mapped through the pod's hostPath volumes into the node's tree) when
etcd.yaml appears in the manifests dir and stops it (SIGTERM, by PID, bounded) when it goes; other manifests
(kube-apiserver.yaml) only count as running containers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from infra.certs import TLSCerts

SIM_NODE = r'''#!/bin/sh
# sim-node ROOT CMD...: run CMD chrooted into the node tree ROOT, in a private mount namespace
set -eu
root="$1"; shift
exec unshare -rm sh -c '
  set -e; r="$1"; shift
  for d in usr dev proc; do mount --rbind "/$d" "$r/$d"; done
  mount --rbind "$SIM_ETCD_BIN" "$r/opt/etcd-bin"
  [ ! -d /etc/alternatives ] || mount --rbind /etc/alternatives "$r/etc/alternatives"  # awk -> mawk
  exec chroot "$r" /usr/bin/env -i PATH=/opt/sim/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 "$@"
' sh "$root" "$@"
'''

SSH = r'''#!/bin/sh
# ssh NODE CMD: CMD runs on the simulated node NODE
node="$1"; shift
exec sim-node "$SIM_NODES/$node" /bin/sh -c "$*"
'''

CRICTL = r'''#!/bin/sh
# crictl ps -q --name '^NAME$': the simulated kubelet's running containers (/run/sim-kubelet/<name>)
name=""
while [ $# -gt 0 ]; do case "$1" in --name) name="$2"; shift 2 ;; *) shift ;; esac; done
name=$(printf '%s' "$name" | sed 's/^\^//; s/\$$//')
for f in /run/sim-kubelet/*; do
  [ -e "$f" ] || continue
  if [ -z "$name" ] || [ "$(basename "$f")" = "$name" ]; then cat "$f"; fi
done
'''

CTR = r'''#!/bin/sh
# ctr -n k8s.io images ls -q | ctr -n k8s.io run [--rm] [--net-host] [--env K=V]... [--mount SPEC]... IMAGE ID CMD...
set -eu
[ "${1:-}" = "-n" ] && [ "${2:-}" = "k8s.io" ] || { echo "ctr stand-in: expected -n k8s.io" >&2; exit 2; }
shift 2
case "${1:-}" in
  images)
    [ "${2:-}" = "ls" ] && { cat /opt/sim/images; exit 0; }
    echo "ctr stand-in: no registry to pull from" >&2; exit 1 ;;
  run) shift ;;
  *) echo "ctr stand-in: unsupported: $*" >&2; exit 2 ;;
esac
mounts=""
envs=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rm|--net-host) shift ;;
    --env) envs="$envs $2"; shift 2 ;;
    --mount)
      spec="$2"; shift 2
      src=$(printf '%s\n' "$spec" | tr ',' '\n' | sed -n 's/^src=//p')
      dst=$(printf '%s\n' "$spec" | tr ',' '\n' | sed -n 's/^dst=//p')
      [ -e "$src" ] || { echo "ctr: mount source $src does not exist" >&2; exit 1; }
      mounts="$mounts$dst $src
" ;;
    -*) echo "ctr stand-in: unsupported flag $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
image="$1"; shift 2
grep -qxF "$image" /opt/sim/images || { echo "ctr: image $image not present" >&2; exit 1; }
for arg do
  shift
  prefix=""; path="$arg"
  case "$arg" in --*=/*) prefix="${arg%%=*}="; path="${arg#*=}" ;; esac
  case "$path" in
    /*)
      mapped=""
      while read -r dst src; do
        [ -n "$dst" ] || continue
        case "$path" in "$dst"|"$dst"/*) mapped="$src${path#"$dst"}"; break ;; esac
      done <<EOF
$mounts
EOF
      [ -n "$mapped" ] || { echo "ctr: $path is not mounted in the container" >&2; exit 1; }
      arg="$prefix$mapped" ;;
  esac
  set -- "$@" "$arg"
done
exec env $envs PATH=/opt/etcd-bin "$@"
'''


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def operator_bin(directory: Path) -> Path:
    """`ssh` and `sim-node` for the operator's PATH."""
    _script(directory / "ssh", SSH)
    _script(directory / "sim-node", SIM_NODE)
    return directory


def make_node(root: Path, manifests: dict[str, dict[str, Any]], certs: TLSCerts, images: Sequence[str]) -> Path:
    """A node tree: static pod manifests, kubeadm's etcd PKI (copies), the stand-ins, what chroot needs."""
    for d in ("usr", "dev", "proc", "opt/etcd-bin", "etc/alternatives", "run/sim-kubelet", "var/lib", "var/log",
              "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(mode=0o1777, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")):
        if not (root / link).is_symlink():
            (root / link).symlink_to(target)
    pki = root / "etc/kubernetes/pki/etcd"
    pki.mkdir(parents=True, exist_ok=True)
    for name, src in (("ca.crt", certs.ca), ("server.crt", certs.server_cert), ("server.key", certs.server_key),
                      ("peer.crt", certs.server_cert), ("peer.key", certs.server_key)):
        shutil.copyfile(src, pki / name)
        (pki / name).chmod(0o600)
    mdir = root / "etc/kubernetes/manifests"
    mdir.mkdir(parents=True, exist_ok=True)
    for name, pod in manifests.items():
        (mdir / name).write_text(yaml.safe_dump(pod))
    (root / "opt/sim").mkdir(parents=True, exist_ok=True)
    (root / "opt/sim/images").write_text("".join(f"{i}\n" for i in images))
    _script(root / "opt/sim/bin/ctr", CTR)
    _script(root / "opt/sim/bin/crictl", CRICTL)
    return root


def run_on_node(root: Path, argv: Sequence[str], env: dict[str, str], *, stdin: Any = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sim-node", str(root), *argv], env=env, stdin=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)


class Kubelet:
    """The kubelet of every simulated node: static pods from each node's manifests dir (polled)."""

    def __init__(self, roots: dict[str, Path], etcd_binary: Path, interval: float = 0.1) -> None:
        self.roots, self.etcd, self.interval = roots, etcd_binary, interval
        self.procs: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self.started: list[tuple[str, float]] = []  # (node, time) of every etcd start
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Kubelet:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for key in list(self.procs):
            self._kill(key)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for node, root in self.roots.items():
                try:
                    self._sync(node, root)
                except Exception as e:  # noqa: BLE001 - reported by the test
                    self.errors.append(f"{node}: {e!r}")
            self._stop.wait(self.interval)

    def _sync(self, node: str, root: Path) -> None:
        state = root / "run/sim-kubelet"
        wanted = {}
        for f in sorted((root / "etc/kubernetes/manifests").glob("*.yaml")):
            pod = yaml.safe_load(f.read_text())
            c = pod["spec"]["containers"][0]
            wanted[c["name"]] = pod
        for name in [n for (nd, n) in self.procs if nd == node and n not in wanted]:
            self._kill((node, name))
        for name in [p.name for p in state.iterdir() if p.name not in wanted]:
            (state / name).unlink()
        for name, pod in wanted.items():
            key = (node, name)
            proc = self.procs.get(key)
            if name == "etcd" and (proc is None or proc.poll() is not None):
                if proc is not None:
                    self.errors.append(f"{node}: etcd exited with {proc.returncode}")
                self.procs[key] = self._start_etcd(node, root, pod)
            (state / name).write_text(f"{node}-{name}-{pod['metadata'].get('name', name)}\n")

    def _start_etcd(self, node: str, root: Path, pod: dict[str, Any]) -> subprocess.Popen[bytes]:
        c = pod["spec"]["containers"][0]
        host = {v["name"]: v["hostPath"]["path"] for v in pod["spec"].get("volumes", []) if "hostPath" in v}
        mounts = sorted(((m["mountPath"], host[m["name"]]) for m in c.get("volumeMounts", []) if m["name"] in host),
                        key=lambda m: -len(m[0]))

        def mapped(arg: str) -> str:
            flag, eq, value = arg.partition("=")
            for dst, src in mounts:
                if eq and (value == dst or value.startswith(dst.rstrip("/") + "/")):
                    return f"{flag}={root}{src}{value[len(dst):]}"
            return arg

        argv = [str(self.etcd), *(mapped(a) for a in c["command"][1:])]
        if shutil.which("setpriv"):
            argv = ["setpriv", "--pdeathsig", "KILL", *argv]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        with open(root / "var/log/etcd.log", "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        self.started.append((node, time.monotonic()))
        return proc

    def _kill(self, key: tuple[str, str], timeout: float = 15) -> None:
        proc = self.procs.pop(key)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        (self.roots[key[0]] / "run/sim-kubelet" / key[1]).unlink(missing_ok=True)
