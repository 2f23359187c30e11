"""Retention: the tiered policy (last, within, hourly/daily/weekly/monthly buckets), every reason per snapshot,
untrusted snapshots neither counted nor deleted, and the steady-state estimate."""

from datetime import UTC, datetime, timedelta

import pytest

from kubectl_etcdbackup.manifest import SnapshotManifest, format_time
from kubectl_etcdbackup.retention import (
    NEWEST_VERIFIED,
    NO_RULE,
    RetentionPolicy,
    assess_fit,
    decide,
    estimate_interval,
    steady_state_count,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # a Friday
DAY = 86400.0
CHART_DEFAULT = RetentionPolicy(keep_within_seconds=DAY, keep_daily=7)  # all of the last 24 h + one a day for 7 days


def snap(at: datetime | float, verified: bool = True, sid: str | None = None, untrusted: str = "",
         size: int = 1) -> SnapshotManifest:
    """A snapshot taken at `at` (a time, or hours before NOW)."""
    t = at if isinstance(at, datetime) else NOW - timedelta(hours=at)
    m = SnapshotManifest(
        id=sid or f"etcd-{t:%Y%m%dT%H%M%S}", created_at=format_time(t), etcd_revision=1, key_count=1,
        etcd_version="3.5.1", cluster_id="c", member_id="m", member_endpoint="e", raw_size=size, stored_size=size,
        raw_sha256="", stored_sha256="", codec="zstd", cipher="none", key_id="", duration_seconds=0,
        verified=verified)
    m.untrusted_reason = untrusted
    return m


def history(end: datetime, interval: timedelta, count: int) -> list[SnapshotManifest]:
    return [snap(end - i * interval) for i in range(count)]


def ids(ms: list[SnapshotManifest]) -> list[str]:
    return [m.id for m in ms]


def test_keep_last_and_within() -> None:
    snaps = [snap(h, sid=f"s{h}") for h in (0, 1, 2, 3, 30, 200)]
    d = decide(snaps, RetentionPolicy(keep_last=2, keep_within_seconds=DAY), NOW)
    assert ids(d.keep) == ["s0", "s1", "s2", "s3"]
    assert ids(d.delete) == ["s30", "s200"]
    assert d.reasons["s0"] == ["last 2", "within 1d", NEWEST_VERIFIED]
    assert d.reasons["s3"] == ["within 1d"]
    assert d.reasons["s200"] == [NO_RULE]


def test_daily_keeps_the_newest_of_each_of_the_n_newest_days() -> None:
    day = datetime(2026, 11, 27, tzinfo=UTC)
    snaps = [snap(day + timedelta(hours=h)) for h in (10, 2, -1, -5, -30, -50)]  # 27th x2, 26th x2, 25th, 24th
    d = decide(snaps, RetentionPolicy(keep_daily=3), NOW)
    assert ids(d.keep) == ids([snaps[0], snaps[2], snaps[4]])
    assert d.reasons[snaps[2].id] == ["daily 2026-11-26"]
    assert d.reasons[snaps[4].id] == ["daily 2026-11-25"]
    assert ids(d.delete) == ids([snaps[1], snaps[3], snaps[5]])


def test_every_rule_that_keeps_a_snapshot_is_named() -> None:
    snaps = history(NOW, timedelta(hours=1), 24 * 40)
    policy = RetentionPolicy(keep_last=3, keep_hourly=2, keep_daily=2, keep_weekly=2, keep_monthly=2)
    d = decide(snaps, policy, NOW)
    assert d.reasons[snaps[0].id] == ["last 3", "hourly 2026-11-27T12", "daily 2026-11-27", "weekly 2026-W48",
                                      "monthly 2026-11", NEWEST_VERIFIED]
    assert d.reasons[snaps[1].id] == ["last 3", "hourly 2026-11-27T11"]
    assert d.reasons[snaps[2].id] == ["last 3"]
    newest_of_yesterday = snaps[13]  # 2026-11-26 23:00
    assert d.reasons[newest_of_yesterday.id] == ["daily 2026-11-26"]
    last_sunday = snaps[12 + 24 * 4 + 1]  # 2026-11-22 23:00, the end of ISO week 47
    assert d.reasons[last_sunday.id] == ["weekly 2026-W47"]
    assert d.reasons[snaps[-1].id] == [NO_RULE]
    october = [m for m in d.keep if m.created_at.startswith("2026-10")]
    assert [d.reasons[m.id] for m in october] == [["monthly 2026-10"]] and october[0].created_at.startswith(
        "2026-10-31T23")
    assert len(d.keep) == 3 + 0 + 1 + 1 + 1  # hourly 11 and daily/weekly/monthly 27th coincide with others


def test_newest_verified_is_never_deleted() -> None:
    # Recent snapshots all failed verification; the only good one is old.
    snaps = [snap(1, False, "new1"), snap(2, False, "new2"), snap(500, True, "good"), snap(600, True, "old")]
    d = decide(snaps, RetentionPolicy(keep_last=1), NOW)
    assert ids(d.keep) == ["new1", "good"] and d.reasons["good"] == [NEWEST_VERIFIED]
    assert ids(d.delete) == ["new2", "old"]


def test_untrusted_snapshots_are_neither_counted_nor_deleted() -> None:
    decoys = [snap(h, sid=f"decoy{h}", untrusted="manifest MAC does not verify") for h in (0.1, 0.2, 0.3)]
    genuine = [snap(h, sid=f"real{h}") for h in (1, 2, 3, 4)]
    ancient_decoy = snap(9000, sid="decoy-old", untrusted="no MAC")
    d = decide(decoys + genuine + [ancient_decoy], RetentionPolicy(keep_last=2), NOW)
    assert ids(d.delete) == ["real3", "real4"]  # the decoys took no slot of keep-last
    assert {"decoy0.1", "decoy0.2", "decoy0.3", "decoy-old", "real1", "real2"} == set(ids(d.keep))
    assert d.reasons["decoy-old"] == ["not authenticated (no MAC)"]
    assert d.reasons["real1"] == ["last 2", NEWEST_VERIFIED]


def test_next_at_reserves_the_slot_of_the_snapshot_about_to_be_taken() -> None:
    snaps = [snap(h, sid=f"s{h}") for h in (1, 2, 3, 4)]
    d = decide(snaps, RetentionPolicy(keep_last=3), NOW, next_at=NOW)
    assert ids(d.keep) == ["s1", "s2"] and ids(d.delete) == ["s3", "s4"]
    # keep-last 1: the slot goes to the next snapshot, but the newest verified one stays until it exists
    d = decide(snaps, RetentionPolicy(keep_last=1), NOW, next_at=NOW)
    assert ids(d.keep) == ["s1"] and d.reasons["s1"] == [NEWEST_VERIFIED]


def test_seven_days_every_15_min_old_policy_672_new_default_about_100() -> None:
    week = history(NOW, timedelta(minutes=15), 7 * 96)
    old = decide(week, RetentionPolicy(keep_last=96, keep_within_seconds=7 * DAY), NOW)  # --retain-count/-age
    assert len(old.keep) == 672 and not old.delete
    new = decide(week, CHART_DEFAULT, NOW)
    assert len(new.keep) == 96 + 5  # the last 24 h, plus the newest of the 5 days before yesterday
    assert len(new.keep) <= steady_state_count(CHART_DEFAULT, 900) == 102


@pytest.mark.parametrize(("policy", "interval"), [
    (CHART_DEFAULT, timedelta(minutes=15)),
    (RetentionPolicy(keep_last=5, keep_hourly=30, keep_daily=10, keep_weekly=5, keep_monthly=3), timedelta(hours=1)),
    (RetentionPolicy(keep_hourly=6), timedelta(hours=2)),  # an interval longer than the bucket: empty hours
    (RetentionPolicy(keep_weekly=3, keep_monthly=4), timedelta(days=1)),
    (RetentionPolicy(keep_within_seconds=3 * DAY), timedelta(minutes=7)),
])
def test_steady_state_is_what_decide_keeps_of_a_long_history(policy: RetentionPolicy, interval: timedelta) -> None:
    worst_end = datetime(2026, 6, 1, tzinfo=UTC) - timedelta(seconds=1)  # a Sunday, the end of a month
    expected = steady_state_count(policy, interval.total_seconds())
    n = int(timedelta(days=200) / interval)
    assert len(decide(history(worst_end, interval, n), policy, worst_end).keep) == expected
    for end in (NOW, NOW + timedelta(hours=13, minutes=5), worst_end + timedelta(days=3, hours=7)):
        assert len(decide(history(end, interval, n), policy, end).keep) <= expected


def test_steady_state_of_the_chart_default_and_its_size() -> None:
    count = steady_state_count(CHART_DEFAULT, 15 * 60)
    assert count == 102  # 96 in the last 24 h + the newest of each of the 6 days before
    assert count * 100_000_000 == 10_200_000_000  # x a 100 MB snapshot: 10.2 GB, half of the default 20Gi PVC
    assert steady_state_count(RetentionPolicy(), 900) is None  # keeps everything: no steady state


def test_fit_from_the_observed_interval_and_newest_size() -> None:
    snaps = [snap(NOW - timedelta(minutes=15 * i), size=100 if i else 120) for i in range(12)]
    snaps.insert(3, snap(NOW - timedelta(minutes=37), size=100))  # a manual run between two scheduled ones
    assert estimate_interval(snaps) == 900
    fit = assess_fit(RetentionPolicy(keep_last=10), snaps, capacity_bytes=1320)
    assert (fit.count, fit.snapshot_bytes, fit.expected_bytes, fit.fits) == (10, 120, 1200, True)
    assert assess_fit(RetentionPolicy(keep_last=10), snaps, capacity_bytes=1319).fits is False
    assert assess_fit(RetentionPolicy(keep_last=10), snaps, capacity_bytes=None).fits is None
    assert assess_fit(RetentionPolicy(keep_last=10), snaps[:1], capacity_bytes=None) is None


def test_no_policy_keeps_everything() -> None:
    d = decide([snap(h) for h in range(3)], RetentionPolicy(), NOW)
    assert d.delete == [] and len(d.keep) == 3


def test_invalid_policy() -> None:
    with pytest.raises(ValueError, match="keep-daily"):
        RetentionPolicy(keep_daily=-1)
    with pytest.raises(ValueError, match="keep-within"):
        RetentionPolicy(keep_within_seconds=-5)
