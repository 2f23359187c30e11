"""Talking to etcd: the gRPC client (client.py) and the etcd command-line tools (tools.py)."""
