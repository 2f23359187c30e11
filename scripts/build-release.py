#!/usr/bin/env python3
"""Build the krew release: dist/kubectl-etcdbackup_<version>_<os>_<arch>.tar.gz (+ .sha256) and dist/krew.yaml.

Each archive installs without any package index. It holds the launcher `kubectl-etcdbackup`
(scripts/krew-launcher.py with its version and Python versions filled in), LICENSE, README.md,
`requirements.txt` (the entries of requirements/plugin.lock this platform uses, plus the package wheel's
hash) and `wheels/`: the package wheel and every dependency wheel for CPython 3.11-3.14 on that platform,
downloaded with --require-hashes (any index will do: the lock's hashes decide what is accepted).

Archives are reproducible: the package wheel is built from a clean copy of the sources with the locked
build backend and SOURCE_DATE_EPOCH; tar entries sorted, fixed mtime (SOURCE_DATE_EPOCH, default
1980-01-01), uid/gid 0, fixed modes; gzip without name or timestamp. dist/krew.yaml is written when all
platforms are built. Needs `packaging` (to evaluate the lock's markers for other platforms).

usage: scripts/build-release.py [--out DIR] [--platform OS/ARCH ...]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import shutil
import string
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import lock  # scripts/lock.py: the release's targets and lock files

ROOT = Path(__file__).resolve().parent.parent
BIN = "kubectl-etcdbackup"
DEFAULT_EPOCH = 315532800  # 1980-01-01T00:00:00Z
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "kubectl_etcdbackup")


def package_version() -> str:
    text = (ROOT / "kubectl_etcdbackup" / "__init__.py").read_text()
    m = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if not m:
        raise SystemExit("cannot find __version__ in kubectl_etcdbackup/__init__.py")
    return m.group(1)


def archive_name(version: str, os_: str, arch: str) -> str:
    return f"{BIN}_{version}_{os_}_{arch}.tar.gz"


def pip(*args: str | Path, env: dict[str, str] | None = None) -> None:
    """Run this interpreter's pip quietly; SystemExit with its output when it fails."""
    r = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", *map(str, args)],
                       capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"pip {' '.join(map(str, args))}: {r.stderr.strip()}")


def build_wheel(work: Path, mtime: int) -> Path:
    """The package wheel, built from a copy of SOURCES (no caches, no stray files) with build.lock's backend."""
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    pip("install", "--target", work / "backend", "--no-deps", "--only-binary", ":all:", "--require-hashes",
        "-r", ROOT / "requirements" / "build.lock")
    env = os.environ | {"PYTHONPATH": str(work / "backend"), "SOURCE_DATE_EPOCH": str(mtime)}
    pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", work / "wheel", src, env=env)
    (wheel,) = (work / "wheel").glob("*.whl")
    return wheel


def platform_requirements(os_: str, arch: str) -> list[lock.LockEntry]:
    """The plugin lock's entries that some Python version on this platform installs."""
    entries = lock.parse_lock((ROOT / "requirements" / "plugin.lock").read_text())
    targets = [t for t in lock.TARGETS if (t.os, t.arch) == (os_, arch)]
    return [e for e in entries if any(t.wants(e) for t in targets)]


def download_wheels(os_: str, arch: str, dest: Path, work: Path) -> None:
    """Every wheel of the plugin lock for each Python version on this platform, hash-checked, into dest."""
    for target in (t for t in lock.TARGETS if (t.os, t.arch) == (os_, arch)):
        reqs = work / f"{target.os}-{target.arch}-{target.python}.txt"
        entries = [e for e in platform_requirements(os_, arch) if target.wants(e)]
        # Markers dropped: pip would evaluate them against this machine, not the target.
        reqs.write_text("".join(e.text.replace(f" ; {e.marker}", "", 1) if e.marker else e.text for e in entries))
        pip("download", "--no-deps", "--require-hashes", "--dest", dest, *target.pip_options(), "-r", reqs)


def render_launcher(version: str) -> str:
    """scripts/krew-launcher.py with this release's version and Python versions."""
    launcher = (ROOT / "scripts" / "krew-launcher.py").read_text()
    for placeholder in ('"@VERSION@"', '"@PYTHONS@"'):
        if placeholder not in launcher:
            raise SystemExit(f"scripts/krew-launcher.py lacks the {placeholder} placeholder")
    return launcher.replace('"@VERSION@"', f'"{version}"').replace('"@PYTHONS@"', repr(lock.PYTHONS))


def archive_files(version: str, os_: str, arch: str, wheel: Path, work: Path) -> dict[str, tuple[bytes, int]]:
    """Archive member -> (content, mode)."""
    wheels = work / f"wheels-{os_}-{arch}"
    download_wheels(os_, arch, wheels, work)
    wheel_hash = hashlib.sha256(wheel.read_bytes()).hexdigest()
    requirements = "".join(e.text for e in platform_requirements(os_, arch))
    requirements += f"{BIN}[plugin]=={version} \\\n    --hash=sha256:{wheel_hash}\n"
    files = {
        BIN: (render_launcher(version).encode(), 0o755),
        "LICENSE": ((ROOT / "LICENSE").read_bytes(), 0o644),
        "README.md": ((ROOT / "README.md").read_bytes(), 0o644),
        "requirements.txt": (requirements.encode(), 0o644),
        f"wheels/{wheel.name}": (wheel.read_bytes(), 0o644),
    }
    return files | {f"wheels/{w.name}": (w.read_bytes(), 0o644) for w in wheels.glob("*.whl")}


def build_archive(files: dict[str, tuple[bytes, int]], mtime: int) -> bytes:
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
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


def build(version: str, out: Path, mtime: int, platforms: list[tuple[str, str]]) -> dict[str, Path]:
    """Write the archives of `platforms` and their .sha256 into `out`, and krew.yaml if that is all of them."""
    if not re.fullmatch(r"\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?", version):
        raise SystemExit(f"version {version!r} is not semver (X.Y.Z)")
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    sums: dict[tuple[str, str], str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp), mtime)
        for os_, arch in platforms:
            data = build_archive(archive_files(version, os_, arch, wheel, Path(tmp)), mtime)
            name = archive_name(version, os_, arch)
            (out / name).write_bytes(data)
            sums[(os_, arch)] = hashlib.sha256(data).hexdigest()
            (out / f"{name}.sha256").write_text(f"{sums[(os_, arch)]}  {name}\n")
            written[name] = out / name
    if set(platforms) == set(lock.PLATFORMS):
        (out / "krew.yaml").write_text(render_krew(version, sums))
        written["krew.yaml"] = out / "krew.yaml"
    return written


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "dist")
    ap.add_argument("--platform", action="append", choices=[f"{o}/{a}" for o, a in lock.PLATFORMS],
                    help="build only this one (repeatable); default: all, and dist/krew.yaml")
    args = ap.parse_args(argv)
    platforms = [tuple(p.split("/")) for p in args.platform] if args.platform else lock.PLATFORMS
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_EPOCH))
    for name, path in build(package_version(), args.out, mtime, platforms).items():  # type: ignore[arg-type]
        print(f"{path}" if name == "krew.yaml" else f"{path}  {path.stat().st_size} bytes  "
              f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
