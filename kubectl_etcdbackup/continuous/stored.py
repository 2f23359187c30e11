"""Reading the delta stream from a store: the authenticated segment manifests, gap and coverage records, and a
segment's revision records, every check passed (stored hash, container authentication bound to the manifest,
raw hash, record continuity)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import zstandard

from ..errors import EtcdBackupError, FormatError, IntegrityError, SnapshotNotFound
from ..format import Binding, Expected, open_frames
from ..keys import Keyring
from ..manifest import SnapshotManifest, parse_time
from ..stores import Store
from .chain import ChainWindow, StoredStream, chain_windows
from .segment import (
    COVERAGE_NAME,
    GAP_PREFIX,
    Coverage,
    Gap,
    RevisionRecord,
    SegmentManifest,
    chain_of,
    decode_records,
    first_revision_of,
    is_segment_manifest,
    segment_object_name,
)


def read_stream(store: Store, keyring: Keyring) -> StoredStream:
    """The stream's records. A segment manifest that cannot be read or trusted, or whose object is gone, is
    kept as the reason it is refused (by the first revision its name claims); an untrusted coverage record is
    an IntegrityError (it would move "the newest covered point"); an untrusted gap record is ignored."""
    names = set(store.list_names())
    stream = StoredStream([])
    for name in sorted(n for n in names if is_segment_manifest(n)):
        first = first_revision_of(name)
        assert first is not None
        obj = segment_object_name(name.removesuffix(".segjson"))
        stream.rejected_chains[first] = chain_of(name)
        if obj not in names:
            stream.rejected[first] = f"delta segment {name}: its object {obj} is missing"
            continue
        try:
            stream.segments.append(SegmentManifest.open(store.get_bytes(name), name, keyring))
        except SnapshotNotFound:
            continue  # deleted since the listing (pruned)
        except EtcdBackupError as e:
            stream.rejected[first] = f"delta segment {e}"
    for name in sorted(n for n in names if n.startswith(GAP_PREFIX)):
        try:
            stream.gaps.append(Gap.open(store.get_bytes(name), name, keyring))
        except EtcdBackupError:
            continue
    if COVERAGE_NAME in names:
        stream.coverage = Coverage.open(store.get_bytes(COVERAGE_NAME), COVERAGE_NAME, keyring)
    return stream


@dataclass(frozen=True)
class StreamSummary:
    """How far the stream reaches, read cheaply (one listing, one or two small GETs): for metrics and status."""

    chain: str
    covered_revision: int
    covered_time: datetime
    segments: int  # segment manifests in the store (counted by name)
    authenticated: bool  # False: read without a key (shown, never decided on)


def stream_summary(store: Store, keyring: Keyring | None, names: list[str] | None = None) -> StreamSummary | None:
    """The newest covered point (the coverage record, else the newest segment); None when the store has no
    stream. Without a keyring the records are read unauthenticated (a display only). EtcdBackupError when a
    record cannot be read or, with a keyring, trusted."""
    names = store.list_names() if names is None else names
    manifests = [n for n in names if is_segment_manifest(n)]
    if COVERAGE_NAME in names:
        data = store.get_bytes(COVERAGE_NAME)
        cov = Coverage.open(data, COVERAGE_NAME, keyring) if keyring else \
            Coverage.read_unauthenticated(data, COVERAGE_NAME)
        return StreamSummary(cov.chain, cov.revision, cov.at, len(manifests), keyring is not None)
    if not manifests:
        return None
    newest = max(manifests, key=lambda n: first_revision_of(n) or 0)
    data = store.get_bytes(newest)
    seg = SegmentManifest.open(data, newest, keyring) if keyring else \
        SegmentManifest.read_unauthenticated(data, newest)
    return StreamSummary(seg.chain, seg.last_revision, parse_time(seg.last_event_time), len(manifests),
                         keyring is not None)


def read_chains(store: Store, keyring: Keyring, snapshots: list[SnapshotManifest]) -> list[ChainWindow]:
    """The store's delta chains with their windows, from its snapshots (trusted, verified ones count)."""
    usable = [m for m in snapshots if m.verified and not m.untrusted_reason]
    return chain_windows(usable, read_stream(store, keyring))


