"""`agent stream`: continuous backup, a delta segment every --flush-interval beside the full snapshots."""

from __future__ import annotations

import json
import re
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import UsageError
from . import render
from .common import AgentStoreOptions, EtcdOptions, KeyOptions, grouped, seconds

if TYPE_CHECKING:
    from ..usecases.stream import StreamOptions, StreamReport

_SIZE = re.compile(r"^([0-9]+)\s*(|B|KiB|MiB|GiB|K|M|G)$")
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KiB": 1 << 10, "M": 1 << 20, "MiB": 1 << 20, "G": 1 << 30, "GiB": 1 << 30}


def register(agent: typer.Typer) -> None:
    agent.command("stream")(stream_cmd)


def parse_size(text: str, flag: str) -> int:
    """Bytes from `16MiB`, `512KiB`, `1048576` (K/M/G are powers of 1024 too)."""
    m = _SIZE.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise UsageError(f"{flag}: expected a size such as 16MiB or 512KiB, got {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _line(doc: dict[str, object]) -> None:
    """One JSON line on stdout (render.out flushes: the agent runs for days, its log must not wait)."""
    render.out(json.dumps(doc))


@grouped
def stream_cmd(
    store: AgentStoreOptions, etcd: EtcdOptions, key: KeyOptions,
    flush_interval: Annotated[str, typer.Option(envvar="ETCDBACKUP_FLUSH_INTERVAL",
                                                help="store a segment at least this often (the RPO)")] = "5s",
    segment_max_bytes: Annotated[str, typer.Option(envvar="ETCDBACKUP_SEGMENT_MAX_BYTES",
                                                   help="store a segment once this much is buffered")] = "16MiB",
    lock_stale_after: Annotated[str, typer.Option(envvar="ETCDBACKUP_LOCK_STALE_AFTER", help="take over the "
                                                  "store's writer lock once its holder has not renewed it for this "
                                                  "long (at least 6 flush intervals)")] = "30s",
) -> None:
    """Follow etcd and store every revision as delta segments (point-in-time restore: `snapshot pitr`). Runs
    until SIGTERM; one JSON line per stored segment on stdout. A second agent on the same store waits as a
    standby until the first stops renewing the store's writer lock."""
    from ..etcd.client import split_endpoints
    from ..usecases.stream import DEFAULT_FLUSH_INTERVAL, StreamOptions, run_stream

    keyring = key.keyring()
    if keyring is None:
        raise UsageError("the delta stream is always encrypted and authenticated: give --encryption-key-file or "
                         "--key-env")
    opts = StreamOptions(
        endpoints=split_endpoints(etcd.endpoints), store=store.open(create=True), keyring=keyring,
        tls=etcd.tls(),
        flush_interval=seconds(flush_interval, "--flush-interval") or DEFAULT_FLUSH_INTERVAL,
        segment_max_bytes=parse_size(segment_max_bytes, "--segment-max-bytes"),
        dial_timeout=seconds(etcd.dial_timeout, "--dial-timeout") or 5.0,
        idle_timeout=seconds(etcd.idle_timeout, "--idle-timeout") or 30.0,
        lock_stale_after=seconds(lock_stale_after, "--lock-stale-after") or 30.0,
        warn=lambda line: render.warn([line]),
        on_segment=lambda seg_id, first, last: _line({"segment": seg_id, "first_revision": first,
                                                      "last_revision": last}))
    _stopped(_until_sigterm(opts, run_stream))


def _until_sigterm(opts: StreamOptions, run: Callable[[StreamOptions], StreamReport]) -> StreamReport:
    """Run with SIGTERM (how Kubernetes stops a pod) setting opts.stop: the stream stores what it received and
    returns, and the command exits 0."""
    if threading.current_thread() is not threading.main_thread():
        return run(opts)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: opts.stop.set())
    try:
        return run(opts)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(report: StreamReport) -> None:
    _line({"stopped": True, "started_at_revision": report.started_at_revision,
           "covered_revision": report.covered_revision, "segments": report.segments, "revisions": report.revisions,
           "events": report.events, "chains": report.chains,
           "gaps": [[g.from_revision, g.to_revision] for g in report.gaps]})
