"""A fake Kubernetes for tests: a real-HTTP API server (kmock-based), a kubelet simulator that runs Jobs
as local processes, and kubeconfig files pointing at them. See server.py for what is (not) emulated."""

from .kubeconfig import KubeContext, write_kubeconfig
from .kubelet import JobRun, KubeletSimulator
from .localrun import LocalExec, rewrite_paths
from .server import ExecCall, ExecHandler, FakeKubeServer
from .store import ApiError, ResourceType

__all__ = [
    "ApiError",
    "ExecCall",
    "ExecHandler",
    "FakeKubeServer",
    "JobRun",
    "KubeContext",
    "KubeletSimulator",
    "LocalExec",
    "ResourceType",
    "rewrite_paths",
    "write_kubeconfig",
]
