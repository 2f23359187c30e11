"""Run the CLI in-process and capture its output (fast), or as a subprocess (what users run)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubectl_etcdbackup.cli import main
from kubectl_etcdbackup.keys import generate_key


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> Result:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return Result(rc, cap.out, cap.err)


def run_cli_subprocess(*args: str | Path, timeout: float = 120, env: dict[str, str] | None = None) -> Result:
    exe = shutil.which("kubectl-etcdbackup", path=str(Path(sys.executable).parent)) or "kubectl-etcdbackup"
    p = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env,
                       check=False)
    return Result(p.returncode, p.stdout, p.stderr)


def write_key(path: Path) -> Path:
    path.write_text(generate_key() + "\n")
    path.chmod(0o600)
    return path


def tls_args(cluster: Any) -> list[str]:
    tls = cluster.client_tls
    return ["--cacert", str(tls.ca), "--cert", str(tls.cert), "--key", str(tls.key)] if tls else []


def backup_args(cluster: Any, store: str, key_file: Path | None, *extra: str) -> list[str]:
    key = ["--key-file", str(key_file)] if key_file else ["--no-encryption"]
    return ["agent", "backup", "--endpoints", ",".join(cluster.endpoints), *tls_args(cluster), "--store", store,
            *key, "--no-progress", *extra]
