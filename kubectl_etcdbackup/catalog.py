"""The snapshots in a store: list, resolve an id, save, delete. A snapshot = object + manifest.

Reading a manifest judges it: a manifest that does not parse or fails a field check is a problem, never a
snapshot; one whose name is not its id is refused; with a keyring, one whose MAC does not verify (or that has
none), a plaintext one (unless allowed) and one dated in the future are listed with the reason but never used
for a decision (`latest`, retention, freshness).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .errors import EtcdBackupError, FormatError, IntegrityError, SnapshotNotFound
from .keys import Keyring
from .manifest import (
    LEGACY_UNAUTHENTICATED,
    MANIFEST_SUFFIX,
    OBJECT_SUFFIX,
    SnapshotManifest,
    authenticate,
    manifest_name,
    object_name,
    parse_json,
)
from .stores import Store

FUTURE_SKEW = timedelta(minutes=5)  # clocks disagree a little; a manifest dated further ahead is not fresh


@dataclass(frozen=True)
class Trust:
    """How manifests are judged: the keyring that authenticates them (None: nothing can be), whether plaintext
    snapshots may be used while a keyring is given, and the time against which "in the future" is measured."""

    keyring: Keyring | None = None
    allow_plaintext: bool = False
    now: datetime | None = None

    def judge(self, obj: dict[str, object], m: SnapshotManifest) -> None:
        """Set m.authenticated and m.untrusted_reason."""
        reason = ""
        if self.keyring is not None:
            if m.cipher == "none":
                reason = "" if self.allow_plaintext else "plaintext snapshot: nothing proves who made it " \
                                                          "(--allow-plaintext to use it)"
            else:
                reason = authenticate(obj, self.keyring)
                m.authenticated = not reason
        if m.created > (self.now or datetime.now(UTC)) + FUTURE_SKEW:
            reason = f"created_at {m.created_at} is in the future"
        m.untrusted_reason = reason


@dataclass
class Listing:
    snapshots: list[SnapshotManifest]  # newest first, trusted or not
    orphans: list[str] = field(default_factory=list)  # objects without a manifest (failed or in-flight)
    problems: list[str] = field(default_factory=list)  # unreadable or invalid manifests

    @property
    def trusted(self) -> list[SnapshotManifest]:
        """The snapshots every decision may use (latest, retention, freshness): authenticated under the key
        when one is given, and not dated in the future. Newest first."""
        return [m for m in self.snapshots if not m.untrusted_reason]


def read_manifest(data: bytes, name: str, trust: Trust) -> SnapshotManifest:
    """Parse and check a manifest stored as `name`, and judge whether it may be trusted."""
    source = f"manifest {name}"
    obj = parse_json(data, source)
    m = SnapshotManifest.from_dict(obj, source)
    if manifest_name(m.id) != name:
        raise FormatError(f"{source} describes snapshot {m.id}, not the one its name says: ignored")
    trust.judge(obj, m)
    return m


def list_snapshots(store: Store, keyring: Keyring | None = None, *, now: datetime | None = None,
                   allow_plaintext: bool = False) -> Listing:
    """Every snapshot in the store, newest first. A bad manifest is a problem in the listing, never an error."""
    trust = Trust(keyring, allow_plaintext, now)
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
            listing.snapshots.append(read_manifest(store.get_bytes(name), name, trust))
        except SnapshotNotFound:
            continue  # deleted since the listing
        except EtcdBackupError as e:
            listing.problems.append(str(e))
    listing.orphans = sorted(n for n in names if n.endswith(OBJECT_SUFFIX)
                             and n[: -len(OBJECT_SUFFIX)] + MANIFEST_SUFFIX not in names)
    listing.snapshots.sort(key=lambda m: (m.created_at, m.id), reverse=True)
    return listing


def pick(snapshots: list[SnapshotManifest], ref: str, where: str) -> SnapshotManifest:
    """From a newest-first listing: `latest` (the newest trusted, verified snapshot), or an exact id.

    An exact id that is not trusted is refused with the reason, except a version 1 snapshot (made before
    manifests were authenticated), which stays readable: the caller flags it.
    """
    if ref == "latest":
        for m in snapshots:
            if m.verified and not m.untrusted_reason:
                return m
        untrusted = [m for m in snapshots if m.untrusted_reason]
        hint = (f" ({len(untrusted)} not trusted, e.g. {untrusted[0].id}: {untrusted[0].untrusted_reason})"
                if untrusted else "")
        raise SnapshotNotFound(f"no verified snapshot in {where}{hint}")
    for m in snapshots:
        if m.id == ref:
            if m.untrusted_reason and m.untrusted_reason != LEGACY_UNAUTHENTICATED:
                raise IntegrityError(f"snapshot {ref} in {where} is not trusted: {m.untrusted_reason}")
            return m
    raise SnapshotNotFound(f"snapshot {ref} not found in {where}")


def legacy_note(m: SnapshotManifest) -> list[str]:
    """What to tell the operator when an explicitly named snapshot is a version 1 one."""
    if m.untrusted_reason == LEGACY_UNAUTHENTICATED:
        return [f"{m.id}: {LEGACY_UNAUTHENTICATED}; its object is still authenticated frame by frame"]
    return []


def resolve(store: Store, ref: str, keyring: Keyring | None = None, *, allow_plaintext: bool = False,
            ) -> SnapshotManifest:
    """`latest` (newest trusted, verified snapshot), or an exact id (read directly, without listing)."""
    if ref == "latest":
        return pick(list_snapshots(store, keyring, allow_plaintext=allow_plaintext).snapshots, ref, store.url)
    name = manifest_name(ref)
    try:
        data = store.get_bytes(name)
    except SnapshotNotFound:
        raise SnapshotNotFound(f"snapshot {ref} not found in {store.url}") from None
    return pick([read_manifest(data, name, Trust(keyring, allow_plaintext))], ref, store.url)


def save_manifest(store: Store, manifest: SnapshotManifest, keyring: Keyring | None) -> None:
    """The commit point: after this the snapshot is listed and restorable. Sealed with the keyring's newest key."""
    if keyring is not None:
        manifest.seal(keyring)
    store.put_bytes(manifest_name(manifest.id), manifest.to_json())


def delete_snapshot(store: Store, manifest: SnapshotManifest) -> None:
    # Manifest first: an interrupted delete leaves an unlisted orphan, never a listed snapshot without data.
    store.delete(manifest_name(manifest.id))
    store.delete(object_name(manifest.id))
