"""Snapshot metadata manifest (pure): one JSON object per snapshot, written after the snapshot object.

A snapshot exists only once its manifest exists; the manifest is the commit point. Since version 2 a manifest
carries a MAC (HMAC-SHA256 under a subkey of the encryption key that sealed the snapshot) over its canonical JSON,
so whoever can write to the store but has no key cannot make or alter one that authenticates. Every field is
type- and range-checked when read; a manifest that fails is a problem to report, never a snapshot.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import FormatError
from .keys import KEY_SIZE, Keyring

MANIFEST_VERSION = 2
MAX_MANIFEST_BYTES = 64 << 10  # a real one is under 2 KiB
MAC_ALGORITHM = "hmac-sha256"
LEGACY_UNAUTHENTICATED = "version 1 manifest (made before manifests were authenticated)"
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
    mac: str = ""  # "hmac-sha256:<hex>" over canonical_json(everything else); "" when unencrypted
    # Not stored; set when the catalog reads the manifest. authenticated: its MAC verified under the keyring.
    # untrusted_reason: "" when decisions (latest, retention, freshness) may use it, else why not.
    authenticated: bool = field(default=False, repr=False, compare=False)
    untrusted_reason: str = field(default="", repr=False, compare=False)

    @property
    def created(self) -> datetime:
        return parse_time(self.created_at)

    def to_dict(self) -> dict[str, object]:
        """The stored fields (not the catalog's runtime ones)."""
        d = asdict(self)
        for name in _RUNTIME_FIELDS:
            d.pop(name)
        return d

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode()

    def seal(self, keyring: Keyring) -> None:
        """Set the MAC, under the key that sealed the snapshot (the keyring's newest)."""
        self.mac = manifest_mac(self.to_dict(), keyring.primary)

    @classmethod
    def from_json(cls, data: bytes, source: str = "manifest") -> SnapshotManifest:
        return cls.from_dict(parse_json(data, source), source)

    @classmethod
    def from_listing(cls, obj: object, source: str) -> SnapshotManifest:
        """As `list -o json` and `agent catalog` print it: the stored fields plus the catalog's judgement."""
        m = cls.from_dict(obj, source)
        assert isinstance(obj, dict)
        m.authenticated = obj.get("authenticated") is True
        m.untrusted_reason = str(obj.get("untrusted_reason") or "")
        return m


    @classmethod
    def from_dict(cls, obj: object, source: str = "manifest") -> SnapshotManifest:
        """From parsed JSON, every field checked; unknown keys (from newer writers, or `list -o json` extras) are
        ignored."""
        if not isinstance(obj, dict):
            raise FormatError(f"{source} is not a JSON object")
        version = obj.get("format_version", 1)
        if type(version) is not int or version < 1:
            raise FormatError(f"{source}: format_version must be a positive integer, got {version!r}")
        if version > MANIFEST_VERSION:
            raise FormatError(f"{source} has manifest version {version}, newer than this build")
        missing = [f.name for f in fields(cls) if f.name not in obj and f.name in _REQUIRED]
        if missing:
            raise FormatError(f"{source} is missing fields: {', '.join(missing)}")
        values = {}
        for name, check in _CHECKS.items():
            if name in obj:
                problem = check(obj[name])
                if problem:
                    raise FormatError(f"{source}: {name} {problem}")
                values[name] = obj[name]
        return cls(**values)

    @property
    def trust(self) -> str:
        """One word or phrase for `list`: authenticated, not authenticated (no key given), or why not trusted."""
        if self.untrusted_reason:
            return f"untrusted: {self.untrusted_reason}"
        return "authenticated" if self.authenticated else "unauthenticated (no key given)"

    def summary(self) -> dict[str, object]:
        """The fields shown by `list`."""
        return {
            "id": self.id, "created": self.created_at, "revision": self.etcd_revision,
            "keys": self.key_count, "etcd": self.etcd_version, "raw_size": self.raw_size,
            "stored_size": self.stored_size, "cipher": self.cipher, "verified": self.verified,
            "trust": self.trust,
        }


def parse_json(data: bytes, source: str = "manifest") -> dict[str, object]:
    """A manifest's JSON object, size-capped, not yet checked field by field."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise FormatError(f"{source} is {len(data)} bytes, over the {MAX_MANIFEST_BYTES}-byte limit for a manifest")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise FormatError(f"{source} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise FormatError(f"{source} is not a JSON object")
    return obj


def canonical_json(obj: dict[str, object]) -> bytes:
    """The bytes a MAC covers: every stored field but the MAC itself, sorted, without spaces."""
    body = {k: v for k, v in obj.items() if k != "mac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _mac_key(key: bytes) -> bytes:
    return HKDF(hashes.SHA256(), KEY_SIZE, None, b"kubectl-etcdbackup v2 manifest mac").derive(key)


def manifest_mac(obj: dict[str, object], key: bytes) -> str:
    return f"{MAC_ALGORITHM}:" + hmac.new(_mac_key(key), canonical_json(obj), hashlib.sha256).hexdigest()


def authenticate(obj: dict[str, object], keyring: Keyring) -> str:
    """"" when the parsed manifest's MAC verifies under the key it names (key_id), else why not."""
    mac = obj.get("mac")
    if not mac:
        return LEGACY_UNAUTHENTICATED if obj.get("format_version", 1) == 1 else "no MAC"
    key = keyring.find(bytes.fromhex(str(obj.get("key_id", ""))))
    if key is None:
        return f"sealed with key id {obj.get('key_id') or '(none)'}, which is not in the keyring"
    if not hmac.compare_digest(str(mac), manifest_mac(obj, key)):
        return "MAC does not verify (forged or altered)"
    return ""


def format_time(t: datetime) -> str:
    """UTC with milliseconds: fixed width, so the strings sort in time order."""
    t = t.astimezone(UTC)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z"


def parse_time(s: str) -> datetime:
    if not isinstance(s, str):
        raise FormatError(f"invalid time {s!r} in manifest")
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in s else "%Y-%m-%dT%H:%M:%SZ"
    try:
        return datetime.strptime(s, fmt).replace(tzinfo=UTC)
    except ValueError:
        raise FormatError(f"invalid time {s!r} in manifest") from None


# ---------------------------------------------------------------------------- field checks
# Each returns "" when the value is acceptable, else what is wrong with it.

_HEX = re.compile(r"^[0-9a-f]*$")
_MAX_COUNT = 1 << 62


def _string(max_len: int = 256, pattern: re.Pattern[str] | None = None) -> Callable[[object], str]:
    def check(v: object) -> str:
        if not isinstance(v, str) or len(v) > max_len:
            return f"must be a string of at most {max_len} characters"
        return "has an invalid form" if pattern is not None and not pattern.match(v) else ""
    return check


def _count(v: object) -> str:
    return "" if type(v) is int and 0 <= v < _MAX_COUNT else "must be a non-negative integer"


def _seconds(v: object) -> str:
    return "" if type(v) in (int, float) and 0 <= v < 1e9 else "must be a non-negative number"  # type: ignore[operator]


def _flag(v: object) -> str:
    return "" if isinstance(v, bool) else "must be true or false"


def _time(v: object) -> str:
    try:
        parse_time(v)  # type: ignore[arg-type]
    except FormatError:
        return "must be a UTC time like 2026-12-03T06:10:53.123Z"
    return ""


def _one_of(*allowed: str) -> Callable[[object], str]:
    return lambda v: "" if v in allowed else f"must be one of {', '.join(allowed)}"


def _sha256(v: object) -> str:
    return "" if isinstance(v, str) and len(v) == 64 and _HEX.match(v) else "must be 64 lowercase hex digits"


def _key_id(v: object) -> str:
    return "" if isinstance(v, str) and len(v) in (0, 16) and _HEX.match(v) else "must be 16 hex digits or empty"


def _small_dict(v: object) -> str:
    return "" if isinstance(v, dict) and len(json.dumps(v)) < 4096 else "must be a small JSON object"


_CHECKS: dict[str, Callable[[object], str]] = {
    "id": _string(201, _ID), "created_at": _time, "etcd_revision": _count, "key_count": _count,
    "etcd_version": _string(64), "cluster_id": _string(32, _HEX), "member_id": _string(32, _HEX),
    "member_endpoint": _string(512), "raw_size": _count, "stored_size": _count, "raw_sha256": _sha256,
    "stored_sha256": _sha256, "codec": _one_of("zstd", "none"), "cipher": _one_of("aes-256-gcm", "none"),
    "key_id": _key_id, "duration_seconds": _seconds, "verified": _flag, "verification": _small_dict,
    "db_total_keys": _count, "tool_version": _string(64), "format_version": _count,
    "mac": _string(128, re.compile(rf"^({MAC_ALGORITHM}:[0-9a-f]{{64}})?$")),
}
_RUNTIME_FIELDS = ("authenticated", "untrusted_reason")
_REQUIRED = ("id", "created_at", "etcd_revision", "key_count", "etcd_version", "cluster_id", "member_id",
             "member_endpoint", "raw_size", "stored_size", "raw_sha256", "stored_sha256", "codec", "cipher",
             "key_id", "duration_seconds")
