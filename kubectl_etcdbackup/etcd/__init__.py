"""Talking to etcd: the gRPC client (client.py) and the etcd command-line tools (tools.py).

Every import of grpc in this package goes through here first, so this is the one place that keeps gRPC's
C core quiet: it reads GRPC_VERBOSITY once, when grpc is imported, and would otherwise print its own log
lines (e.g. each failed TLS handshake) on stderr. Errors reach the operator as one line from the client.
An explicit GRPC_VERBOSITY or GRPC_TRACE in the environment is left alone.
"""

import os

if "GRPC_VERBOSITY" not in os.environ and "GRPC_TRACE" not in os.environ:
    os.environ["GRPC_VERBOSITY"] = "NONE"
