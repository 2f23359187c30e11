"""One store's snapshots and the agent's run and drill records as one JSON document: what `agent catalog` prints in the
cluster and `status` reads back (it needs no Kubernetes client)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..catalog import list_snapshots
from ..errors import StoreError
from ..keys import Keyring
from ..manifest import SnapshotManifest
from ..run_status import DrillRecord, RunStatus, load_drill, load_status
from ..stores import Store


@dataclass
class Catalog:
    """Snapshots (newest first), the agent's run record and the restore drills' record of one store."""

    store_url: str
    snapshots: list[SnapshotManifest]
    run_status: RunStatus = field(default_factory=RunStatus)
    problems: list[str] = field(default_factory=list)
    drill: DrillRecord = field(default_factory=DrillRecord)

    def to_json(self) -> str:
        return json.dumps({"store": self.store_url, "snapshots": [asdict(m) for m in self.snapshots],
                           "run_status": asdict(self.run_status), "problems": self.problems,
                           "drill": asdict(self.drill)})

    @classmethod
    def from_json(cls, obj: Any) -> Catalog:
        if not isinstance(obj, dict) or not isinstance(obj.get("snapshots"), list):
            raise StoreError("unexpected catalog output from the cluster")
        return cls(str(obj.get("store", "")), manifests_from_json(obj["snapshots"]),
                   RunStatus.from_dict(obj.get("run_status")),
                   [str(p) for p in obj.get("problems") or []], DrillRecord.from_dict(obj.get("drill")))


def catalog_of(store: Store, keyring: Keyring | None = None) -> Catalog:
    listing = list_snapshots(store, keyring)
    return Catalog(store.url, listing.snapshots, load_status(store), listing.problems, load_drill(store))


def manifests_from_json(items: list[Any]) -> list[SnapshotManifest]:
    """Manifests as `list -o json` prints them, with the judgement of the agent that read them (extra keys such as
    age_seconds are ignored)."""
    return [SnapshotManifest.from_listing(d, "snapshot listed by the cluster") for d in items]
