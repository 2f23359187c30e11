"""Snapshot metadata manifest (pure): one JSON object per snapshot, written after the snapshot object.

A snapshot exists only once its manifest exists; the manifest is the commit point.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime

from .errors import FormatError

MANIFEST_VERSION = 1
OBJECT_SUFFIX = ".etcdbak"
MANIFEST_SUFFIX = ".json"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def new_snapshot_id(now: datetime, prefix: str = "etcd") -> str:
    """Sortable by time (to the millisecond), unique enough for concurrent writers: etcd-20261127T071752123Z-3f9a."""
    t = now.astimezone(UTC)
    return f"{prefix}-{t:%Y%m%dT%H%M%S}{t.microsecond // 1000:03d}Z-{secrets.token_hex(2)}"


_ID_TIME = re.compile(r"-(\d{8}T\d{6})(\d{3})?Z-[0-9a-f]+$")


def id_time(snapshot_id: str) -> datetime | None:
    """When a snapshot id was made (ids carry their UTC creation time), or None for a foreign name."""
    m = _ID_TIME.search(snapshot_id)
    if not m:
        return None
    t = datetime.strptime(m.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    return t.replace(microsecond=int(m.group(2) or 0) * 1000)


def validate_id(snapshot_id: str) -> str:
    if not _ID.match(snapshot_id) or snapshot_id.endswith((OBJECT_SUFFIX, MANIFEST_SUFFIX)):
        raise FormatError(f"invalid snapshot id {snapshot_id!r}")
    return snapshot_id


def object_name(snapshot_id: str) -> str:
    return validate_id(snapshot_id) + OBJECT_SUFFIX


def manifest_name(snapshot_id: str) -> str:
    return validate_id(snapshot_id) + MANIFEST_SUFFIX


@dataclass
class SnapshotManifest:
    id: str
    created_at: str  # UTC, ISO 8601 with milliseconds and Z
    etcd_revision: int
    key_count: int  # live keys when the snapshot started
    etcd_version: str
    cluster_id: str  # hex
    member_id: str  # hex
    member_endpoint: str
    raw_size: int  # bytes of the etcd snapshot (db + etcd's appended sha256)
    stored_size: int  # bytes of the stored object
    raw_sha256: str
    stored_sha256: str
    codec: str  # zstd | none
    cipher: str  # aes-256-gcm | none
    key_id: str  # hex fingerprint of the key, "" when unencrypted
    duration_seconds: float
    verified: bool = False
    verification: dict[str, object] = field(default_factory=dict)
    db_total_keys: int = 0  # bbolt keys as `snapshot status` counts them (all revisions)
    tool_version: str = ""
    format_version: int = MANIFEST_VERSION

    @property
    def created(self) -> datetime:
        return parse_time(self.created_at)

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, source: str = "manifest") -> SnapshotManifest:
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise FormatError(f"{source} is not valid JSON") from None
        return cls.from_dict(obj, source)

    @classmethod
    def from_dict(cls, obj: object, source: str = "manifest") -> SnapshotManifest:
        """From parsed JSON; unknown keys (from newer writers, or `list -o json` extras) are ignored."""
        if not isinstance(obj, dict):
            raise FormatError(f"{source} is not a JSON object")
        if obj.get("format_version", MANIFEST_VERSION) > MANIFEST_VERSION:
            raise FormatError(f"{source} has manifest version {obj['format_version']}, newer than this build")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in obj.items() if k in known})
        except TypeError as e:
            raise FormatError(f"{source} is missing fields: {e}") from None

    def summary(self) -> dict[str, object]:
        """The fields shown by `list`."""
        return {
            "id": self.id, "created": self.created_at, "revision": self.etcd_revision,
            "keys": self.key_count, "etcd": self.etcd_version, "raw_size": self.raw_size,
            "stored_size": self.stored_size, "cipher": self.cipher, "verified": self.verified,
        }


def format_time(t: datetime) -> str:
    """UTC with milliseconds: fixed width, so the strings sort in time order."""
    t = t.astimezone(UTC)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z"


def parse_time(s: str) -> datetime:
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in s else "%Y-%m-%dT%H:%M:%SZ"
    try:
        return datetime.strptime(s, fmt).replace(tzinfo=UTC)
    except ValueError:
        raise FormatError(f"invalid time {s!r} in manifest") from None
