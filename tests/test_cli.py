"""kubectl conventions through the real console script (and the real kubectl): -h, --version, one-line usage
errors with exit 2, the exit-code table, --traceback, completion (shell scripts and kubectl's plugin completion),
the encryption key flag's new name with the old one as a hidden alias, lazy imports."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import run_cli, run_cli_subprocess, write_key
from k8s_helpers import KUBECTL

BIN = Path(sys.executable).parent


def plugin_path(tmp_path: Path) -> str:
    """A PATH with kubectl-etcdbackup and kubectl's plugin completion helper for it."""
    helper = tmp_path / "bin" / "kubectl_complete-etcdbackup"
    helper.parent.mkdir()
    helper.write_text('#!/bin/sh\nexec kubectl-etcdbackup __complete "$@"\n')
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    return f"{helper.parent}:{BIN}:/usr/bin:/bin"


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_flags(flag: str) -> None:
    r = run_cli_subprocess(flag)
    assert r.rc == 0 and "Usage: kubectl etcdbackup" in r.out and "Exit codes: 0 ok, 1 failed, 2 usage" in r.out
    sub = run_cli_subprocess("restore", flag)
    assert sub.rc == 0 and "Usage: kubectl etcdbackup restore" in sub.out and "--plan" in sub.out


def test_help_through_real_kubectl(tmp_path: Path) -> None:
    env = {"PATH": plugin_path(tmp_path), "HOME": str(tmp_path)}
    p = subprocess.run([str(KUBECTL), "etcdbackup", "-h"], capture_output=True, text=True, env=env, timeout=60,
                       check=False)
    assert p.returncode == 0 and "Usage: kubectl etcdbackup" in p.stdout, p.stderr
    plugins = subprocess.run([str(KUBECTL), "plugin", "list"], capture_output=True, text=True, env=env, timeout=60,
                             check=False)
    assert "kubectl-etcdbackup" in plugins.stdout


def test_version() -> None:
    from kubectl_etcdbackup import __version__

    assert run_cli_subprocess("--version").out.strip() == f"kubectl-etcdbackup {__version__}"


@pytest.mark.parametrize("args,needle", [
    (["list", "--store", "file:///tmp", "-o", "xml"], "'xml' is not one of"),
    (["no-such-command"], "No such command"),
    (["verify"], "Missing argument"),
    (["agent", "backup", "--verify", "everything", "--store", "file:///x", "--endpoints", "e"], "is not one of"),
])
def test_usage_errors_are_one_line_with_exit_2(args: list[str], needle: str) -> None:
    r = run_cli_subprocess(*args)
    assert r.rc == 2, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0] and "-h'" in lines[0], r.err


def test_errors_are_one_line_and_traceback_on_request(tmp_path: Path) -> None:
    r = run_cli_subprocess("verify", "latest", "--store", f"file://{tmp_path}/nowhere")
    assert r.rc == 1 and r.err.strip().splitlines() == [f"error: store directory {tmp_path}/nowhere does not exist"]
    t = run_cli_subprocess("verify", "latest", "--store", f"file://{tmp_path}/nowhere", "--traceback")
    assert t.rc == 1 and "Traceback (most recent call last)" in t.err and t.err.rstrip().endswith("does not exist")


def test_stale_backups_exit_3(tmp_path: Path, capsys) -> None:
    r = run_cli(capsys, "agent", "monitor", "--store", f"file://{tmp_path}", "--max-age", "1h")
    assert r.rc == 3 and "STALE: no verified backup at all" in r.out


def test_encryption_key_flag_and_its_hidden_old_name(tmp_path: Path, capsys) -> None:
    key = write_key(tmp_path / "key")
    for flag in ("--encryption-key-file", "--key-file"):
        r = run_cli(capsys, "list", "--store", f"file://{tmp_path}", flag, key)
        assert r.rc == 0, r.err
    both = run_cli(capsys, "list", "--store", f"file://{tmp_path}", "--encryption-key-file", key, "--key-file", key)
    assert both.rc == 2 and "not both" in both.err
    helptext = run_cli_subprocess("list", "-h").out
    assert "--encryption-key-file" in helptext and "--key-file" not in helptext


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str) -> None:
    r = run_cli_subprocess("completion", shell)
    assert r.rc == 0 and "_KUBECTL_ETCDBACKUP_COMPLETE" in r.out


def test_bash_completion_completes_commands_and_flags(tmp_path: Path) -> None:
    """The real bash sources the script and asks the program, as on a terminal."""
    if not shutil.which("bash"):
        pytest.skip("no bash")
    script = tmp_path / "complete.bash"
    script.write_text(run_cli_subprocess("completion", "bash").out)
    probe = (f"source {script}; COMP_WORDS=(kubectl-etcdbackup {{words}}); COMP_CWORD={{cword}}; "
             "_kubectl_etcdbackup_completion kubectl-etcdbackup; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    env = dict(os.environ, PATH=f"{BIN}:/usr/bin:/bin")

    def complete(words: str, cword: int) -> list[str]:
        p = subprocess.run(["bash", "-c", probe.format(words=words, cword=cword)], capture_output=True, text=True,
                           env=env, timeout=60, check=False)
        return p.stdout.split()

    assert complete("li", 1) == ["list"] and complete("res", 1) == ["restore"]
    assert complete("verify latest --encr", 3) == ["--encryption-key-file"]


def test_kubectl_plugin_completion(tmp_path: Path) -> None:
    """kubectl 1.26+ completes `kubectl etcdbackup ...` through kubectl_complete-etcdbackup (cobra's protocol)."""
    env = {"PATH": plugin_path(tmp_path), "HOME": str(tmp_path)}
    p = subprocess.run([str(KUBECTL), "__complete", "etcdbackup", "res"], capture_output=True, text=True, env=env,
                       timeout=60, check=False)
    assert p.returncode == 0 and p.stdout.split() == ["restore", ":4"], p


def test_help_is_fast_and_imports_no_engine() -> None:
    """`--help` imports neither grpc, boto3, the kubernetes client nor prometheus_client (bench/bench_help.py
    measures the time: <= 0.2 s here)."""
    code = ("import sys; from kubectl_etcdbackup.cli import main; "
            "rc = main(['--help']); heavy = [m for m in ('grpc', 'boto3', 'kubernetes', 'prometheus_client', "
            "'zstandard', 'cryptography') if m in sys.modules]; print(heavy, file=sys.stderr); sys.exit(rc)")
    started = time.monotonic()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0 and p.stderr.strip() == "[]", p.stderr
    assert time.monotonic() - started < 2.0
