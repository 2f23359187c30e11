"""List the snapshots of a source and the delta chains of continuous backup with their restorable windows, and
describe one snapshot or one chain (its segments)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..catalog import legacy_note
from ..errors import EtcdBackupError, StoreError, UsageError
from ..keys import Keyring
from ..leftovers import LEFTOVER_MIN_AGE_SECONDS, find_leftovers
from ..manifest import SnapshotManifest, object_name
from ..textutil import extract_json
from .source import SnapshotSource, SourceSpec, open_source


@dataclass(frozen=True)
class ListOptions:
    source: SourceSpec
    keyring: Keyring | None = None
    allow_plaintext: bool = False
    chains: bool = False  # the chains are wanted (a volume in the cluster is asked for them only then)


@dataclass
class ListReport:
    url: str
    where: str
    snapshots: list[SnapshotManifest]  # newest first, trusted or not (each says which)
    problems: list[str] = field(default_factory=list)  # manifests that are not snapshots, and why
    notes: list[str] = field(default_factory=list)  # orphans, leftovers, what the cluster said
    chains: list[dict[str, Any]] = field(default_factory=list)  # ChainWindow.as_dict() of each, oldest first


def run_list(opts: ListOptions) -> ListReport:
    with open_source(opts.source) as src:
        listing = src.listing(opts.keyring, allow_plaintext=opts.allow_plaintext)
        report = ListReport(src.url, src.where, listing.snapshots, list(listing.problems), src.notes)
        report.chains = _chains(src, opts, listing.snapshots, report.notes)
        if listing.orphans:
            report.notes.append(
                f"{len(listing.orphans)} object(s) without a manifest (a backup in progress or one that failed "
                f"verification; not snapshots; prune removes them after a day): {', '.join(listing.orphans[:3])}"
                f"{' ...' if len(listing.orphans) > 3 else ''}")
        if src.store is not None:
            report.notes += _leftover_note(src.store)
    return report


def _chains(src: SnapshotSource, opts: ListOptions, snapshots: list[SnapshotManifest],
            notes: list[str]) -> list[dict[str, Any]]:
    if src.store is None:  # a volume in the cluster: ask next to it, with the cluster's key
        if not opts.chains:
            return []
        rows = extract_json(src.remote(["list", "--chains", "-o", "json"]), "[")
        if not isinstance(rows, list):
            raise StoreError("unexpected output of `kubectl-etcdbackup list --chains` in the cluster")
        return [r for r in rows if isinstance(r, dict)]
    if opts.keyring is None:
        from ..continuous.segment import is_segment_manifest

        if any(is_segment_manifest(n) for n in src.store.list_names()):
            notes.append("the store holds delta segments of continuous backup: give the key to see their chains")
        return []
    from ..continuous.stored import read_chains

    return [w.as_dict() for w in read_chains(src.store, opts.keyring, snapshots)]


def _leftover_note(store: object) -> list[str]:
    try:
        left = find_leftovers(store, datetime.now(UTC), 0.0)  # type: ignore[arg-type]
    except EtcdBackupError:
        return []
    if not left:
        return []
    return [f"{len(left)} leftover(s) of interrupted runs ({', '.join(sorted({x.kind for x in left}))}); prune "
            f"removes them once over {LEFTOVER_MIN_AGE_SECONDS / 3600:g} h old"]


@dataclass(frozen=True)
class DescribeOptions:
    source: SourceSpec
    ref: str
    keyring: Keyring | None = None
    allow_plaintext: bool = False


@dataclass
class DescribeReport:
    url: str
    where: str
    manifest: SnapshotManifest
    object_size: int | None  # as stored now (None: not checked from here)
    notes: list[str] = field(default_factory=list)


def run_describe(opts: DescribeOptions) -> DescribeReport:
    """One snapshot in full: its manifest, how far it is trusted, and its object as stored now."""
    with open_source(opts.source) as src:
        m = src.resolve(opts.ref, opts.keyring, allow_plaintext=opts.allow_plaintext)
        size = src.store.size(object_name(m.id)) if src.store is not None else None
        notes = [*src.notes, *legacy_note(m)]
        if size is not None and size != m.stored_size:
            notes.append(f"the stored object is {size} bytes, its manifest says {m.stored_size}: it will not verify")
        return DescribeReport(src.url, src.where, m, size, notes)


@dataclass
class DescribeChainReport:
    url: str
    where: str
    chain: dict[str, Any]  # ChainWindow.as_dict() plus "segment_list": one dict per segment
    notes: list[str] = field(default_factory=list)


def _segment_row(seg: Any) -> dict[str, Any]:
    return {"segment": seg.id, "first_revision": seg.first_revision, "last_revision": seg.last_revision,
            "revisions": seg.revision_count, "events": seg.event_count, "first_event_time": seg.first_event_time,
            "last_event_time": seg.last_event_time, "stored_size": seg.stored_size}


def run_describe_chain(opts: DescribeOptions) -> DescribeChainReport:
    """One delta chain (`latest`: the one being written): its window and every segment, as its manifests say
    (`verify --chain` reads and checks them)."""
    with open_source(opts.source) as src:
        if src.store is None:
            doc = extract_json(src.remote(["describe", "--chain", opts.ref, "-o", "json"]), "{")
            if not isinstance(doc, dict) or "chain" not in doc:
                raise StoreError("unexpected output of `kubectl-etcdbackup describe --chain` in the cluster")
            return DescribeChainReport(src.url, src.where, doc, src.notes)
        if opts.keyring is None:
            raise UsageError("delta chains are encrypted and authenticated: give --encryption-key-file or --key-env")
        from ..continuous.chain import pick_chain
        from ..continuous.stored import read_chains

        snapshots = src.listing(opts.keyring, allow_plaintext=opts.allow_plaintext).snapshots
        w = pick_chain(read_chains(src.store, opts.keyring, snapshots), opts.ref)
        notes = [*src.notes, *(f"refused: {why}" for why in w.rejected.values())]
        return DescribeChainReport(src.url, src.where, w.as_dict() | {"segment_list": [
            _segment_row(s) for s in w.segments]}, notes)
