"""`snapshot pitr`: a snapshot file of the cluster at a revision or time, from full snapshots + delta stream."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from ..errors import UsageError
from . import render
from .common import KeyOptions, OutputOpt, S3EndpointOpt, S3RegionOpt, StoreOpt, grouped


def register(snapshot: typer.Typer) -> None:
    snapshot.command("pitr")(pitr_cmd)


def parse_time(text: str) -> datetime:
    """ISO 8601 (`2026-12-03T06:10:53.120Z`, `2026-12-03 07:10:53+01:00`); UTC when it names no offset."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--to-time: expected an ISO 8601 time such as 2026-12-03T06:10:53Z, got {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


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
    output: OutputOpt = "table",
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

    if to_revision is not None and to_time is not None:
        raise UsageError("give --to-revision or --to-time, not both")
    keyring = key.keyring()
    if keyring is None:
        raise UsageError("the delta stream is encrypted: give --encryption-key-file or --key-env")
    r = materialize(PitrOptions(
        open_store(store, s3_endpoint_url=s3_endpoint_url, s3_region=s3_region), keyring, Path(file),
        Target(to_revision, parse_time(to_time) if to_time else None), work_dir,
        ReplayPorts(replay_port, replay_port + 1) if replay_port else None, tool=EtcdTool(etcdutl)))
    row = {"output": r.output, "revision": r.revision, "time": r.time, "base": r.base_id,
           "segments": len(r.segments), "revisions": r.revisions_replayed, "events": r.events_replayed,
           "size": r.size, "replay_seconds": r.replay_seconds}
    render.rows([row], str(output), [(k, k.upper()) for k in row])
