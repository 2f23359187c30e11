"""Delete snapshots by id: also untrusted ones (that is what delete is for: planted or broken manifests), never
the newest trusted, verified snapshot unless forced."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..catalog import Listing
from ..errors import Refused, SnapshotNotFound, UsageError
from ..keys import Keyring
from ..manifest import manifest_name, object_name, validate_id
from .source import SnapshotSource, SourceSpec, open_source


@dataclass(frozen=True)
class DeleteOptions:
    source: SourceSpec
    ids: tuple[str, ...]
    keyring: Keyring | None = None
    force: bool = False  # also the newest trusted, verified snapshot (the last good one)


@dataclass
class DeleteTarget:
    id: str
    created: str  # "" when its manifest is missing or unreadable
    trust: str


@dataclass
class DeleteReport:
    url: str
    where: str
    targets: list[DeleteTarget]
    deleted: bool = False
    notes: list[str] = field(default_factory=list)


def plan_delete(opts: DeleteOptions) -> DeleteReport:
    """What `run_delete` would delete (for the question the command asks first); raises when an id is unknown or
    is the last good snapshot."""
    with open_source(opts.source) as src:
        return _targets(src, opts)


def run_delete(opts: DeleteOptions) -> DeleteReport:
    with open_source(opts.source) as src:
        report = _targets(src, opts)
        if src.store is None:
            src.remote(["delete", *opts.ids, "--yes", *(["--force"] if opts.force else [])], write=True)
        else:
            for sid in opts.ids:  # the manifest first: an interrupted delete leaves an orphan, never a snapshot
                src.store.delete(manifest_name(sid))
                src.store.delete(object_name(sid))
        report.deleted = True
        report.notes = src.notes
        return report


def _targets(src: SnapshotSource, opts: DeleteOptions) -> DeleteReport:
    if not opts.ids:
        raise UsageError("name at least one snapshot id to delete")
    for sid in opts.ids:
        validate_id(sid)
    listing = src.listing(opts.keyring)
    known = {m.id: m for m in listing.snapshots}
    names = set(src.store.list_names()) if src.store is not None else None
    targets = []
    for sid in opts.ids:
        m = known.get(sid)
        if m is not None:
            targets.append(DeleteTarget(sid, m.created_at, m.trust))
        elif names is not None and ({manifest_name(sid), object_name(sid)} & names):
            targets.append(DeleteTarget(sid, "", "not a snapshot (manifest missing or invalid)"))
        else:
            raise SnapshotNotFound(f"snapshot {sid} not found in {src.url}")
    _refuse_last_good(listing, opts)
    return DeleteReport(src.url, src.where, targets)


def _refuse_last_good(listing: Listing, opts: DeleteOptions) -> None:
    good = next((m for m in listing.trusted if m.verified), None)
    if good is not None and good.id in opts.ids and not opts.force:
        raise Refused(f"{good.id} is the newest trusted, verified snapshot (the last good one): not "
                             "deleted; pass --force if you mean it")
