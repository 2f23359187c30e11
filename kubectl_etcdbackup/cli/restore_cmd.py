"""`restore`: one member's data dir from a snapshot, or (--plan) the runbook for the whole cluster."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import UsageError
from ..restore_plan import DEFAULT_BUMP_REVISION
from . import render
from .common import (
    AllowPlaintextOpt,
    EtcdPodsOptions,
    KeyOptions,
    KubeOptions,
    OptionGroup,
    OutputFormat,
    OutputOpt,
    ProgressOpt,
    SnapshotArg,
    StoreOptions,
    grouped,
)

if TYPE_CHECKING:
    from ..continuous.chain import Target
    from ..restore_plan import MemberSpec

_MEMBER, _PLAN = "This member", "Whole cluster (--plan)"


def register(app: typer.Typer) -> None:
    app.command("restore")(restore_cmd)


@dataclasses.dataclass(frozen=True)
class MemberOptions(OptionGroup):
    """The member being restored, as etcd's own flags name it."""

    data_dir: Annotated[str | None, typer.Option(help="this member's etcd --data-dir", rich_help_panel=_MEMBER)] = None
    name: Annotated[str | None, typer.Option(help="this member's etcd --name", rich_help_panel=_MEMBER)] = None
    initial_cluster: Annotated[str | None, typer.Option(
        help="name1=https://ip1:2380,name2=... (all members)", rich_help_panel=_MEMBER)] = None
    initial_advertise_peer_urls: Annotated[str | None, typer.Option(
        help="this member's peer URL(s)", rich_help_panel=_MEMBER)] = None
    initial_cluster_token: Annotated[str | None, typer.Option(
        help="new cluster token, the same on every member (default: restore-<snapshot id>)")] = None
    bump_revision: Annotated[int, typer.Option(
        help="raise the revision by N so watchers notice (0 to skip; needs a recent etcdutl)",
        rich_help_panel=_MEMBER)] = DEFAULT_BUMP_REVISION
    mark_compacted: Annotated[bool | None, typer.Option(
        "--mark-compacted/--no-mark-compacted", help="default: on when --bump-revision > 0",
        rich_help_panel=_MEMBER)] = None
    move_aside: Annotated[bool, typer.Option(help="move an existing data dir aside (never deleted)",
                                             rich_help_panel=_MEMBER)] = False
    wal_dir: Annotated[str | None, typer.Option(help="separate WAL dir, if the member uses one",
                                                rich_help_panel=_MEMBER)] = None
    etcdutl: Annotated[str | None, typer.Option(help="path to etcdutl (or etcdctl for etcd 3.4)",
                                                rich_help_panel=_MEMBER)] = None
    to_revision: Annotated[int | None, typer.Option(
        "--to-revision", min=1, rich_help_panel=_MEMBER, help="point in time: rebuild this revision from the newest "
        "full snapshot before it and the delta segments after it (give `latest` as the snapshot)")] = None
    to_time: Annotated[str | None, typer.Option(
        "--to-time", rich_help_panel=_MEMBER, help="point in time: the state at this time (ISO 8601, UTC unless an "
        "offset is given), rebuilt as --to-revision is")] = None

    def target(self) -> Target:
        from ..continuous.chain import Target

        return Target.parse(self.to_revision, self.to_time)

    def spec(self) -> MemberSpec:
        from ..restore_plan import MemberSpec

        missing = [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(self)
                   if f.name in ("data_dir", "name", "initial_cluster", "initial_advertise_peer_urls")
                   and not getattr(self, f.name)]
        if missing:
            raise UsageError(f"missing option(s) {', '.join(missing)} (or use --plan for the whole-cluster runbook)")
        assert self.data_dir and self.name and self.initial_cluster and self.initial_advertise_peer_urls
        compacted = self.bump_revision > 0 if self.mark_compacted is None else self.mark_compacted
        return MemberSpec(self.name, self.data_dir, self.initial_cluster, self.initial_advertise_peer_urls,
                          self.initial_cluster_token, self.bump_revision, compacted, self.wal_dir)


