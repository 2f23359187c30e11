"""Point-in-time: a plain etcd snapshot file of the cluster as it was at a revision or a time, rebuilt from the
newest full snapshot at or before the target and the delta segments after it.

The chain is checked before anything is restored (continuous.chain); every segment is checked as it is read
(continuous.stored). The base is restored into a scratch dir, the revisions replayed on a throwaway etcd, and the
result saved as `output` (mode 0600, under its final name only once complete, then checked by `snapshot status`:
its revision must be the last one replayed). The scratch dir is removed whatever happens.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import list_snapshots
from ..continuous.chain import ChainPlan, Target, plan_chain
from ..continuous.replay import Replayer, ReplayPorts, ThrowawayEtcd
from ..continuous.segment import RevisionRecord
from ..continuous.stored import read_segment, read_stream
from ..errors import IntegrityError
from ..etcd.tools import EtcdTool
from ..fetch import fetch_to_file
from ..keys import Keyring
from ..manifest import format_time
from ..stores import Store


@dataclass
class PitrOptions:
    store: Store
    keyring: Keyring
    output: Path
    target: Target = field(default_factory=Target)  # neither revision nor time: the newest covered point
    work_dir: str | None = None  # scratch space (the base snapshot, its restore, the replay etcd's data)
    ports: ReplayPorts | None = None  # 127.0.0.1 ports for the replay etcd; None: any free ones
    etcd_binary: str | None = None
    tool: EtcdTool | None = None  # etcdutl (restore, status); None: found on PATH


@dataclass
class PitrReport:
    base_id: str
    base_revision: int
    segments: list[str]
    revision: int  # the output's revision: the last one replayed (or the base's)
    time: str  # when the stream received that revision ("" when nothing was replayed)
    revisions_replayed: int
    events_replayed: int
    output: str
    size: int
    replay_seconds: float
    total_seconds: float


def materialize(opts: PitrOptions) -> PitrReport:
    """Write the snapshot file for opts.target; ChainError (nothing written) when the store cannot rebuild it."""
    started = time.monotonic()
    snapshots = [m for m in list_snapshots(opts.store, opts.keyring).trusted if m.verified]
    plan = plan_chain(snapshots, read_stream(opts.store, opts.keyring), opts.target)
    tool = opts.tool or EtcdTool()
    scratch = Path(tempfile.mkdtemp(prefix="etcdbackup-pitr-", dir=opts.work_dir))
    try:
        base_db = fetch_to_file(opts.store, plan.base, opts.keyring, scratch / "base.db", progress=False,
                                durable=False)
        with ThrowawayEtcd(base_db, scratch, opts.ports, etcd_binary=opts.etcd_binary, tool=tool) as etcd:
            if etcd.revision() != plan.base.etcd_revision:
                raise IntegrityError(f"base snapshot {plan.base.id} restores to revision {etcd.revision()}, not "
                                     f"the {plan.base.etcd_revision} its manifest records")
            replay_started = time.monotonic()
            with Replayer(etcd) as replayer:
                last = _replay(opts, plan, replayer)
                replay_seconds = time.monotonic() - replay_started
                size = etcd.snapshot_to(opts.output)
        status = tool.snapshot_status(str(opts.output))
        revision = last.revision if last else plan.base.etcd_revision
        if status.revision != revision:
            opts.output.unlink(missing_ok=True)
            raise IntegrityError(f"the rebuilt snapshot is at revision {status.revision}, not {revision}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return PitrReport(plan.base.id, plan.base.etcd_revision, [s.id for s in plan.segments], revision,
                      format_time(last.time) if last else "", replayer.revisions, replayer.events,
                      str(opts.output), size, round(replay_seconds, 3), round(time.monotonic() - started, 3))


def _replay(opts: PitrOptions, plan: ChainPlan, replayer: Replayer) -> RevisionRecord | None:
    """Apply the plan's revisions after the base up to its stop point; the last one applied."""
    last = None
    for seg in plan.segments:
        for rec in read_segment(opts.store, seg, opts.keyring):
            if rec.revision <= plan.base.etcd_revision:
                continue
            if rec.revision > plan.stop_revision or (plan.stop_time is not None and rec.time > plan.stop_time):
                return last
            replayer.apply(rec)
            last = rec
    return last
