"""One snapshot source for every command that reads snapshots: `--store URL`, else the store of the backup
CronJob installed in the cluster.

An S3 store of the cluster is opened from here (the local AWS credentials, else the Secret the CronJob uses). A
file store on a PersistentVolumeClaim cannot be read from here: the same `kubectl-etcdbackup` command then runs
inside the cluster next to the volume (`SnapshotSource.remote`), with the key the cluster holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..catalog import Listing, list_snapshots, pick, resolve
from ..defaults import DEFAULT_NAMESPACE
from ..errors import UsageError
from ..keys import Keyring
from ..manifest import SnapshotManifest
from ..stores import Store, open_store

if TYPE_CHECKING:
    from ..k8s.api import Kube
    from ..k8s.store_config import ClusterStore


@dataclass(frozen=True)
class KubeTarget:
    """Which cluster (kubeconfig, context), namespace and backup CronJob (None: the one installed there)."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    cronjob: str | None = None


@dataclass(frozen=True)
class SourceSpec:
    """--store and its S3 settings; without --store, the cluster's."""

    store: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    kube: KubeTarget = field(default_factory=KubeTarget)


@dataclass
class SnapshotSource:
    """An opened source: `store` when its objects can be read from here (None: a file store on a PVC, reached by
    running commands next to it); `cluster` and `cronjob` when it is the cluster's. `notes` collects what the
    operator should be told."""

    url: str
    where: str  # "--store", or "CronJob <namespace>/<name>"
    store: Store | None = None
    kube: Kube | None = None
    cronjob: dict[str, Any] | None = None
    cluster: ClusterStore | None = None
    notes: list[str] = field(default_factory=list)

    def listing(self, keyring: Keyring | None, *, allow_plaintext: bool = False) -> Listing:
        """Every snapshot, newest first, judged against the keyring (a remote listing: the cluster's key)."""
        if self.store is not None:
            return list_snapshots(self.store, keyring, allow_plaintext=allow_plaintext)
        from ..k8s.cluster_store import read_snapshots

        return Listing(read_snapshots(*self._remote_parts(), self.notes))

    def resolve(self, ref: str, keyring: Keyring | None, *, allow_plaintext: bool = False) -> SnapshotManifest:
        """`latest` or an exact id, trusted (see catalog.pick)."""
        if self.store is not None:
            return resolve(self.store, ref, keyring, allow_plaintext=allow_plaintext)
        return pick(self.listing(keyring).snapshots, ref, self.url)

    def readable_store(self, what: str) -> Store:
        """The store, when its objects can be read from here; else a usage error saying `what` needs a copy."""
        if self.store is None:
            raise UsageError(f"the cluster's store {self.url} is a volume inside the cluster; {what} needs the "
                             "snapshot here: copy the store out and pass --store")
        return self.store

    def remote(self, argv: list[str], *, write: bool = False) -> str:
        """Run `kubectl-etcdbackup <argv>` next to the cluster's volume (the store and key options are added)."""
        from ..k8s.cluster_store import run_on_store

        kube, cronjob, cluster = self._remote_parts()
        if write:  # a change to the cluster's store: say which cluster, as every mutating command does
            self.notes.append(f"context {kube.context_name or '(in-cluster)'}, server {kube.host}")
        return run_on_store(kube, cronjob, cluster, argv, self.notes, write=write)

    def _remote_parts(self) -> tuple[Kube, dict[str, Any], ClusterStore]:
        assert self.kube is not None and self.cronjob is not None and self.cluster is not None
        return self.kube, self.cronjob, self.cluster


@contextlib.contextmanager
def open_source(spec: SourceSpec, *, create: bool = False) -> Iterator[SnapshotSource]:
    """The source `spec` names, open for the duration of the block."""
    if spec.store:
        yield SnapshotSource(spec.store, "--store", open_store(spec.store, s3_endpoint_url=spec.s3_endpoint_url,
                                                              s3_region=spec.s3_region, create=create))
        return
    from ..k8s.api import connect
    from ..k8s.cluster_store import cluster_store, open_s3

    kube = connect(spec.kube.kubeconfig, spec.kube.context)
    try:
        cj, cfg = cluster_store(kube, spec.kube.namespace, spec.kube.cronjob)
        where = f"CronJob {cfg.namespace}/{cfg.cronjob}"
        store = open_s3(kube, cfg) if cfg.is_s3 else None
        yield SnapshotSource(cfg.url, where, store, kube=kube, cronjob=cj, cluster=cfg)
    finally:
        kube.close()
