"""Generated etcd v3 gRPC stubs (see scripts/gen-proto.py)."""
