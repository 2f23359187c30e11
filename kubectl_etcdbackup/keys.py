"""The encryption keyring: one or more 32-byte keys, base64, one per line, newest first, from a file (a mounted
Secret) or an environment variable. The newest key seals new snapshots; any key in the ring opens the
snapshots it sealed (the container and the manifest name their key by a non-secret key id). Rotation is: put a
new key on the first line, keep the old ones below for as long as snapshots sealed by them are kept.

The keys never come from argv and are never logged; only their key ids are shown. Like ssh with a private
key, a key file that other users could read is refused (unless the caller explicitly allows it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import EncryptionKeyError

KEY_SIZE = 32


def key_id(key: bytes) -> bytes:
    """Non-secret fingerprint of a key, stored so a wrong key is named as such before any decryption."""
    return hashlib.sha256(b"kubectl-etcdbackup key id" + key).digest()[:8]


@dataclass(frozen=True)
class Keyring:
    """Keys, newest first. `primary` seals; `find(key id)` opens."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise EncryptionKeyError("the keyring is empty")
        for k in self.keys:
            if len(k) != KEY_SIZE:
                raise EncryptionKeyError(f"encryption keys must be {KEY_SIZE} bytes, got {len(k)}")

    @classmethod
    def of(cls, *keys: bytes) -> Keyring:
        return cls(tuple(keys))

    @property
    def primary(self) -> bytes:
        return self.keys[0]

    @property
    def primary_id(self) -> bytes:
        return key_id(self.primary)

    @property
    def ids(self) -> list[str]:
        return [key_id(k).hex() for k in self.keys]

    def find(self, kid: bytes) -> bytes | None:
        return next((k for k in self.keys if key_id(k) == kid), None)

    def __repr__(self) -> str:  # never the key bytes, even in a traceback
        return f"Keyring(ids={self.ids})"


def decode_keyring(text: str | bytes, source: str) -> Keyring:
    """Parse a key file's text: one base64 key per line (newest first); blank lines and `#` comments ignored."""
    raw = text.decode(errors="replace") if isinstance(text, bytes) else text
    keys: list[bytes] = []
    for n, line in enumerate(raw.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = base64.b64decode(line.encode(), validate=True)
        except (binascii.Error, ValueError):
            raise EncryptionKeyError(f"encryption key in {source} (line {n}) is not valid base64") from None
        if len(key) != KEY_SIZE:
            raise EncryptionKeyError(
                f"encryption key in {source} (line {n}) decodes to {len(key)} bytes, need {KEY_SIZE} "
                "(make one with: kubectl-etcdbackup keygen)")
        keys.append(key)
    if not keys:
        raise EncryptionKeyError(f"no encryption key in {source}")
    return Keyring(tuple(keys))


def check_key_file_permissions(path: str) -> None:
    """Refuse a key file that users other than its owner could read, as ssh does with private keys.

    The one layout allowed with group bits is Kubernetes' fsGroup: a Secret volume file whose group is one of this
    process's own groups other than root's (the kubelet gives the pod's processes that group), so the only other
    readers are this pod's own processes.
    """
    st = os.stat(path)  # follows the ..data symlinks of a Secret volume
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o007:
        raise EncryptionKeyError(
            f"key file {path} is readable by others (mode {mode:04o}); chmod 600 it "
            "(or pass --allow-insecure-key-file)")
    if mode & 0o070:
        fs_group = st.st_gid != 0 and st.st_gid in {os.getegid(), *os.getgroups()}
        if not fs_group:
            raise EncryptionKeyError(
                f"key file {path} is readable by its group (mode {mode:04o}); chmod 600 it "
                "(or pass --allow-insecure-key-file)")


def load_keyring(key_file: str | None, key_env: str | None, *, allow_insecure_file: bool = False,
                 ) -> Keyring | None:
    """The keyring from a file (--encryption-key-file) or an env var NAME (--key-env); None when neither is given."""
    if key_file and key_env:
        raise EncryptionKeyError("give the key with --encryption-key-file or --key-env, not both")
    if key_file:
        try:
            if not allow_insecure_file:
                check_key_file_permissions(key_file)
            return decode_keyring(Path(key_file).read_bytes(), f"file {key_file}")
        except OSError as e:
            raise EncryptionKeyError(f"cannot read key file {key_file}: {e.strerror}") from None
    if key_env:
        value = os.environ.get(key_env)
        if value is None:
            raise EncryptionKeyError(f"environment variable {key_env} (named by --key-env) is not set")
        return decode_keyring(value, f"environment variable {key_env}")
    return None


def generate_key() -> str:
    """A new random key, base64 encoded, ready to put into a Secret."""
    return base64.b64encode(secrets.token_bytes(KEY_SIZE)).decode()


def rotate_key_file(path: str, keep: int | None = None) -> tuple[str, Sequence[str]]:
    """Put a new key on the first line of a key file, keeping the older ones (all, or the newest `keep`).

    Written atomically with mode 0600. Returns (new key id, ids of the keys kept after it).
    """
    p = Path(path)
    old = decode_keyring(p.read_bytes(), f"file {path}").keys if p.exists() else ()
    if keep is not None:
        old = old[:keep]
    new = secrets.token_bytes(KEY_SIZE)
    text = "".join(base64.b64encode(k).decode() + "\n" for k in (new, *old))
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return key_id(new).hex(), [key_id(k).hex() for k in old]
