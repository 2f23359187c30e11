"""Regenerate kubectl_etcdbackup/etcd/_proto from proto/*.proto (needs grpcio-tools)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "kubectl_etcdbackup" / "etcd" / "_proto"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.name) for p in (ROOT / "proto").glob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"--python_out={OUT}",
         f"--grpc_python_out={OUT}", *protos],
        check=True,
    )
    # protoc emits absolute imports ("import kv_pb2"); make them package-relative.
    for f in OUT.glob("*_pb2*.py"):
        text = re.sub(r"^import (\w+_pb2) as", r"from . import \1 as", f.read_text(), flags=re.M)
        f.write_text(text)
    (OUT / "__init__.py").write_text('"""Generated etcd v3 gRPC stubs (see scripts/gen-proto.py)."""\n')


if __name__ == "__main__":
    main()
