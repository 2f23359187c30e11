"""gRPC stubs for the etcd services the delta stream needs beyond client.py's (Watch, Lease, Txn), built on an
EtcdClient's channel so its endpoint, TLS and keepalive handling are used as they are. Modules outside this
package use grpc only through here (see __init__.py: the import order keeps gRPC's C core quiet)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from ._proto import rpc_pb2_grpc
from .client import EtcdClient, failure_cause

RpcError = grpc.RpcError
Call = grpc.Call
Future = grpc.Future


@dataclass(frozen=True)
class Stubs:
    kv: rpc_pb2_grpc.KVStub
    watch: rpc_pb2_grpc.WatchStub
    lease: rpc_pb2_grpc.LeaseStub

    @classmethod
    def of(cls, client: EtcdClient) -> Stubs:
        channel = client.channel
        return cls(rpc_pb2_grpc.KVStub(channel), rpc_pb2_grpc.WatchStub(channel), rpc_pb2_grpc.LeaseStub(channel))


def describe(e: grpc.RpcError, timeout: float = 0.0) -> str:
    """A failed call in a few words, on one line (client.failure_cause: the one place that reads gRPC's reports)."""
    return failure_cause(e, timeout)


def details(e: grpc.RpcError) -> str:
    """The server's own text of a failed call ("" when there is none)."""
    return (e.details() if isinstance(e, grpc.Call) else "") or ""
