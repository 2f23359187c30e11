"""What a foreign snapshot file is (pure): its layers told by their magic bytes, whether etcd's sha256 is appended
(told by the size, as etcdutl does), and when it was taken (from its name, as k3s/RKE2 and dated scripts write it).

File names are only hints: the kind of each layer comes from its content.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from .errors import FormatError
from .format import MAGIC
from .snapshot_hash import ETCD_HASH_SIZE

DB, GZIP, ZIP, GPG = "db", "gzip", "zip", "gpg"
SNIFF_BYTES = 32  # enough for every magic below
_BBOLT_MAGIC = (0xED0CDAED).to_bytes(4, "little")  # in the meta page, right after its 16-byte page header
_PGP_ARMOR = b"-----BEGIN PGP MESSAGE-----"
_PGP_ENCRYPTED_TAGS = (1, 3)  # public-key / symmetric-key encrypted session key: how encrypted files begin
_NAME_HINTS = (".gz", ".zip", ".gpg", ".pgp", ".asc", ".db")


def _openpgp_tag(first: int) -> int | None:
    """The packet tag of an OpenPGP packet header byte (old or new format), or None if it is none."""
    if not first & 0x80:
        return None
    return first & 0x3F if first & 0x40 else (first >> 2) & 0x0F


def sniff(head: bytes, name: str) -> str:
    """The kind of data that starts with `head` (the first SNIFF_BYTES, fewer only at the end of the data): DB (a
    bbolt db: etcd's snapshot), GZIP, ZIP or GPG. Raises FormatError for anything else; `name` only adds a hint."""
    if head[:2] == b"\x1f\x8b":
        return GZIP
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return ZIP
    if head.startswith(_PGP_ARMOR) or (head and _openpgp_tag(head[0]) in _PGP_ENCRYPTED_TAGS):
        return GPG
    if head[16:20] == _BBOLT_MAGIC:
        return DB
    if head.startswith(MAGIC):
        raise FormatError("this is a kubectl-etcdbackup object already: copy it with its manifest (.json) into "
                          "the store instead")
    if not head:
        raise FormatError("the data is empty")
    hint = next((f" (although the name ends in {ext})" for ext in _NAME_HINTS if name.endswith(ext)), "")
    raise FormatError(f"not an etcd snapshot: no bbolt db, gzip, zip or OpenPGP data{hint}")


def etcd_hash_present(size: int) -> bool | None:
    """Whether raw snapshot data of `size` bytes ends with etcd's sha256, by etcdutl's own rule: a bbolt db is
    whole pages (multiples of 512), so 32 bytes over means the hash follows. None: neither (truncated)."""
    if size % 512 == ETCD_HASH_SIZE:
        return True
    return False if size % 512 == 0 else None


ETCD_BIRTH = datetime(2013, 6, 1, tzinfo=UTC)  # no etcd snapshot is older: an earlier "time" is not one
_K3S = re.compile(r"-(\d{10})(?:\.zip)?$")  # etcd-snapshot-<node>-<unix seconds>[.zip], on-demand-<node>-<...>
_STAMP = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})[T_.-]?(\d{2})[:.-]?(\d{2})[:.-]?(\d{2})(?!\d)")


def name_time(name: str) -> datetime | None:
    """The time a snapshot's file name records: k3s/RKE2's unix seconds at the end, else the first date and time
    of day in it (2024-05-01T10:15:00Z, 20240501-101500, 2024-05-01_10-15-00 ...; taken as UTC), else None."""
    m = _K3S.search(name)
    if m:
        return datetime.fromtimestamp(int(m.group(1)), UTC)
    for m in _STAMP.finditer(name):
        try:
            y, mo, d, h, mi, s = (int(g) for g in m.groups())
            return datetime(y, mo, d, h, mi, s, tzinfo=UTC)
        except ValueError:
            continue  # digits that are no date (20241399...)
    return None


def original_time(name: str, mtime: float, now: datetime) -> tuple[datetime, str]:
    """When the snapshot was taken and what says so ("name" or "mtime"): the name's time when it is a plausible
    one (after etcd existed, not in the future), else the file's modification time (never later than now)."""
    t = name_time(name)
    if t is not None and ETCD_BIRTH <= t <= now:
        return t, "name"
    return min(datetime.fromtimestamp(mtime, UTC), now), "mtime"
