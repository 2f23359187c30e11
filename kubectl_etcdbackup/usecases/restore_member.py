"""Restore one member's data dir from a snapshot: the plan (always), then, unless a dry run, the restore."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..catalog import legacy_note
from ..etcd.tools import EtcdTool
from ..keys import Keyring
from ..manifest import SnapshotManifest
from ..restore import data_dir_exists, execute_restore
from ..restore_plan import MemberSpec, RestorePlan, plan_restore
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


@dataclass
class RestoreMemberReport:
    manifest: SnapshotManifest
    plan: RestorePlan
    restored: bool  # False for a dry run
    notes: list[str] = field(default_factory=list)


def run_restore_member(opts: RestoreMemberOptions) -> RestoreMemberReport:
    """Raises RestoreRefused (nothing changed) when the plan cannot be carried out safely."""
    with open_source(opts.source) as src:
        store = src.readable_store("restore")
        m = src.resolve(opts.ref, opts.keyring, allow_plaintext=opts.allow_plaintext)
        plan = plan_restore(m.id, src.url, opts.member, data_dir_exists=data_dir_exists(opts.member.data_dir),
                            move_aside=opts.move_aside)
        tool = EtcdTool(opts.etcdutl)
        notes = [*src.notes, *legacy_note(m)]
        if opts.dry_run:
            try:
                tool.check_restore_flags(opts.member.bump_revision, opts.member.mark_compacted)
            except Exception as e:  # noqa: BLE001 - a dry run reports it as a warning of the plan
                plan.warnings.append(str(e))
            return RestoreMemberReport(m, plan, False, notes)
        done = execute_restore(plan, store, m, opts.keyring, tool, opts.progress, allow_plaintext=opts.allow_plaintext)
        return RestoreMemberReport(m, plan, True, [*notes, *done.notes, *plan.warnings])
