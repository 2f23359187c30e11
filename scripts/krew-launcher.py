#!/usr/bin/env python3
"""kubectl-etcdbackup launcher, shipped in the krew archive (kubectl finds it as `kubectl etcdbackup`).

The plugin is a Python package with compiled dependencies (grpcio, cryptography, zstandard), so this
small script runs it from a private virtualenv that it creates on first use with Python >= 3.11:
    python3 -m venv ~/.local/share/kubectl-etcdbackup/<version>/venv
    pip install kubectl-etcdbackup==<version>
Environment: KUBECTL_ETCDBACKUP_PYTHON (interpreter for the venv), KUBECTL_ETCDBACKUP_PIP_SPEC (what to
install, e.g. a wheel file), KUBECTL_ETCDBACKUP_HOME (where the venvs live).
`pipx install kubectl-etcdbackup` is the primary route: it needs no launcher.
Written for any python3 (3.6+), so it can report a too-old interpreter clearly.
"""

import os
import shutil
import subprocess
import sys

VERSION = "@VERSION@"  # filled in by scripts/build-release.py
PACKAGE = "kubectl-etcdbackup"
MARKER = ".installed"


def venv_dir():
    base = os.environ.get("KUBECTL_ETCDBACKUP_HOME")
    if not base:
        data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        base = os.path.join(data, PACKAGE)
    return os.path.join(base, VERSION, "venv")


def find_python():
    """A Python >= 3.11: $KUBECTL_ETCDBACKUP_PYTHON, this interpreter, or python3.1x on PATH."""
    wanted = os.environ.get("KUBECTL_ETCDBACKUP_PYTHON")
    if wanted:
        return wanted
    if sys.version_info >= (3, 11):  # noqa: UP036 - the launcher runs on any python3
        return sys.executable
    for name in ("python3.14", "python3.13", "python3.12", "python3.11"):
        path = shutil.which(name)
        if path:
            return path
    return None


def die(message):
    sys.stderr.write(f"kubectl-etcdbackup: {message}\n")
    sys.exit(1)


def install(venv):
    python = find_python()
    if python is None:
        die(f"needs Python 3.11 or newer (found {sys.version.split()[0]}); install one, "
            f"set KUBECTL_ETCDBACKUP_PYTHON, or use `pipx install {PACKAGE}`")
    spec = os.environ.get("KUBECTL_ETCDBACKUP_PIP_SPEC") or f"{PACKAGE}=={VERSION}"
    sys.stderr.write(f"kubectl-etcdbackup: first run: installing {spec} into {venv} ...\n")
    shutil.rmtree(venv, ignore_errors=True)  # a half-made venv from an interrupted run
    pip = os.path.join(venv, "bin", "pip")
    for cmd in ([python, "-m", "venv", venv],
                [pip, "install", "--quiet", "--disable-pip-version-check", spec]):
        try:
            rc = subprocess.call(cmd)
        except OSError as e:  # e.g. KUBECTL_ETCDBACKUP_PYTHON does not exist
            rc = e
        if rc != 0:
            shutil.rmtree(venv, ignore_errors=True)
            die(f"installation failed ({' '.join(cmd)}: {rc}); retry, or use `pipx install {PACKAGE}`")
    with open(os.path.join(venv, MARKER), "w") as f:
        f.write(spec + "\n")


def main():
    venv = venv_dir()
    exe = os.path.join(venv, "bin", PACKAGE)
    if not os.path.exists(os.path.join(venv, MARKER)) or not os.access(exe, os.X_OK):
        install(venv)
    os.execv(exe, [exe] + sys.argv[1:])


if __name__ == "__main__":
    main()
