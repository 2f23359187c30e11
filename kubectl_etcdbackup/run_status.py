"""The agent's run record in the store (`etcdbackup.status`): failure count and the last success/failure.

It lets the exporter and `status` report failures even when the CronJob, its pods and logs are gone.
It is not a snapshot; a failure to write it never fails a backup.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from .errors import EtcdBackupError
from .stores import Store

STATUS_OBJECT = "etcdbackup.status"


@dataclass
class RunStatus:
    failures_total: int = 0
    last_success_time: str = ""
    last_success_id: str = ""
    last_failure_time: str = ""
    last_failure_message: str = ""

    @classmethod
    def from_dict(cls, obj: object) -> RunStatus:
        """From parsed JSON; unknown keys are ignored, anything but an object gives an empty record."""
        if not isinstance(obj, dict):
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in known})

    def record_success(self, when: str, snapshot_id: str) -> None:
        self.last_success_time, self.last_success_id = when, snapshot_id

    def record_failure(self, when: str, message: str) -> None:
        self.failures_total += 1
        self.last_failure_time, self.last_failure_message = when, message[:500]


def load_status(store: Store) -> RunStatus:
    try:
        return RunStatus.from_dict(json.loads(store.get_bytes(STATUS_OBJECT)))
    except (EtcdBackupError, ValueError):
        return RunStatus()


def save_status(store: Store, status: RunStatus) -> None:
    store.put_bytes(STATUS_OBJECT, json.dumps(asdict(status), indent=2).encode())
