"""Running "container" commands as local processes: path rewriting and the default exec handler."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence

# (namespace, pod, container, command, stdin or None) -> (exit code, stdout, stderr)
ExecResult = tuple[int, bytes, bytes]


def rewrite_paths(text: str, mapping: Mapping[str, str]) -> str:
    """Replace each in-container path prefix (a key of ``mapping``) by its local directory wherever it
    appears as a whole path component run: ``/etc/key/key``, ``--key-file=/etc/key/key``, ``file:///data``.
    Longer prefixes win, so ``/a/b`` is rewritten before ``/a``."""
    if not mapping:
        return text
    keys = sorted((k.rstrip("/") or "/" for k in mapping), key=len, reverse=True)
    local = {k.rstrip("/") or "/": v.rstrip("/") or "/" for k, v in mapping.items()}
    pattern = re.compile(r"(?<![\w.-])(" + "|".join(re.escape(k) for k in keys) + r")(?=/|$|[^\w.-])")
    return pattern.sub(lambda m: local[m.group(1)], text)


def resolve_argv(argv: Sequence[str], executables: Mapping[str, str] | None) -> list[str]:
    """Map argv[0] (by exact value or basename) through ``executables``, e.g. {"kubectl-etcdbackup":
    "/venv/bin/kubectl-etcdbackup"}."""
    out = list(argv)
    if out and executables:
        exe = executables.get(out[0]) or executables.get(os.path.basename(out[0]))
        if exe:
            out[0] = exe
    return out


class LocalExec:
    """Default ``pods/exec`` handler: runs the command on this machine.

    ``path`` becomes the child's PATH (the executable is looked up there), ``env`` is added to a minimal
    environment, ``path_map`` rewrites in-container paths in the arguments (see :func:`rewrite_paths`),
    ``executables`` maps argv[0]; the command is killed after ``timeout`` seconds (exit code 137).
    A command that cannot be started exits 127 / 126 with a message on stderr, like a container runtime.
    """

    def __init__(self, *, path: str | None = None, env: Mapping[str, str] | None = None, cwd: str | None = None,
                 timeout: float = 60.0, path_map: Mapping[str, str] | None = None,
                 executables: Mapping[str, str] | None = None) -> None:
        self.path, self.env, self.cwd, self.timeout = path, dict(env or {}), cwd, timeout
        self.path_map, self.executables = dict(path_map or {}), dict(executables or {})

    def __call__(self, namespace: str, pod: str, container: str, command: list[str],
                 stdin: bytes | None) -> ExecResult:
        env = {"PATH": self.path or os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/"),
               "LANG": "C.UTF-8", "HOSTNAME": pod, **self.env}
        argv = resolve_argv([rewrite_paths(a, self.path_map) for a in command], self.executables)
        try:
            p = subprocess.run(argv, input=stdin or b"", capture_output=True, env=env, cwd=self.cwd,
                               timeout=self.timeout, check=False)
        except FileNotFoundError:
            return 127, b"", f'exec: "{command[0]}": executable file not found in $PATH\n'.encode()
        except PermissionError:
            return 126, b"", f'exec: "{command[0]}": permission denied\n'.encode()
        except subprocess.TimeoutExpired as e:
            return 137, e.stdout or b"", (e.stderr or b"") + b"\nkilled: exec timeout\n"
        return (p.returncode if p.returncode >= 0 else 128 - p.returncode), p.stdout, p.stderr
