"""The delta stream's stored records (pure logic, no I/O): revision records, segment manifests, the coverage,
gap and writer-lock records, and their names in the store.

A segment holds the events of whole etcd revisions, in revision order, as a concatenation of records, all
integers big-endian:

    record
      length      4   bytes of the body that follows
      revision    8
      time_ms     8   when the stream received the revision (UTC, ms since the epoch)
      leases      2   number of (lease id, granted TTL) pairs that follow: leases first seen in this revision
      events      4   number of events that follow
      leases          (id int64, ttl int64) each
      events          (length 4, mvccpb.Event bytes) each

The records are zstd-compressed and sealed with the snapshot container (format.FrameSealer), bound to the
segment's id, creation time and cluster and to the raw records' size and sha256. The segment's manifest
(`<id>.segjson`) is written last and carries the manifest MAC (manifest.manifest_mac): a segment without an
authenticated manifest does not exist. Segment ids are `<chain>.seg-<first revision, 20 digits>`, where the chain
is the id of the full snapshot the stream started from; names end in .etcdseg/.segjson, so the snapshot
catalog (which lists *.json beside *.etcdbak) never takes them for snapshots.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Self, cast

from ..errors import FormatError, IntegrityError
from ..etcd._proto.kv_pb2 import Event
from ..keys import Keyring
from ..manifest import authenticate, format_time, manifest_mac, parse_json, parse_time, validate_id

SEGMENT_SUFFIX = ".etcdseg"
SEGMENT_MANIFEST_SUFFIX = ".segjson"
SEGMENT_INFIX = ".seg-"
COVERAGE_NAME = "stream-covered.segjson"
LOCK_NAME = "stream-lock.segjson"
GAP_PREFIX = "stream-gap-"
RECORD_VERSION = 1

_LEN = struct.Struct(">I")
_REV = struct.Struct(">QQHI")
_LEASE = struct.Struct(">qq")


@dataclass
class RevisionRecord:
    """One etcd revision: its events (each with its full KeyValue) and the TTLs of leases first seen in it."""

    revision: int
    time_ms: int
    events: list[Event]
    leases: dict[int, int] = field(default_factory=dict)  # lease id -> granted TTL in seconds (0: unknown)

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.time_ms / 1000, UTC)


def encode_record(rec: RevisionRecord) -> bytes:
    parts = [_REV.pack(rec.revision, rec.time_ms, len(rec.leases), len(rec.events))]
    parts += [_LEASE.pack(lid, ttl) for lid, ttl in sorted(rec.leases.items())]
    for ev in rec.events:
        data = ev.SerializeToString()
        parts += [_LEN.pack(len(data)), data]
    body = b"".join(parts)
    return _LEN.pack(len(body)) + body


def decode_records(data: bytes, source: str) -> Iterator[RevisionRecord]:
    """The records of a segment's raw bytes, in order; FormatError naming `source` at the first bad byte."""
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        if pos + _LEN.size > len(view):
            raise FormatError(f"{source}: truncated record at byte {pos}")
        (length,) = _LEN.unpack_from(view, pos)
        end = pos + _LEN.size + length
        if end > len(view):
            raise FormatError(f"{source}: truncated record at byte {pos}")
        yield _decode_body(view[pos + _LEN.size:end], f"{source} (record at byte {pos})")
        pos = end


def _decode_body(body: memoryview, source: str) -> RevisionRecord:
    try:
        revision, time_ms, n_leases, n_events = _REV.unpack_from(body)
        pos = _REV.size
        leases = {}
        for _ in range(n_leases):
            lid, ttl = _LEASE.unpack_from(body, pos)
            leases[lid] = ttl
            pos += _LEASE.size
        events = []
        for _ in range(n_events):
            (n,) = _LEN.unpack_from(body, pos)
            if pos + _LEN.size + n > len(body):
                raise FormatError(f"{source}: event overruns its record")
            ev = Event()
            ev.ParseFromString(bytes(body[pos + _LEN.size:pos + _LEN.size + n]))
            events.append(ev)
            pos += _LEN.size + n
    except (struct.error, ValueError) as e:  # protobuf's DecodeError is a ValueError
        raise FormatError(f"{source}: corrupt record ({e})") from None
    if pos != len(body):
        raise FormatError(f"{source}: {len(body) - pos} stray bytes after its events")
    if any(ev.kv.mod_revision != revision for ev in events):
        raise FormatError(f"{source}: an event's mod revision differs from its record's revision {revision}")
    return RevisionRecord(revision, time_ms, events, leases)


# ---------------------------------------------------------------------------- names


def segment_id(chain: str, first_revision: int) -> str:
    return validate_id(f"{chain}{SEGMENT_INFIX}{first_revision:020d}")


def segment_object_name(seg_id: str) -> str:
    return seg_id + SEGMENT_SUFFIX


def segment_manifest_name(seg_id: str) -> str:
    return seg_id + SEGMENT_MANIFEST_SUFFIX


