#!/usr/bin/env python3
"""Write requirements/{plugin,agent,build}.lock: every dependency pinned, with the sha256 of every wheel of
that release on PyPI (as `pip-compile --generate-hashes` does), for `pip install --require-hashes`.

- plugin.lock: kubectl-etcdbackup[plugin] plus pip itself (the krew archive's launcher runs pip from its wheel,
  so it needs no ensurepip); agent.lock: kubectl-etcdbackup[agent] (the image); build.lock: the build backend.
- The pins are resolved by `pip install --dry-run --report` (binary wheels only) for every TARGET: CPython
  3.11-3.14 on linux (glibc >= 2.28) and macOS (>= 11), amd64 and arm64. A pin that not every target
  chose gets an environment marker naming the targets that did (e.g. cryptography dropped Intel macOS
  wheels, so darwin/amd64 keeps an older release). pip evaluates markers against the running interpreter,
  even with --platform: whoever downloads for another target filters with `Target.wants` first.
- The hashes are those of all wheels of each pinned release (PyPI's JSON simple API), so pip on any platform
  (the image's Debian, a user's Mac) finds its file's hash; sdists are left out, nothing is built from source.

usage: scripts/lock.py [--out DIR]   (needs PyPI; run it after changing dependencies in pyproject.toml)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INDEX = "https://pypi.org/simple"
PYTHONS = ("3.11", "3.12", "3.13", "3.14")
GLIBC_MINOR = 28  # manylinux_2_28: RHEL 8, Debian 10, Ubuntu 20.04 and later
MACOS = "11_0"


@dataclass(frozen=True)
class Target:
    """One interpreter the release supports: a krew platform (os, arch) and a CPython version."""

    os: str
    arch: str
    python: str

    def platform_tags(self) -> list[str]:
        """pip --platform values, best first (pip adds older macOS versions and universal2 itself)."""
        machine = self.marker_env()["platform_machine"]
        if self.os == "darwin":
            return [f"macosx_{MACOS}_{machine}"]
        tags = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC_MINOR, 16, -1)]
        return tags + [f"manylinux2014_{machine}"]  # pip adds manylinux2010/manylinux1 for x86_64

    def marker_env(self) -> dict[str, str]:
        """The PEP 508 marker variables that tell this target apart."""
        machine = "x86_64" if self.arch == "amd64" else ("arm64" if self.os == "darwin" else "aarch64")
        return {"sys_platform": self.os, "platform_machine": machine, "python_version": self.python}

    def wants(self, entry: LockEntry) -> bool:
        """Whether pip on this target installs this lock entry."""
        from packaging.markers import Marker  # only the release build needs packaging

        return not entry.marker or Marker(entry.marker).evaluate(self.marker_env())

    def pip_options(self) -> list[str]:
        """pip download/install options that select this target's wheels, and only wheels."""
        cp = "cp" + self.python.replace(".", "")
        options = ["--only-binary", ":all:", "--python-version", self.python, "--implementation", "cp",
                   "--abi", cp, "--abi", "abi3", "--abi", "none"]
        for tag in self.platform_tags():
            options += ["--platform", tag]
        return options


PLATFORMS = [("linux", "amd64"), ("linux", "arm64"), ("darwin", "amd64"), ("darwin", "arm64")]
TARGETS = [Target(os_, arch, py) for os_, arch in PLATFORMS for py in PYTHONS]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_env() -> dict[str, str]:
    """The environment for pip runs that must see PyPI only: no config files, no PIP_* settings but the CA."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    return env | {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def requirements(profile: str) -> list[str]:
    """What a lock holds, from pyproject.toml: the dependencies plus one extra (or the build backend)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    if profile == "build":
        return list(pyproject["build-system"]["requires"])
    project = pyproject["project"]
    extra = list(project["optional-dependencies"][profile])
    return list(project["dependencies"]) + extra + (["pip"] if profile == "plugin" else [])