@dataclasses.dataclass(frozen=True)
class PlanOptions(OptionGroup):
    """The whole-cluster runbook."""

    plan: Annotated[bool, typer.Option("--plan", rich_help_panel=_PLAN, help="print the runbook for restoring "
                                       "every member of the cluster's etcd (read from the etcd pods); changes nothing")
                    ] = False
    write_dir: Annotated[str | None, typer.Option("--write-dir", rich_help_panel=_PLAN,
                                                  help="also write one script per node and README.txt here")] = None
    node_key_file: Annotated[str | None, typer.Option(
        "--node-key-file", rich_help_panel=_PLAN, help="where the key file will be on each node")] = None
    manifests_dir: Annotated[str | None, typer.Option(
        "--manifests-dir", rich_help_panel=_PLAN, help="the kubelet's static pod dir")] = None
    distribution: Annotated[str | None, typer.Option(
        "--distribution", rich_help_panel=_PLAN, metavar="kubeadm|k3s|rke2",
        help="how the cluster runs etcd (default: told from the nodes and pods)")] = None
    node_python: Annotated[bool, typer.Option(
        "--node-python", rich_help_panel=_PLAN, help="the nodes fetch and restore with kubectl-etcdbackup "
        "(Python >= 3.11 there) instead of the snapshot being checked here and restored with the etcd image")] = False


@grouped
def restore_cmd(snapshot: SnapshotArg, store: StoreOptions, key: KeyOptions, member: MemberOptions,
                plan: PlanOptions, kube: KubeOptions, etcd: EtcdPodsOptions,
                dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan, change nothing")] = False,
                output: OutputOpt = OutputFormat.table, progress: ProgressOpt = None,
                allow_plaintext: AllowPlaintextOpt = False) -> None:
    """Restore one member's data dir from a snapshot (fetch, authenticate, check, etcdutl snapshot restore into a
    staging dir, swap; the old dir is moved aside, never deleted); --plan: the runbook for the whole cluster."""
    if plan.plan:
        _runbook(snapshot, store, key, plan, kube, etcd, member, output)
        return
    if plan.write_dir:
        raise UsageError("--write-dir needs --plan")
    from ..usecases.restore_member import RestoreMemberOptions, run_restore_member

    report = run_restore_member(RestoreMemberOptions(
        store.spec(kube), snapshot, member.spec(), key.keyring(), member.move_aside, dry_run, member.etcdutl,
        allow_plaintext, progress, member.target()))
    render.warn(report.notes)
    point = {"point_in_time": report.point} if report.point else {}
    if not report.restored:
        _print_plan(report.plan.as_dict() | point, output)
        return
    p = report.plan
    result = {"restored": report.manifest.id, "revision": report.manifest.etcd_revision, "member": p.member.name,
              "data_dir": p.final_dir, "moved_aside_to": p.aside_dir, "token": p.token}
    if report.point:
        result |= {"base": report.point["base_snapshot"], "segments": len(report.point["segments"])}
    render.rows([result], output, [(k, k.upper()) for k in result])


def _runbook(ref: str, store: StoreOptions, key: KeyOptions, plan: PlanOptions, kube: KubeOptions,
             etcd: EtcdPodsOptions, member: MemberOptions, output: str) -> None:
    from ..k8s.runbook import DEFAULT_KEY_FILE, DEFAULT_MANIFESTS_DIR
    from ..usecases.runbook import RunbookRequest, run_runbook

    report = run_runbook(RunbookRequest(
        store.spec(kube), ref, key.keyring(), member.initial_cluster_token, plan.node_key_file or DEFAULT_KEY_FILE,
        plan.manifests_dir or DEFAULT_MANIFESTS_DIR, etcd.etcd_namespace, etcd.etcd_selector, plan.write_dir,
        plan.distribution.lower() if plan.distribution else None, plan.node_python, member.bump_revision, key.file))
    render.warn(report.notes)
    for path in report.written:
        render.note(f"wrote {path}")
    if output == "table":
        render.out(report.book.text())
    else:
        render.document(report.book.as_dict(), output)


def _print_plan(plan: dict[str, Any], output: str) -> None:
    if output != "table":
        render.document(plan, output)
        return
    render.out(f"Restore plan (dry run, nothing changed): snapshot {plan['snapshot']} -> member {plan['member']}")
    for i, step in enumerate(plan["steps"], 1):
        render.out(f"  {i}. {step}")
    for w in plan["warnings"]:
        render.out(f"warning: {w}")