def first_revision_of(name: str) -> int | None:
    """The first revision a segment manifest's or object's name claims, or None for any other name."""
    stem = name.removesuffix(SEGMENT_MANIFEST_SUFFIX).removesuffix(SEGMENT_SUFFIX)
    _, infix, digits = stem.rpartition(SEGMENT_INFIX)
    return int(digits) if infix and digits.isdigit() and len(digits) == 20 else None


def chain_of(name: str) -> str:
    """The chain (base snapshot id) a segment's manifest or object name claims ("" for any other name)."""
    stem = name.removesuffix(SEGMENT_MANIFEST_SUFFIX).removesuffix(SEGMENT_SUFFIX)
    return stem.rpartition(SEGMENT_INFIX)[0] if first_revision_of(name) is not None else ""


def is_segment_manifest(name: str) -> bool:
    return name.endswith(SEGMENT_MANIFEST_SUFFIX) and first_revision_of(name) is not None


def gap_name(from_revision: int) -> str:
    return f"{GAP_PREFIX}{from_revision:020d}{SEGMENT_MANIFEST_SUFFIX}"


# ---------------------------------------------------------------------------- authenticated records


def _check_fields(cls: type, obj: dict[str, object], source: str) -> dict[str, object]:
    """The dataclass's fields from obj, each of its declared type (int, str); FormatError naming the first bad one."""
    values = {}
    for f in fields(cls):
        want = {"int": int, "str": str}[str(f.type)]
        if f.name not in obj:
            raise FormatError(f"{source} is missing field {f.name}")
        v = obj[f.name]
        if type(v) is not want or (want is int and not 0 <= v < 1 << 63):  # type: ignore[operator]
            raise FormatError(f"{source}: {f.name} must be {'a non-negative integer' if want is int else 'a string'}")
        values[f.name] = v
    return values


class _Record:
    """Shared by the stored JSON records: sealed with the manifest MAC under the keyring's newest key."""

    kind = ""

    def seal(self, keyring: Keyring) -> bytes:
        obj: dict[str, object] = asdict(self)  # type: ignore[call-overload]
        obj["kind"] = self.kind
        obj["key_id"] = keyring.primary_id.hex()
        obj["mac"] = manifest_mac(obj, keyring.primary)
        return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def open(cls, data: bytes, name: str, keyring: Keyring) -> Self:
        """Parse, authenticate (IntegrityError naming `name` and why) and check every field."""
        source = name
        obj = parse_json(data, source)
        if obj.get("kind") != cls.kind:
            raise FormatError(f"{source} is not a {cls.kind} record")
        reason = authenticate(obj, keyring)
        if reason:
            raise IntegrityError(f"{source} is not trusted: {reason}")
        return cls(**_check_fields(cls, obj, source))

    @classmethod
    def read_unauthenticated(cls, data: bytes, name: str) -> Self:
        """Parse and check every field WITHOUT the MAC: for what is only shown (`status` has no key), never for a
        decision."""
        obj = parse_json(data, name)
        if obj.get("kind") != cls.kind:
            raise FormatError(f"{name} is not a {cls.kind} record")
        return cls(**_check_fields(cls, obj, name))


@dataclass
class SegmentManifest(_Record):
    """What a stored segment holds; the commit point of the segment."""

    kind = "etcd-delta-segment"
    id: str
    chain: str  # id of the full snapshot this stream started from
    cluster_id: str
    created_at: str
    first_revision: int
    last_revision: int
    revision_count: int
    event_count: int
    first_event_time: str
    last_event_time: str
    raw_size: int
    raw_sha256: str
    stored_size: int
    stored_sha256: str
    codec: str
    cipher: str
    prev_segment: str  # id of the segment before it in the stream ("" for a chain's first)
    format_version: int = RECORD_VERSION

    @classmethod
    def open(cls, data: bytes, name: str, keyring: Keyring) -> SegmentManifest:
        m: SegmentManifest = super().open(data, name, keyring)
        if segment_manifest_name(m.id) != name:
            raise IntegrityError(f"{name} describes segment {m.id}: it was renamed")
        if not m.first_revision <= m.last_revision or m.first_revision != first_revision_of(name):
            raise FormatError(f"{name}: revisions {m.first_revision}..{m.last_revision} do not match its name")
        return m


@dataclass
class Coverage(_Record):
    """How far the stream is known complete: every event up to `revision` is stored, as of `time`."""

    kind = "etcd-delta-coverage"
    chain: str
    cluster_id: str
    revision: int
    time: str

    @property
    def at(self) -> datetime:
        return parse_time(self.time)


@dataclass
class Gap(_Record):
    """Revisions the stream could not record (etcd had compacted them); a new chain starts after them."""

    kind = "etcd-delta-gap"
    from_revision: int
    to_revision: int  # the new chain's base snapshot revision
    new_chain: str
    recorded_at: str
    reason: str


@dataclass
class WriterLock:
    """Who writes the stream (unauthenticated: it coordinates honest replicas, it proves nothing)."""

    owner: str
    heartbeat: str  # UTC time of the owner's last renewal

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> WriterLock:
        try:
            return cls(**cast(dict[str, Any], _check_fields(cls, parse_json(data, LOCK_NAME), LOCK_NAME)))
        except FormatError:
            return cls("(unreadable)", format_time(datetime.fromtimestamp(0, UTC)))