@dataclass(frozen=True)
class SegmentCheck:
    id: str
    first_revision: int
    last_revision: int
    events: int
    problem: str  # "" when every check passed

    def as_dict(self) -> dict[str, object]:
        return {"segment": self.id, "revisions": f"{self.first_revision}..{self.last_revision}",
                "events": self.events, "status": self.problem or "ok"}


def check_chain(store: Store, keyring: Keyring, chain: ChainWindow) -> list[SegmentCheck]:
    """Every segment of the chain, in revision order, checked without replaying: its manifest authenticated,
    contiguous with the one before it (revisions and the `prev_segment` link; the first right after the base),
    its object's hashes, authenticated frames and records (read_segment). Refused manifests are rows too."""
    rows = [SegmentCheck(f"{chain.id}.seg-{rev:020d}", rev, rev, 0, why) for rev, why in chain.rejected.items()]
    prev = None
    for seg in chain.segments:
        problem = ""
        if prev is not None and seg.first_revision != prev.last_revision + 1:
            problem = (f"not contiguous: starts at revision {seg.first_revision}, the segment before it "
                       f"({prev.id}) ends at {prev.last_revision}")
        elif prev is not None and seg.prev_segment != prev.id:
            problem = f"links to {seg.prev_segment or 'nothing'} as the segment before it, not {prev.id}"
        elif prev is None and chain.base is not None and seg.first_revision != chain.base.etcd_revision + 1:
            problem = (f"the chain's first segment starts at revision {seg.first_revision}, not right after its "
                       f"base {chain.base.id} (revision {chain.base.etcd_revision})")
        if not problem:
            try:
                read_segment(store, seg, keyring)
            except EtcdBackupError as e:
                problem = str(e)
        rows.append(SegmentCheck(seg.id, seg.first_revision, seg.last_revision, seg.event_count, problem))
        prev = seg
    return sorted(rows, key=lambda r: r.first_revision)


def read_segment(store: Store, seg: SegmentManifest, keyring: Keyring) -> list[RevisionRecord]:
    """The segment's records, checked against its manifest; EtcdBackupError naming the segment otherwise."""
    try:
        return _read(store, seg, keyring)
    except EtcdBackupError as e:
        raise type(e)(f"delta segment {seg.id}: {e}") from None


def _read(store: Store, seg: SegmentManifest, keyring: Keyring) -> list[RevisionRecord]:
    try:
        stored = store.get_bytes(segment_object_name(seg.id))
    except SnapshotNotFound:
        raise IntegrityError(f"its object {segment_object_name(seg.id)} is missing") from None
    if len(stored) != seg.stored_size or hashlib.sha256(stored).hexdigest() != seg.stored_sha256:
        raise IntegrityError(f"stored object does not match its manifest (size {len(stored)} vs "
                             f"{seg.stored_size}, or sha256 differs): truncated or altered")
    expected = Expected(seg.cipher, Binding(seg.id, seg.created_at, seg.cluster_id), seg.raw_size, seg.raw_sha256)
    payload = b"".join(open_frames([stored], keyring, expected))
    try:
        raw = zstandard.ZstdDecompressor().decompress(payload, max_output_size=seg.raw_size) \
            if seg.codec == "zstd" else payload
    except zstandard.ZstdError as e:
        raise FormatError(f"zstd stream is corrupt: {e}") from None
    if len(raw) != seg.raw_size or hashlib.sha256(raw).hexdigest() != seg.raw_sha256:
        raise IntegrityError("decoded records do not match the manifest's sha256")
    records = list(decode_records(raw, "records"))
    revisions = [r.revision for r in records]
    if (not records or revisions[0] != seg.first_revision or revisions[-1] != seg.last_revision
            or any(b <= a for a, b in zip(revisions, revisions[1:], strict=False))
            or len(records) != seg.revision_count or sum(len(r.events) for r in records) != seg.event_count):
        raise IntegrityError("records do not match the revisions and counts its manifest records")
    return records
