"""Which cluster a command changes: the API client of --kubeconfig/--context, and the one-line description of it
(context and API server) that every mutating command shows before it changes anything."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..k8s.api import Kube


@dataclass(frozen=True)
class Target:
    """The cluster a client talks to: its kubeconfig context (None in a pod: the service account) and API server."""

    context: str | None
    server: str

    def __str__(self) -> str:
        return f"context {self.context or '(in-cluster service account)'}, server {self.server}"


def target_of(kube: Kube) -> Target:
    return Target(kube.context_name, kube.host)


@contextlib.contextmanager
def connected(kubeconfig: str | None, context: str | None) -> Iterator[Kube]:
    """A client for the block (closed afterwards)."""
    from ..k8s.api import connect

    kube = connect(kubeconfig, context)
    try:
        yield kube
    finally:
        kube.close()
