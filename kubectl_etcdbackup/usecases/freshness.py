"""Is the newest trusted, verified backup recent enough? (`agent monitor`.)"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ..catalog import list_snapshots
from ..keys import Keyring
from ..monitor import assess
from ..run_status import load_status
from ..stores import Store


@dataclass(frozen=True)
class FreshnessReport:
    stale: bool
    message: str  # one line: OK/STALE, the newest backup and its age, failed runs recorded by the agent


def check_freshness(store: Store, keyring: Keyring | None, max_age_seconds: float,
                    now: datetime | None = None) -> FreshnessReport:
    fresh = assess(list_snapshots(store, keyring).trusted, max_age_seconds, now or datetime.now(UTC))
    rs = load_status(store)
    failures = f"; {rs.failures_total} failed runs, last: {rs.last_failure_message}" if rs.failures_total else ""
    return FreshnessReport(fresh.stale, fresh.message + failures)
