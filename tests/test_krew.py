"""Release artifacts: the lock files (scripts/lock.py), the krew archive and manifest (scripts/build-release.py,
krew.yaml), the launcher, LICENSE, and the agent image's Dockerfile (parsed: there is no container engine here).
Building real archives downloads wheels: tests/test_release_install.py (slow) does that."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from kubectl_etcdbackup import __version__

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
PLATFORMS = {("linux", "amd64"), ("linux", "arm64"), ("darwin", "amd64"), ("darwin", "arm64")}
PYVER = "{}.{}".format(*sys.version_info[:2])


def load(name: str, file: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def release() -> ModuleType:
    load("lock", "lock.py")  # build-release imports it by this name
    return load("build_release", "build-release.py")


def test_archives_are_deterministic(release: ModuleType) -> None:
    files = {"kubectl-etcdbackup": (b"#!/usr/bin/env python3\n", 0o755), "wheels/" + "x" * 120 + ".whl": (b"w", 0o644)}
    data = release.build_archive(files, 315532800)
    assert data == release.build_archive(dict(reversed(files.items())), 315532800)
    assert int.from_bytes(data[4:8], "little") == 315532800 and not data[3] & 0x08  # gzip: fixed mtime, no name
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for mem in tar.getmembers():
            assert mem.isfile() and mem.uid == 0 and mem.gid == 0 and mem.mtime == 315532800
            assert mem.mode == files[mem.name][1]  # long wheel names too (pax)


def test_krew_manifest(release: ModuleType) -> None:
    sums = {p: hashlib.sha256(repr(p).encode()).hexdigest() for p in PLATFORMS}
    doc = yaml.safe_load(release.render_krew(__version__, sums))
    assert doc["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert doc["kind"] == "Plugin" and doc["metadata"] == {"name": "etcdbackup"}
    spec = doc["spec"]
    assert spec["version"] == f"v{__version__}"
    assert spec["homepage"].startswith("https://")
    assert 0 < len(spec["shortDescription"]) <= 50
    text = spec["description"] + spec["caveats"]
    assert "python3" in text and "PyPI" not in text and "no package index" in text
    seen = set()
    for p in spec["platforms"]:
        labels = p["selector"]["matchLabels"]
        os_, arch = labels["os"], labels["arch"]
        seen.add((os_, arch))
        archive = release.archive_name(__version__, os_, arch)
        assert p["uri"].startswith("https://") and p["uri"].endswith(f"/v{__version__}/{archive}")
        assert p["sha256"] == sums[(os_, arch)] and p["bin"] == "kubectl-etcdbackup"
    assert seen == PLATFORMS


def test_build_rejects_a_non_semver_version(release: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="semver"):
        release.build("v1", tmp_path, 0, [("linux", "amd64")])


# --- lock files ---------------------------------------------------------------------------------------------

def lock_entries(profile: str) -> list:
    lock = load("lock", "lock.py")
    return lock.parse_lock((ROOT / "requirements" / f"{profile}.lock").read_text())


@pytest.mark.parametrize("profile", ["plugin", "agent"])
def test_locks_pin_every_dependency_once_per_target_with_hashes(profile: str) -> None:
    lock = load("lock", "lock.py")
    entries = lock_entries(profile)
    for e in entries:
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", e.text), e.name
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = pyproject["dependencies"] + pyproject["optional-dependencies"][profile]
    for target in lock.TARGETS:
        names = [e.name for e in entries if target.wants(e)]
        assert len(names) == len(set(names)), target  # one release of each on every target
        for req in wanted:
            assert lock.canonical(re.split(r"[<>=!~ \[;]", req)[0]) in names, (target, req)
    names = {e.name for e in entries}
    assert ("kubernetes" in names, "prometheus-client" in names) == ((True, False) if profile == "plugin"
                                                                      else (False, True))
    assert ("pip" in names) == (profile == "plugin")  # the launcher runs pip from its wheel


def test_lock_markers_name_exactly_their_targets() -> None:
    lock = load("lock", "lock.py")
    assert lock.marker(lock.TARGETS) == ""
    some = [t for t in lock.TARGETS if t.os == "darwin" and t.arch == "amd64"] + lock.TARGETS[:1]
    entry = lock.LockEntry("x", "1", lock.marker(some), "")
    assert [t for t in lock.TARGETS if t.wants(entry)] == sorted(some, key=lock.TARGETS.index)


# --- launcher -----------------------------------------------------------------------------------------------

@pytest.fixture
def launcher(release: ModuleType, tmp_path: Path) -> Path:
    path = tmp_path / "plugin" / "kubectl-etcdbackup"
    path.parent.mkdir()
    text = release.render_launcher(__version__)
    assert text.startswith("#!/usr/bin/env python3\n") and "@VERSION@" not in text and "@PYTHONS@" not in text
    path.write_text(text)
    return path


def run_launcher(launcher: Path, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "KUBECTL_ETCDBACKUP_HOME": str(home)} | env
    return subprocess.run([sys.executable, str(launcher), *args], capture_output=True, text=True, env=env,
                          timeout=30)


def test_launcher_runs_the_installed_venv(launcher: Path, tmp_path: Path) -> None:
    """With a ready venv the launcher just execs its kubectl-etcdbackup with the same arguments."""
    venv_bin = tmp_path / "home" / __version__ / f"py{PYVER}" / "bin"
    venv_bin.mkdir(parents=True)
    fake = venv_bin / "kubectl-etcdbackup"
    fake.write_text(f"#!{sys.executable}\nimport sys\nprint('fake', sys.argv[1:])\n")
    fake.chmod(0o755)
    (venv_bin.parent / ".installed").write_text("x\n")
    r = run_launcher(launcher, tmp_path / "home", "list", "--store", "s3://b/p")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "fake ['list', '--store', 's3://b/p']"


def test_launcher_reports_an_incomplete_archive(launcher: Path, tmp_path: Path) -> None:
    r = run_launcher(launcher, tmp_path / "home", "version")
    assert r.returncode == 1 and "incomplete (no pip wheel in wheels/)" in r.stderr
    assert not (tmp_path / "home" / __version__ / f"py{PYVER}").exists()


def test_launcher_refuses_a_python_it_has_no_wheels_for(launcher: Path, tmp_path: Path) -> None:
    r = run_launcher(launcher, tmp_path / "home", "version", KUBECTL_ETCDBACKUP_PYTHON="/nonexistent")
    assert r.returncode == 1 and "KUBECTL_ETCDBACKUP_PYTHON=/nonexistent does not run" in r.stderr
    old = tmp_path / "python3"
    old.write_text("#!/bin/sh\necho 3.10\n")
    old.chmod(0o755)
    r = run_launcher(launcher, tmp_path / "home", "version", KUBECTL_ETCDBACKUP_PYTHON=str(old))
    assert r.returncode == 1 and "is Python 3.10; this release needs one of 3.11, 3.12, 3.13, 3.14" in r.stderr


# --- Dockerfile --------------------------------------------------------------------------------------------

def dockerfile_stages() -> tuple[dict[str, str], list[tuple[str, str, list[tuple[str, str]]]]]:
    """(global ARG defaults, [(image, alias, [(instruction, rest)])]) with line continuations joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    args: dict[str, str] = {}
    stages: list[tuple[str, str, list[tuple[str, str]]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif instr == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda mt: args[mt.group(1)], parts[0])
            alias = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
            stages.append((image, alias, []))
        else:
            stages[-1][2].append((instr, rest))
    return args, stages


DIGEST = r"@sha256:[0-9a-f]{64}"


def test_dockerfile_is_multi_stage_with_a_minimal_runtime() -> None:
    _, stages = dockerfile_stages()
    (etcd_image, etcd_alias, etcd_steps), (build_image, build_alias, build_steps), (final_image, _, final) = stages
    assert re.fullmatch(r"registry\.k8s\.io/etcd:3\.5\.21-0" + DIGEST, etcd_image)  # kubeadm 1.33's etcd
    assert etcd_steps == []  # only a source of binaries
    # Debian 12's python3 builds the venv that distroless python3-debian12 (the same interpreter) runs.
    assert re.fullmatch(r"debian:12-slim" + DIGEST, build_image)
    assert re.fullmatch(r"gcr\.io/distroless/python3-debian12:nonroot" + DIGEST, final_image)
    runs = " ".join(r for i, r in build_steps if i == "RUN")
    for lock in ("requirements/build.lock", "requirements/agent.lock"):
        assert re.search(rf"install --only-binary :all: --require-hashes\s+-r {lock}", runs), lock
    assert "--without-pip /opt/etcdbackup" in runs and "--no-index --no-deps /wheels/" in runs
    instrs = [i for i, _ in final]
    assert "RUN" not in instrs  # nothing executes in the runtime stage, so nothing there needs a shell
    copies = [r for i, r in final if i == "COPY"]
    etcd_copy = next(r for r in copies if f"--from={etcd_alias}" in r)
    assert "/usr/local/bin/etcdctl" in etcd_copy and "/usr/local/bin/etcdutl" in etcd_copy
    assert "/usr/local/bin/etcd " in etcd_copy  # `agent drill` and point-in-time replay start a throwaway etcd
    assert any(f"--from={build_alias}" in r for r in copies)
    user = [r for i, r in final if i == "USER"]
    assert user and user[-1].split(":")[0] == "65532"
    (entrypoint,) = [r for i, r in final if i == "ENTRYPOINT"]
    assert entrypoint == '["kubectl-etcdbackup"]'  # exec form: no /bin/sh -c
    for i, r in final:
        if i in ("CMD", "ENTRYPOINT"):
            assert r.startswith("["), f"{i} must use the exec form"
    env = " ".join(r for i, r in final if i == "ENV")
    assert "PATH=/opt/etcdbackup/bin:" in env  # the venv's kubectl-etcdbackup is what the pods' command finds


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines and "!kubectl_etcdbackup/" in lines and "!pyproject.toml" in lines and "!README.md" in lines
    assert "!requirements/agent.lock" in lines and "!requirements/build.lock" in lines


def test_bump_image_digests_rewrites_only_the_named_digests(tmp_path: Path) -> None:
    bump = load("bump_image_digests", "bump-image-digests.py")
    text = (ROOT / "Dockerfile").read_text()
    images = bump.pinned_images(text)
    assert len(images) == 3 and images[1] == "debian:12-slim"
    new = bump.rewrite(text, {"debian:12-slim": "sha256:" + "ab" * 32})
    changed = [(a, b) for a, b in zip(text.splitlines(), new.splitlines(), strict=True) if a != b]
    assert changed == [(changed[0][0], "ARG BUILD_IMAGE=debian:12-slim@sha256:" + "ab" * 32)]
    with pytest.raises(ValueError, match="not a pinned image"):
        bump.rewrite(text, {"debian:13-slim": "sha256:" + "ab" * 32})
    with pytest.raises(ValueError, match="not sha256"):
        bump.rewrite(text, {"debian:12-slim": "sha256:xyz"})
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(text)
    r = subprocess.run([sys.executable, str(SCRIPTS / "bump-image-digests.py"), "--dockerfile", str(dockerfile),
                        f"gcr.io/distroless/python3-debian12:nonroot=sha256:{'cd' * 32}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert f"python3-debian12:nonroot@sha256:{'cd' * 32}\n" in dockerfile.read_text()
