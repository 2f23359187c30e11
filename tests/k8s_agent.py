"""Helpers for tests that install the backup objects into the fake API and run the backup Jobs: the kubelet
simulator runs each Job's container (the real agent, `kubectl-etcdbackup agent backup`) against real etcd."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from k8s_fake import FakeKubeServer, KubeletSimulator
from k8s_helpers import PKI, PLUGIN, run_plugin

EXE = {"kubectl-etcdbackup": str(PLUGIN)}


def tool_path(bins: Any) -> str:
    """PATH of the simulated containers: the real etcd tools (etcd, etcdutl, etcdctl), as in the image."""
    dirs = dict.fromkeys(str(p.parent) for p in (bins.etcdutl, bins.etcd, bins.etcdctl))
    return ":".join([*dirs, "/usr/bin", "/bin"])


@contextlib.contextmanager
def kubelet(kube: FakeKubeServer, pki: Path, path: str, workdir: Path,
            env: Mapping[str, str] | None = None) -> Iterator[KubeletSimulator]:
    """Runs Jobs as local processes; /etc/kubernetes/pki/etcd on the "node" is the test PKI; `env` goes to every
    container."""
    with KubeletSimulator(kube, path_map={PKI: str(pki)}, executables=EXE, path=path, workdir=workdir,
                          job_timeout=120, env=env) as sim:
        yield sim


def install(env: Mapping[str, str], ns: str, *args: str) -> str:
    r = run_plugin(env, "install", "-n", ns, *args)
    assert r.rc == 0, r
    return r.out


def etcd_args(cluster: Any) -> list[str]:
    return ["--etcd-endpoints", ",".join(cluster.endpoints)]


def target_line(kube: FakeKubeServer, context: str = "fake") -> str:
    """What mutating commands print first on stderr: the cluster they change."""
    return f"context {context}, server {kube.url}"
