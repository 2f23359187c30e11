"""The restore plan: flags, staging and move-aside paths, refusals."""

from datetime import UTC, datetime

import pytest

from kubectl_etcdbackup.errors import RestoreRefused, UsageError
from kubectl_etcdbackup.restore_plan import MemberSpec, parse_initial_cluster, plan_restore

NOW = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)
CLUSTER = "m0=https://10.0.0.1:2380,m1=https://10.0.0.2:2380,m2=https://10.0.0.3:2380"


def member(**kw: object) -> MemberSpec:
    base: dict[str, object] = dict(name="m1", data_dir="/var/lib/etcd", initial_cluster=CLUSTER,
                                   initial_advertise_peer_urls="https://10.0.0.2:2380")
    base.update(kw)
    return MemberSpec(**base)  # type: ignore[arg-type]


def test_plan_for_fresh_dir() -> None:
    p = plan_restore("etcd-x", "s3://b/p", member(), data_dir_exists=False, move_aside=False, now=NOW)
    assert p.staging_dir == "/var/lib/etcd.restoring-20261127T080000Z"
    # everything a killed restore leaves is inside the one staging dir
    assert p.snapshot_file == "/var/lib/etcd.restoring-20261127T080000Z/etcd-x.db"
    assert p.restored_dir == "/var/lib/etcd.restoring-20261127T080000Z/data"
    assert p.aside_dir is None
    assert p.token == "restore-etcd-x"
    restore_step = next(s for s in p.steps if s.startswith("snapshot restore"))
    assert "--name m1" in restore_step and "--bump-revision 1000000000 --mark-compacted" in restore_step
    assert f"--initial-cluster {CLUSTER}" in restore_step
    assert not p.warnings


def test_existing_dir_is_refused_without_move_aside() -> None:
    with pytest.raises(RestoreRefused, match="already exists; nothing was changed"):
        plan_restore("etcd-x", "s3://b", member(), data_dir_exists=True, move_aside=False, now=NOW)


def test_existing_dir_moved_aside_never_deleted() -> None:
    p = plan_restore("etcd-x", "s3://b", member(), data_dir_exists=True, move_aside=True, now=NOW)
    assert p.aside_dir == "/var/lib/etcd.before-restore-20261127T080000Z"
    assert any("never deleted" in s for s in p.steps)


def test_every_member_gets_the_same_token() -> None:
    tokens = {plan_restore("etcd-x", "s3://b", member(name=f"m{i}", initial_advertise_peer_urls=url),
                           data_dir_exists=False, move_aside=False).token
              for i, url in enumerate(parse_initial_cluster(CLUSTER)[n][0] for n in ("m0", "m1", "m2"))}
    assert tokens == {"restore-etcd-x"}


@pytest.mark.parametrize("kw,msg", [
    (dict(name="m9"), "not in --initial-cluster"),
    (dict(initial_advertise_peer_urls="https://10.0.0.9:2380"), "differ from"),
    (dict(bump_revision=0, mark_compacted=True), "needs --bump-revision"),
    (dict(initial_cluster="m1"), "bad --initial-cluster"),
    (dict(data_dir="/"), "refusing"),
])
def test_bad_specs(kw: dict[str, object], msg: str) -> None:
    with pytest.raises(UsageError, match=msg):
        plan_restore("etcd-x", "s3://b", member(**kw), data_dir_exists=False, move_aside=False)


def test_no_bump_warns() -> None:
    p = plan_restore("etcd-x", "s3://b", member(bump_revision=0, mark_compacted=False),
                     data_dir_exists=False, move_aside=False)
    assert any("stale caches" in w for w in p.warnings)
