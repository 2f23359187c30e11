"""Point-in-time: a plain etcd snapshot file of the cluster as it was at a revision or a time, rebuilt from the
newest full snapshot at or before the target and the delta segments after it.

The chain is checked before anything is restored (continuous.chain); every segment is checked as it is read
(continuous.stored). The base is restored into a scratch dir, the revisions replayed on a throwaway etcd, and the
result saved as `output` (mode 0600, under its final name only once complete, then checked by `snapshot status`:
its revision must be the last one replayed). The scratch dir is removed whatever happens.

`restore --to-revision/--to-time` uses `plan_point` (which revision, from which base and segments: its dry run)
and `rebuilt_snapshot`: the rebuilt db sealed (no compression) under the keyring's newest key into a private
scratch store, as an ordinary snapshot, so the member is restored from it by the plain restore path, every check
included.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..catalog import list_snapshots
from ..continuous.chain import ChainPlan, Target, plan_chain
from ..continuous.replay import Replayer, ReplayPorts, ThrowawayEtcd
from ..continuous.segment import RevisionRecord
from ..continuous.stored import read_segment, read_stream
from ..errors import IntegrityError
from ..etcd.tools import EtcdTool
from ..fetch import fetch_to_file
from ..format import Binding
from ..keys import Keyring
from ..manifest import SnapshotManifest, format_time, object_name
from ..sealing import SealingStream
from ..stores import Store, open_store


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


@dataclass
class PointPlan:
    """What a point-in-time restore will rebuild: the exact revision, from which base and segments."""

    chain: ChainPlan
    revision: int
    time: str  # when the stream received that revision ("" when it is the base's)

    @property
    def snapshot_id(self) -> str:
        """The rebuilt snapshot's id: the same on every member restoring the same point (its cluster token)."""
        return f"{self.chain.base.id}-r{self.revision}"

    def as_dict(self) -> dict[str, Any]:
        return {"base_snapshot": self.chain.base.id, "base_revision": self.chain.base.etcd_revision,
                "revision": self.revision, "time": self.time or None,
                "segments": [s.id for s in self.chain.segments]}

    def step(self) -> str:
        segs = self.chain.segments
        named = (segs[0].id if len(segs) == 1 else f"{segs[0].id} .. {segs[-1].id}") if segs else "none"
        return (f"rebuild revision {self.revision}: fetch base snapshot {self.chain.base.id} (revision "
                f"{self.chain.base.etcd_revision}), replay {len(segs)} delta segment(s) ({named}) on a throwaway "
                "etcd, save it and seal it into a private scratch store")


def plan_point(store: Store, keyring: Keyring, target: Target) -> PointPlan:
    """The exact revision `target` means and the chain that rebuilds it (ChainError when none can). A time target
    reads the plan's last segment to find the last revision received by then."""
    snapshots = [m for m in list_snapshots(store, keyring).trusted if m.verified]
    plan = plan_chain(snapshots, read_stream(store, keyring), target)
    last = None
    if plan.segments:
        for rec in read_segment(store, plan.segments[-1], keyring):
            if rec.revision > plan.stop_revision or (plan.stop_time is not None and rec.time > plan.stop_time):
                break
            if rec.revision > plan.base.etcd_revision:
                last = rec
    return PointPlan(plan, last.revision if last else plan.base.etcd_revision, format_time(last.time) if last else "")


@contextlib.contextmanager
def rebuilt_snapshot(store: Store, keyring: Keyring, point: PointPlan, *, work_dir: str | None = None,
                     tool: EtcdTool | None = None) -> Iterator[tuple[Store, SnapshotManifest, PitrReport]]:
    """For the block: a private scratch store holding the rebuilt db at point.revision as a sealed snapshot (id
    point.snapshot_id), its manifest and how it was made. Removed afterwards, whatever happens."""
    scratch = Path(tempfile.mkdtemp(prefix="etcdbackup-pitr-restore-", dir=work_dir))
    try:
        db = scratch / "rebuilt.db"
        report = materialize(PitrOptions(store, keyring, db, Target(revision=point.revision), str(scratch),
                                         tool=tool))
        sealed_store = open_store(f"file://{scratch / 'store'}", create=True)
        manifest = _seal(sealed_store, db, keyring, point, report)
        db.unlink()
        yield sealed_store, manifest, report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _seal(store: Store, db: Path, keyring: Keyring, point: PointPlan, report: PitrReport) -> SnapshotManifest:
    started = time.monotonic()
    base = point.chain.base
    created = format_time(datetime.now(UTC))
    with store.writer(object_name(point.snapshot_id), private=True) as w:
        stream = SealingStream(w, keyring.primary, Binding(point.snapshot_id, created, base.cluster_id),
                               compress=False)
        with open(db, "rb") as f:
            while chunk := f.read(1 << 20):
                stream.add(chunk)
        stream.check.check("the rebuilt snapshot")
        sealed = stream.finish()
        w.commit()
    return SnapshotManifest(
        id=point.snapshot_id, created_at=created, etcd_revision=report.revision, key_count=0,
        etcd_version=base.etcd_version, cluster_id=base.cluster_id, member_id=base.member_id,
        member_endpoint=f"rebuilt:{base.id}+{len(report.segments)} segments", raw_size=sealed.raw_size,
        stored_size=sealed.stored_size, raw_sha256=sealed.raw_sha256, stored_sha256=sealed.stored_sha256,
        codec="none", cipher="aes-256-gcm", key_id=keyring.primary_id.hex(),
        duration_seconds=round(report.total_seconds + time.monotonic() - started, 3), verified=True)
