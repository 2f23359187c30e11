"""Kubeconfig files pointing at the fake API server (plain HTTP, bearer-token user)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KubeContext:
    """One context; ``server`` defaults to the main server URL, ``token`` to the main token."""

    name: str
    namespace: str = "default"
    server: str | None = None
    token: str | None = None


def write_kubeconfig(path: str | os.PathLike[str], server: str, *, context: str = "fake",
                     namespace: str = "default", token: str = "fake-token",
                     extra_contexts: Sequence[KubeContext] = ()) -> Path:
    """Write a kubeconfig whose current context is ``context`` (-> ``server``, ``namespace``) plus
    ``extra_contexts`` (for ``--context`` tests); returns the path. JSON is valid YAML, so it is JSON.
    If ``path`` is an existing directory the file is ``<path>/kubeconfig``."""
    p = Path(path)
    if p.is_dir():
        p = p / "kubeconfig"
    contexts = [KubeContext(context, namespace, server, token), *extra_contexts]
    names = [c.name for c in contexts]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate context names: {names}")
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "current-context": context,
        "clusters": [{"name": f"{c.name}-cluster", "cluster": {"server": c.server or server}} for c in contexts],
        "users": [{"name": f"{c.name}-user", "user": {"token": c.token or token}} for c in contexts],
        "contexts": [{"name": c.name, "context": {"cluster": f"{c.name}-cluster", "user": f"{c.name}-user",
                                                   "namespace": c.namespace}} for c in contexts],
    }
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(cfg, indent=2) + "\n")
    p.chmod(0o600)
    return p
