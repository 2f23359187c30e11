#!/usr/bin/env python3
"""kubectl-etcdbackup launcher, shipped in the krew archive (kubectl finds it as `kubectl etcdbackup`).

The plugin is a Python package with compiled dependencies (grpcio, cryptography, zstandard). The archive
beside this script holds all of them as wheels for CPython PYTHONS on its platform, and requirements.txt
with their sha256. On first use (per plugin version and Python version) this script installs them, and
nothing else, into a private virtualenv, with no package index:
    python3 -m venv --without-pip <home>/<version>/py3.X
    <venv python> wheels/pip-*.whl/pip install --isolated --no-index --find-links wheels --require-hashes \
        -r requirements.txt
(pip runs from its wheel, so the interpreter needs no ensurepip.) Later runs exec the venv's
kubectl-etcdbackup at once. Environment: KUBECTL_ETCDBACKUP_PYTHON (interpreter for the venv),
KUBECTL_ETCDBACKUP_HOME (where the venvs live; default ~/.local/share/kubectl-etcdbackup).
Written for any python3 (3.6+), so it can report a too-old interpreter clearly.
"""

import fcntl
import glob
import os
import shutil
import subprocess
import sys

VERSION = "@VERSION@"  # filled in by scripts/build-release.py
PYTHONS = "@PYTHONS@"  # ("3.11", ...): the Python versions the archive has wheels for; filled in likewise
PACKAGE = "kubectl-etcdbackup"
MARKER = ".installed"
HERE = os.path.dirname(os.path.realpath(__file__))  # krew links to this file from ~/.krew/bin


def die(message):
    sys.stderr.write(f"kubectl-etcdbackup: {message}\n")
    sys.exit(1)


def find_python():
    """(path, "3.X") of an interpreter the archive has wheels for: $KUBECTL_ETCDBACKUP_PYTHON, this one,
    or python3.X on PATH, newest first. Exits with a clear message when there is none."""
    wanted = os.environ.get("KUBECTL_ETCDBACKUP_PYTHON")
    if wanted:
        try:
            out = subprocess.check_output([wanted, "-c", "import sys; print('{}.{}'.format(*sys.version_info))"])
        except (OSError, subprocess.CalledProcessError) as e:
            die(f"KUBECTL_ETCDBACKUP_PYTHON={wanted} does not run: {e}")
        version = out.decode().strip()
        if version not in PYTHONS:
            die(f"KUBECTL_ETCDBACKUP_PYTHON={wanted} is Python {version}; this release needs one of "
                f"{', '.join(PYTHONS)}")
        return wanted, version
    mine = "{}.{}".format(*sys.version_info[:2])
    if mine in PYTHONS:
        return sys.executable, mine
    for version in reversed(PYTHONS):
        path = shutil.which("python" + version)
        if path:
            return path, version
    die(f"needs Python {PYTHONS[0]} to {PYTHONS[-1]} (found {mine} at {sys.executable}); install one, or set "
        "KUBECTL_ETCDBACKUP_PYTHON")


def venv_dir(version):
    base = os.environ.get("KUBECTL_ETCDBACKUP_HOME")
    if not base:
        data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        base = os.path.join(data, PACKAGE)
    return os.path.join(base, VERSION, "py" + version)


def run(cmd, venv):
    """Run an install step; on failure remove the half-made venv and exit with a message."""
    try:
        rc = subprocess.call(cmd)
    except OSError as e:
        rc = e
    if rc != 0:
        shutil.rmtree(venv, ignore_errors=True)
        die(f"installation failed ({' '.join(cmd)}: {rc})")


def install(python, version, venv):
    """Create the venv and install the archive's wheels into it; one line on stderr says what and how big."""
    wheels = os.path.join(HERE, "wheels")
    pip_wheels = glob.glob(os.path.join(wheels, "pip-*.whl"))
    if len(pip_wheels) != 1:
        die(f"the archive in {HERE} is incomplete (no pip wheel in wheels/); reinstall the plugin")
    size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(wheels, "*.whl")))
    sys.stderr.write(f"kubectl-etcdbackup: first run of {VERSION} with Python {version}: installing it from "
                     f"{wheels} (wheels: {size / 1e6:.0f} MB, all versions) into {venv} ...\n")
    shutil.rmtree(venv, ignore_errors=True)  # a half-made venv from an interrupted run
    run([python, "-m", "venv", "--without-pip", venv], venv)
    run([os.path.join(venv, "bin", "python"), os.path.join(pip_wheels[0], "pip"), "install", "--isolated",
         "--quiet", "--disable-pip-version-check", "--no-cache-dir", "--no-index", "--find-links", wheels,
         "--only-binary", ":all:", "--require-hashes", "-r", os.path.join(HERE, "requirements.txt")], venv)
    with open(os.path.join(venv, MARKER), "w") as f:
        f.write(f"{VERSION} {python}\n")


def main():
    python, version = find_python()
    venv = venv_dir(version)
    exe = os.path.join(venv, "bin", PACKAGE)
    if not os.path.exists(os.path.join(venv, MARKER)):
        os.makedirs(os.path.dirname(venv), exist_ok=True)
        with open(venv + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent first run waits, then finds the venv ready
            if not os.path.exists(os.path.join(venv, MARKER)):
                install(python, version, venv)
    os.execv(exe, [exe] + sys.argv[1:])


if __name__ == "__main__":
    main()