def resolve(reqs: list[str], target: Target) -> dict[str, str]:
    """canonical name -> version that pip chooses for `reqs` on `target`."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--index-url", INDEX, "--report", str(report), *target.pip_options(), *reqs]
        r = subprocess.run(cmd, capture_output=True, text=True, env=pip_env(), timeout=600)
        if r.returncode != 0:
            raise SystemExit(f"resolving for {target}: {r.stderr.strip()}")
        installs = json.loads(report.read_text())["install"]
    return {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}


def pin_targets(reqs: list[str], targets: list[Target]) -> dict[tuple[str, str], list[Target]]:
    """(canonical name, version) -> the targets on which pip chooses that release."""
    chosen: dict[tuple[str, str], list[Target]] = {}
    for target in targets:
        for pin in resolve(reqs, target).items():
            chosen.setdefault(pin, []).append(target)
    return chosen


def marker(targets: list[Target]) -> str:
    """A PEP 508 marker true on exactly `targets` among TARGETS ("" for all of them)."""
    if set(targets) == set(TARGETS):
        return ""
    clauses = []
    for os_, arch in PLATFORMS:
        pythons = [t.python for t in targets if (t.os, t.arch) == (os_, arch)]
        if not pythons:
            continue
        env = Target(os_, arch, pythons[0]).marker_env()
        clause = f'sys_platform == "{env["sys_platform"]}" and platform_machine == "{env["platform_machine"]}"'
        if len(pythons) < len(PYTHONS):
            clause += " and (" + " or ".join(f'python_version == "{py}"' for py in pythons) + ")"
        clauses.append(f"({clause})")
    return " or ".join(clauses)


def wheel_hashes(name: str, version: str) -> list[str]:
    """sha256 of every wheel of `name==version` on PyPI, sorted."""
    req = urllib.request.Request(f"{INDEX}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        files = json.load(resp)["files"]
    hashes = sorted({f["hashes"]["sha256"] for f in files if f["filename"].endswith(".whl")
                     and canonical(f["filename"].split("-")[0]) == name and f["filename"].split("-")[1] == version})
    if not hashes:
        raise SystemExit(f"no wheel of {name}=={version} on {INDEX}")
    return hashes


def render_lock(reqs: list[str], chosen: dict[tuple[str, str], list[Target]]) -> str:
    lines = [f"# Generated by scripts/lock.py for {', '.join(reqs)}; do not edit.",
             f"# CPython {PYTHONS[0]}-{PYTHONS[-1]} on linux (glibc >= 2.{GLIBC_MINOR}) and macOS >= "
             f"{MACOS.replace('_', '.')}, amd64 and arm64; hashes of every wheel of each release."]
    for (name, version), targets in sorted(chosen.items()):
        hashes = wheel_hashes(name, version)
        when = marker(targets)
        lines.append(f"{name}=={version}" + (f" ; {when}" if when else "") + " \\")
        lines += [f"    --hash=sha256:{h}" + (" \\" if i < len(hashes) - 1 else "") for i, h in enumerate(hashes)]
    return "\n".join(lines) + "\n"


def lock(profile: str) -> str:
    """The text of requirements/<profile>.lock. The build backend is pure Python: one target suffices."""
    reqs = requirements(profile)
    targets = TARGETS[:1] if profile == "build" else TARGETS
    chosen = pin_targets(reqs, targets)
    if profile == "build":  # needed wherever the wheel is built, so no marker
        chosen = {pin: TARGETS for pin in chosen}
    return render_lock(reqs, chosen)


@dataclass(frozen=True)
class LockEntry:
    """One pin of a lock file: `name==version [; marker]` and its hashes, as written by render_lock."""

    name: str
    version: str
    marker: str
    text: str  # the entry's lines, as in the file


def parse_lock(text: str) -> list[LockEntry]:
    """The entries of a lock file as render_lock writes it (comment lines skipped)."""
    body = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))
    entries = []
    for block in re.split(r"\n(?=\S)", body.strip()):
        m = re.match(r"([A-Za-z0-9._-]+)==(\S+?)(?: ; (.+?))? \\\n", block)
        if not m:
            raise ValueError(f"not a lock entry: {block.splitlines()[0]!r}")
        entries.append(LockEntry(m[1], m[2], m[3] or "", block + "\n"))
    return entries


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "requirements")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for profile in ("plugin", "agent", "build"):
        path = args.out / f"{profile}.lock"
        path.write_text(lock(profile))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
