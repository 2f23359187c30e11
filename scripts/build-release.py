#!/usr/bin/env python3
"""Build the krew release: dist/kubectl-etcdbackup_<version>_<os>_<arch>.tar.gz (+ .sha256) and dist/krew.yaml.

Each archive holds the launcher `kubectl-etcdbackup` (scripts/krew-launcher.py with its version filled in),
LICENSE and README.md. Archives are reproducible: sorted entries, fixed mtime (SOURCE_DATE_EPOCH, default
1980-01-01), uid/gid 0, fixed modes, gzip without name or timestamp.

usage: scripts/build-release.py [--version X.Y.Z] [--out DIR]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import re
import string
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLATFORMS = [("linux", "amd64"), ("linux", "arm64"), ("darwin", "amd64"), ("darwin", "arm64")]
BIN = "kubectl-etcdbackup"
DEFAULT_EPOCH = 315532800  # 1980-01-01T00:00:00Z
FALLBACK_README = """\
# kubectl-etcdbackup

Safe, fast and boring etcd backup and restore for Kubernetes: `kubectl etcdbackup --help`.
Needs python3 >= 3.11; the first run installs the Python package into a private virtualenv.
Home: https://github.com/kubectl-etcdbackup/kubectl-etcdbackup
"""


def package_version() -> str:
    text = (ROOT / "kubectl_etcdbackup" / "__init__.py").read_text()
    m = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if not m:
        raise SystemExit("cannot find __version__ in kubectl_etcdbackup/__init__.py")
    return m.group(1)


def archive_name(version: str, os_: str, arch: str) -> str:
    return f"{BIN}_{version}_{os_}_{arch}.tar.gz"


def archive_files(version: str) -> dict[str, tuple[bytes, int]]:
    """Archive member -> (content, mode)."""
    launcher = (ROOT / "scripts" / "krew-launcher.py").read_text()
    if '"@VERSION@"' not in launcher:
        raise SystemExit("scripts/krew-launcher.py lacks the @VERSION@ placeholder")
    readme = ROOT / "README.md"
    return {
        BIN: (launcher.replace('"@VERSION@"', f'"{version}"').encode(), 0o755),
        "LICENSE": ((ROOT / "LICENSE").read_bytes(), 0o644),
        "README.md": (readme.read_bytes() if readme.exists() else FALLBACK_README.encode(), 0o644),
    }


def build_archive(files: dict[str, tuple[bytes, int]], mtime: int) -> bytes:
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            data, mode = files[name]
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, mtime
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    gz_buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz_buf, mtime=mtime, compresslevel=9) as gz:
        gz.write(tar_buf.getvalue())
    return gz_buf.getvalue()


def render_krew(version: str, sums: dict[tuple[str, str], str]) -> str:
    template = string.Template((ROOT / "krew.yaml").read_text())
    mapping = {"version": version} | {f"sha256_{o}_{a}": s for (o, a), s in sums.items()}
    text = template.substitute(mapping)  # KeyError/ValueError on a placeholder without value
    # Drop the template's own comment header.
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))


def build(version: str, out: Path, mtime: int) -> dict[str, Path]:
    if not re.fullmatch(r"\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?", version):
        raise SystemExit(f"version {version!r} is not semver (X.Y.Z)")
    out.mkdir(parents=True, exist_ok=True)
    data = build_archive(archive_files(version), mtime)
    digest = hashlib.sha256(data).hexdigest()
    written: dict[str, Path] = {}
    sums: dict[tuple[str, str], str] = {}
    for os_, arch in PLATFORMS:  # the launcher is portable: the same bytes for every platform
        name = archive_name(version, os_, arch)
        (out / name).write_bytes(data)
        (out / f"{name}.sha256").write_text(f"{digest}  {name}\n")
        sums[(os_, arch)] = digest
        written[name] = out / name
    (out / "krew.yaml").write_text(render_krew(version, sums))
    written["krew.yaml"] = out / "krew.yaml"
    return written


def main(argv: list[str]) -> int:
    import os

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default=package_version(), help="default: the package's __version__")
    ap.add_argument("--out", type=Path, default=ROOT / "dist")
    args = ap.parse_args(argv)
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_EPOCH))
    for name, path in build(args.version, args.out, mtime).items():
        print(f"{path}" if name == "krew.yaml" else f"{path}  sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
