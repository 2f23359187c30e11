"""The agent's run records in the store: `etcdbackup.status` (backup runs: failure count and the last
success/failure) and `etcdbackup.drill` (restore drills: the last one's outcome, stages and RTO estimate).

They let the exporter and `status` report failures even when the CronJob, its pods and logs are gone.
They are not snapshots; a failure to write one never fails a backup or a drill.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from .errors import EtcdBackupError
from .stores import Store

STATUS_OBJECT = "etcdbackup.status"
DRILL_OBJECT = "etcdbackup.drill"
R = TypeVar("R")


def _from_dict(cls: type[R], obj: object) -> R:
    """From parsed JSON; unknown keys are ignored, anything but an object gives an empty record."""
    if not isinstance(obj, dict):
        return cls()
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in obj.items() if k in known})


def _load(store: Store, name: str, cls: type[R]) -> R:
    try:
        return _from_dict(cls, json.loads(store.get_bytes(name)))
    except (EtcdBackupError, ValueError, TypeError):
        return cls()


def _save(store: Store, name: str, record: Any) -> None:
    store.put_bytes(name, json.dumps(asdict(record), indent=2).encode())


@dataclass
class RunStatus:
    failures_total: int = 0
    last_success_time: str = ""
    last_success_id: str = ""
    last_failure_time: str = ""
    last_failure_message: str = ""
    # Unix time each TLS certificate the backup uses expires, as the last run's pre-flight saw it (the exporter
    # publishes these: etcd_backup_cert_expiry_timestamp_seconds{cert})
    cert_expiry: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, obj: object) -> RunStatus:
        """From parsed JSON; unknown keys are ignored, anything but an object gives an empty record."""
        return _from_dict(cls, obj)

    def record_success(self, when: str, snapshot_id: str) -> None:
        self.last_success_time, self.last_success_id = when, snapshot_id

    def record_failure(self, when: str, message: str) -> None:
        self.failures_total += 1
        self.last_failure_time, self.last_failure_message = when, message[:500]


def load_status(store: Store) -> RunStatus:
    return _load(store, STATUS_OBJECT, RunStatus)


def save_status(store: Store, status: RunStatus) -> None:
    _save(store, STATUS_OBJECT, status)


@dataclass
class DrillRecord:
    """The restore drills' record: counts, the last drill in full, the last one that passed."""

    failures_total: int = 0
    last_time: str = ""
    last_ok: bool = False
    last_snapshot_id: str = ""
    last_message: str = ""  # why the last drill failed ("" when it passed)
    last_success_time: str = ""
    last_success_snapshot_id: str = ""
    stages_seconds: dict[str, float] = field(default_factory=dict)  # fetch, restore, start (to first healthy)
    estimated_restore_seconds: float = 0.0  # of the last drill that got through every stage
    revision: int = 0
    key_count: int = 0
    prefix_counts: dict[str, int] = field(default_factory=dict)  # the largest key prefixes, e.g. /registry/pods/

    @classmethod
    def from_dict(cls, obj: object) -> DrillRecord:
        """From parsed JSON; unknown keys are ignored, anything but an object gives an empty record."""
        return _from_dict(cls, obj)

    def record(self, when: str, snapshot_id: str, message: str) -> None:
        self.last_time, self.last_snapshot_id, self.last_message = when, snapshot_id, message[:500]
        self.last_ok = not message
        if message:
            self.failures_total += 1
        else:
            self.last_success_time, self.last_success_snapshot_id = when, snapshot_id


def load_drill(store: Store) -> DrillRecord:
    return _load(store, DRILL_OBJECT, DrillRecord)


def save_drill(store: Store, record: DrillRecord) -> None:
    _save(store, DRILL_OBJECT, record)
