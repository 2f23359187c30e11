"""Release artifacts: the krew archive and manifest (scripts/build-release.py, krew.yaml), the launcher,
LICENSE, and the agent image's Dockerfile (parsed: there is no container engine here)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from kubectl_etcdbackup import __version__

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "scripts" / "build-release.py"
PLATFORMS = {("linux", "amd64"), ("linux", "arm64"), ("darwin", "amd64"), ("darwin", "arm64")}


def build(out: Path, *args: str, epoch: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    if epoch:
        env["SOURCE_DATE_EPOCH"] = epoch
    r = subprocess.run([sys.executable, str(BUILD), "--out", str(out), *args], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build(out)
    return out


def test_archives_are_deterministic_and_complete(dist: Path, tmp_path: Path) -> None:
    names = sorted(p.name for p in dist.glob("*.tar.gz"))
    assert names == sorted(f"kubectl-etcdbackup_{__version__}_{o}_{a}.tar.gz" for o, a in PLATFORMS)
    build(tmp_path)  # a second build: byte-identical
    for name in names:
        assert (dist / name).read_bytes() == (tmp_path / name).read_bytes()
    data = (dist / names[0]).read_bytes()
    assert int.from_bytes(data[4:8], "little") == 315532800 and not data[3] & 0x08  # gzip: fixed mtime, no name
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["LICENSE", "README.md", "kubectl-etcdbackup"]
        for mem in members:
            assert mem.isfile() and mem.uid == 0 and mem.gid == 0 and mem.mtime == 315532800
            assert mem.mode == (0o755 if mem.name == "kubectl-etcdbackup" else 0o644)
        launcher = tar.extractfile("kubectl-etcdbackup").read().decode()  # type: ignore[union-attr]
        license_text = tar.extractfile("LICENSE").read().decode()  # type: ignore[union-attr]
    assert launcher.startswith("#!/usr/bin/env python3\n")
    assert f'VERSION = "{__version__}"' in launcher and "@VERSION@" not in launcher
    compile(launcher, "kubectl-etcdbackup", "exec")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert license_text == (ROOT / "LICENSE").read_text()


def test_source_date_epoch_sets_mtime(tmp_path: Path) -> None:
    build(tmp_path, epoch="1700000000")
    with tarfile.open(next(tmp_path.glob("*linux_amd64.tar.gz"))) as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}


def test_krew_manifest(dist: Path) -> None:
    doc = yaml.safe_load((dist / "krew.yaml").read_text())
    assert doc["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert doc["kind"] == "Plugin" and doc["metadata"] == {"name": "etcdbackup"}
    spec = doc["spec"]
    assert spec["version"] == f"v{__version__}"
    assert spec["homepage"].startswith("https://")
    assert 0 < len(spec["shortDescription"]) <= 50
    assert "python3" in spec["description"] and "pipx install kubectl-etcdbackup" in spec["description"]
    seen = set()
    for p in spec["platforms"]:
        labels = p["selector"]["matchLabels"]
        os_, arch = labels["os"], labels["arch"]
        seen.add((os_, arch))
        archive = f"kubectl-etcdbackup_{__version__}_{os_}_{arch}.tar.gz"
        assert p["uri"].startswith("https://") and p["uri"].endswith(f"/v{__version__}/{archive}")
        assert re.fullmatch(r"[0-9a-f]{64}", p["sha256"])
        assert p["sha256"] == hashlib.sha256((dist / archive).read_bytes()).hexdigest()
        assert (dist / f"{archive}.sha256").read_text() == f"{p['sha256']}  {archive}\n"
        assert p["bin"] == "kubectl-etcdbackup"
        with tarfile.open(dist / archive) as tar:
            assert p["bin"] in tar.getnames()
    assert seen == PLATFORMS


def test_build_rejects_a_non_semver_version(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(BUILD), "--out", str(tmp_path), "--version", "v1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "semver" in r.stderr


def test_launcher_runs_the_installed_venv(dist: Path, tmp_path: Path) -> None:
    """With a ready venv the launcher just execs its kubectl-etcdbackup with the same arguments."""
    with tarfile.open(next(dist.glob("*linux_amd64.tar.gz"))) as tar:
        tar.extract("kubectl-etcdbackup", tmp_path, filter="data")
    launcher = tmp_path / "kubectl-etcdbackup"
    home = tmp_path / "home"
    venv_bin = home / __version__ / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    fake = venv_bin / "kubectl-etcdbackup"
    fake.write_text(f"#!{sys.executable}\nimport sys\nprint('fake', sys.argv[1:])\n")
    fake.chmod(0o755)
    (venv_bin.parent / ".installed").write_text("x\n")
    env = os.environ | {"KUBECTL_ETCDBACKUP_HOME": str(home)}
    r = subprocess.run([sys.executable, str(launcher), "list", "--store", "s3://b/p"], capture_output=True, text=True,
                       env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "fake ['list', '--store', 's3://b/p']"


def test_launcher_reports_a_failed_install(dist: Path, tmp_path: Path) -> None:
    with tarfile.open(next(dist.glob("*linux_amd64.tar.gz"))) as tar:
        tar.extract("kubectl-etcdbackup", tmp_path, filter="data")
    env = os.environ | {"KUBECTL_ETCDBACKUP_HOME": str(tmp_path / "home"), "KUBECTL_ETCDBACKUP_PYTHON": "/nonexistent"}
    r = subprocess.run([sys.executable, str(tmp_path / "kubectl-etcdbackup"), "version"], capture_output=True,
                       text=True, env=env, timeout=30)
    assert r.returncode == 1
    assert "installation failed" in r.stderr and "pipx install kubectl-etcdbackup" in r.stderr
    assert not (tmp_path / "home" / __version__ / "venv").exists()


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


def test_dockerfile_is_multi_stage_with_a_minimal_runtime() -> None:
    _, stages = dockerfile_stages()
    (etcd_image, etcd_alias, etcd_steps), (build_image, build_alias, build_steps), (final_image, _, final) = stages
    assert re.fullmatch(r"(registry\.k8s\.io/etcd:3\.5\.\d+-0|gcr\.io/etcd-development/etcd:v3\.5\.\d+)", etcd_image)
    assert etcd_steps == []  # only a source of binaries
    assert build_image == "python:3.12-slim"
    assert any(i == "RUN" and "pip wheel" in r for i, r in build_steps)
    assert final_image == "python:3.12-slim"
    instrs = [i for i, _ in final]
    assert "RUN" not in instrs  # nothing executes in the runtime stage, so nothing there needs a shell
    copies = [r for i, r in final if i == "COPY"]
    etcd_copy = next(r for r in copies if f"--from={etcd_alias}" in r)
    assert "/usr/local/bin/etcdctl" in etcd_copy and "/usr/local/bin/etcdutl" in etcd_copy
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
