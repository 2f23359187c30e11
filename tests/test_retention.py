"""Retention: count and age, both must be exceeded; the newest verified snapshot is never deleted."""

from datetime import UTC, datetime, timedelta

import pytest

from kubectl_etcdbackup.manifest import SnapshotManifest, format_time
from kubectl_etcdbackup.retention import RetentionPolicy, decide

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def snap(hours_ago: float, verified: bool = True, sid: str | None = None) -> SnapshotManifest:
    t = NOW - timedelta(hours=hours_ago)
    return SnapshotManifest(
        id=sid or f"etcd-{hours_ago:g}h", created_at=format_time(t), etcd_revision=1, key_count=1,
        etcd_version="3.5.1", cluster_id="c", member_id="m", member_endpoint="e", raw_size=1, stored_size=1,
        raw_sha256="", stored_sha256="", codec="zstd", cipher="none", key_id="", duration_seconds=0,
        verified=verified)


def ids(ms: list[SnapshotManifest]) -> list[str]:
    return [m.id for m in ms]


def test_count_only() -> None:
    d = decide([snap(h) for h in range(5)], RetentionPolicy(retain_count=2), NOW)
    assert ids(d.keep) == ["etcd-0h", "etcd-1h"]
    assert ids(d.delete) == ["etcd-2h", "etcd-3h", "etcd-4h"]


def test_age_only() -> None:
    d = decide([snap(h) for h in (1, 30, 200)], RetentionPolicy(retain_age_seconds=48 * 3600), NOW)
    assert ids(d.delete) == ["etcd-200h"]


def test_both_limits_must_be_exceeded() -> None:
    snaps = [snap(h) for h in (1, 2, 3, 100, 200)]
    d = decide(snaps, RetentionPolicy(retain_count=2, retain_age_seconds=50 * 3600), NOW)
    assert ids(d.keep) == ["etcd-1h", "etcd-2h", "etcd-3h"]  # 3h: beyond count but young
    assert ids(d.delete) == ["etcd-100h", "etcd-200h"]


def test_newest_verified_is_never_deleted() -> None:
    # Recent snapshots all failed verification; the only good one is old.
    snaps = [snap(1, False), snap(2, False), snap(500, True, "etcd-good"), snap(600, True)]
    d = decide(snaps, RetentionPolicy(retain_count=1, retain_age_seconds=3600), NOW)
    assert "etcd-good" in ids(d.keep)
    assert "newest verified" in d.reasons["etcd-good"]
    assert ids(d.delete) == ["etcd-2h", "etcd-600h"]


def test_no_policy_keeps_everything() -> None:
    d = decide([snap(h) for h in range(3)], RetentionPolicy(), NOW)
    assert d.delete == []


def test_invalid_policy() -> None:
    with pytest.raises(ValueError):
        RetentionPolicy(retain_count=0)
