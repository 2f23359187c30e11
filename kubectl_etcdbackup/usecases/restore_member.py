"""Restore one member's data dir from a snapshot, or (a point-in-time target) from the db rebuilt at that
revision or time from a full snapshot and the delta segments after it: the plan (always), then, unless a dry
run, the restore. Both go the same way (plan, lock, staging, every check, etcdutl restore with the revision bump,
move-aside, swap); a point in time is first rebuilt and sealed into a private scratch store
(usecases.point_in_time.rebuilt_snapshot), from which the ordinary restore reads it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..catalog import legacy_note
from ..continuous.chain import Target
from ..errors import UsageError
from ..etcd.tools import EtcdTool
from ..keys import Keyring
from ..manifest import SnapshotManifest
from ..restore import data_dir_exists, execute_restore
from ..restore_plan import MemberSpec, RestorePlan, plan_restore
from ..stores import Store
from .source import SourceSpec, open_source


@dataclass(frozen=True)
class RestoreMemberOptions:
    source: SourceSpec
    ref: str
    member: MemberSpec
    keyring: Keyring | None = None
    move_aside: bool = False
    dry_run: bool = False
    etcdutl: str | None = None
    allow_plaintext: bool = False
    progress: bool | None = None
    target: Target = field(default_factory=Target)  # --to-revision/--to-time (then ref must be latest)
    work_dir: str | None = None  # scratch space for a point-in-time rebuild (default: the temp dir)


@dataclass
class RestoreMemberReport:
    manifest: SnapshotManifest  # for a point in time: the rebuilt snapshot's
    plan: RestorePlan
    restored: bool  # False for a dry run
    notes: list[str] = field(default_factory=list)
    point: dict[str, Any] | None = None  # point in time: base snapshot, segments, revision, time


def run_restore_member(opts: RestoreMemberOptions) -> RestoreMemberReport:
    """Raises RestoreRefused (nothing changed) when the plan cannot be carried out safely, ChainError when the
    store cannot rebuild the point in time."""
    with open_source(opts.source) as src:
        store = src.readable_store("restore")
        if opts.target.given:
            return _point_in_time(opts, store, src.url, src.notes)
        m = src.resolve(opts.ref, opts.keyring, allow_plaintext=opts.allow_plaintext)
        plan = _plan(opts, m.id, src.url)
        notes = [*src.notes, *legacy_note(m)]
        if opts.dry_run:
            return RestoreMemberReport(m, plan, False, notes)
        done = execute_restore(plan, store, m, opts.keyring, EtcdTool(opts.etcdutl), opts.progress,
                               allow_plaintext=opts.allow_plaintext)
        return RestoreMemberReport(m, plan, True, [*notes, *done.notes, *plan.warnings])


def _plan(opts: RestoreMemberOptions, snapshot_id: str, url: str) -> RestorePlan:
    plan = plan_restore(snapshot_id, url, opts.member, data_dir_exists=data_dir_exists(opts.member.data_dir),
                        move_aside=opts.move_aside)
    if opts.dry_run:
        try:
            EtcdTool(opts.etcdutl).check_restore_flags(opts.member.bump_revision, opts.member.mark_compacted)
        except Exception as e:  # noqa: BLE001 - a dry run reports it as a warning of the plan
            plan.warnings.append(str(e))
    return plan


def _point_in_time(opts: RestoreMemberOptions, store: Store, url: str, notes: list[str]) -> RestoreMemberReport:
    from .point_in_time import plan_point, rebuilt_snapshot

    if opts.ref != "latest":
        raise UsageError("--to-revision/--to-time pick the base snapshot themselves: give `latest` (or no id)")
    if opts.keyring is None:
        raise UsageError("the delta stream is encrypted: give --encryption-key-file or --key-env")
    point = plan_point(store, opts.keyring, opts.target)
    plan = _plan(opts, point.snapshot_id, url)
    plan.steps = [point.step(), *(s.replace(f"fetch {point.snapshot_id} from {url}",
                                            f"read the rebuilt {point.snapshot_id} back from the scratch store")
                                  for s in plan.steps), "remove the scratch store"]
    if opts.dry_run:
        return RestoreMemberReport(point.chain.base, plan, False, list(notes), point.as_dict())
    tool = EtcdTool(opts.etcdutl)
    tool.check_restore_flags(opts.member.bump_revision, opts.member.mark_compacted)  # before the rebuild
    with rebuilt_snapshot(store, opts.keyring, point, work_dir=opts.work_dir, tool=tool) as (scratch, manifest,
                                                                                          rebuilt):
        done = execute_restore(plan, scratch, manifest, opts.keyring, tool, opts.progress)
    return RestoreMemberReport(manifest, plan, True, [*notes, *done.notes, *plan.warnings],
                               point.as_dict() | {"replay_seconds": rebuilt.replay_seconds})
