"""The snapshots in a store: list, resolve an id, save, delete. A snapshot = object + manifest."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from .errors import EtcdBackupError, SnapshotNotFound
from .manifest import MANIFEST_SUFFIX, OBJECT_SUFFIX, SnapshotManifest, manifest_name, object_name
from .stores import Store


@dataclass
class Listing:
    snapshots: list[SnapshotManifest]  # newest first
    orphans: list[str] = field(default_factory=list)  # objects without a manifest (failed or in-flight)
    problems: list[str] = field(default_factory=list)  # unreadable manifests


def list_snapshots(store: Store) -> Listing:
    names = set(store.list_names())
    listing = Listing([])
    for name in sorted(names):
        if not name.endswith(MANIFEST_SUFFIX):
            continue
        sid = name[: -len(MANIFEST_SUFFIX)]
        if sid + OBJECT_SUFFIX not in names:
            listing.problems.append(f"{sid}: manifest without its object")
            continue
        try:
            listing.snapshots.append(SnapshotManifest.from_json(store.get_bytes(name), f"manifest {name}"))
        except EtcdBackupError as e:
            listing.problems.append(str(e))
    listing.orphans = sorted(n for n in names if n.endswith(OBJECT_SUFFIX)
                             and n[: -len(OBJECT_SUFFIX)] + MANIFEST_SUFFIX not in names)
    listing.snapshots.sort(key=lambda m: (m.created_at, m.id), reverse=True)
    return listing


def warn_problems(listing: Listing) -> None:
    for p in listing.problems:
        print(f"warning: {p}", file=sys.stderr)
    if listing.orphans:
        print(f"note: {len(listing.orphans)} object(s) without a manifest (a backup in progress or one that "
              f"failed verification; not snapshots): {', '.join(listing.orphans[:3])}"
              f"{' ...' if len(listing.orphans) > 3 else ''}", file=sys.stderr)


def pick(snapshots: list[SnapshotManifest], ref: str, where: str) -> SnapshotManifest:
    """From a newest-first listing: `latest` (the newest verified snapshot), or an exact id."""
    for m in snapshots:
        if (m.verified if ref == "latest" else m.id == ref):
            return m
    raise SnapshotNotFound(f"no verified snapshot in {where}" if ref == "latest"
                           else f"snapshot {ref} not found in {where}")


def resolve(store: Store, ref: str) -> SnapshotManifest:
    """`latest` (newest verified snapshot), or an exact id (read directly, without listing)."""
    if ref == "latest":
        return pick(list_snapshots(store).snapshots, ref, store.url)
    try:
        data = store.get_bytes(manifest_name(ref))
    except SnapshotNotFound:
        raise SnapshotNotFound(f"snapshot {ref} not found in {store.url}") from None
    return SnapshotManifest.from_json(data, f"manifest of {ref}")


def save_manifest(store: Store, manifest: SnapshotManifest) -> None:
    """The commit point: after this the snapshot is listed and restorable."""
    store.put_bytes(manifest_name(manifest.id), manifest.to_json())


def delete_snapshot(store: Store, manifest: SnapshotManifest) -> None:
    # Manifest first: an interrupted delete leaves an unlisted orphan, never a listed snapshot without data.
    store.delete(manifest_name(manifest.id))
    store.delete(object_name(manifest.id))
