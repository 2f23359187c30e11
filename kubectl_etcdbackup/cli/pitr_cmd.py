"""`snapshot pitr`: a snapshot file of the cluster at a revision or time, from full snapshots + delta stream."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from . import render
from .common import KeyOptions, OutputFormat, OutputOpt, S3EndpointOpt, S3RegionOpt, StoreOpt, grouped


def register(snapshot: typer.Typer) -> None:
    snapshot.command("pitr")(pitr_cmd)


@grouped
def pitr_cmd(
    store: StoreOpt, key: KeyOptions,
    file: Annotated[str, typer.Option("--file", "-f", help="where to write the etcd snapshot .db (mode 0600)")],
    to_revision: Annotated[int | None, typer.Option("--to-revision", min=1, help="the revision to rebuild")] = None,
    to_time: Annotated[str | None, typer.Option("--to-time", help="rebuild as of this time (ISO 8601, UTC "
                                                "unless an offset is given)")] = None,
    work_dir: Annotated[str | None, typer.Option(help="scratch space for the replay")] = None,
    replay_port: Annotated[int | None, typer.Option(help="127.0.0.1 port for the throwaway replay etcd (and the "
                                                    "next one for its peer URL); default: any free ports")] = None,
    etcdutl: Annotated[str | None, typer.Option(help="etcdutl binary (default: on PATH)")] = None,
    output: OutputOpt = OutputFormat.table,
    s3_endpoint_url: S3EndpointOpt = None,
    s3_region: S3RegionOpt = None,
) -> None:
    """Rebuild etcd at --to-revision or --to-time (default: the newest covered point) from the newest full
    snapshot before it and the delta segments after it; write a plain snapshot file."""
    from pathlib import Path

    from ..continuous.chain import Target
    from ..continuous.replay import ReplayPorts
    from ..etcd.tools import EtcdTool
    from ..stores import open_store
    from ..usecases.point_in_time import PitrOptions, materialize

    target = Target.parse(to_revision, to_time)
    keyring = key.keyring()
    if keyring is None:
        raise UsageError("the delta stream is encrypted: give --encryption-key-file or --key-env")
    r = materialize(PitrOptions(
        open_store(store, s3_endpoint_url=s3_endpoint_url, s3_region=s3_region), keyring, Path(file),
        target, work_dir,
        ReplayPorts(replay_port, replay_port + 1) if replay_port else None, tool=EtcdTool(etcdutl)))
    row = {"output": r.output, "revision": r.revision, "time": r.time, "base": r.base_id,
           "segments": len(r.segments), "revisions": r.revisions_replayed, "events": r.events_replayed,
           "size": r.size, "replay_seconds": r.replay_seconds}
    render.rows([row], str(output), [(k, k.upper()) for k in row])
