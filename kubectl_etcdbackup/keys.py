"""Load the encryption key: 32 random bytes, base64, from a file (a mounted Secret) or an env var.

The key never comes from argv and is never logged; only its non-secret key id is shown.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from .errors import EncryptionKeyError
from .format import KEY_SIZE


def decode_key(text: str | bytes, source: str) -> bytes:
    raw = text.strip() if isinstance(text, bytes) else text.strip().encode()
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise EncryptionKeyError(f"encryption key in {source} is not valid base64") from None
    if len(key) != KEY_SIZE:
        raise EncryptionKeyError(
            f"encryption key in {source} decodes to {len(key)} bytes, need {KEY_SIZE} "
            "(make one with: kubectl-etcdbackup keygen)")
    return key


def load_key(key_file: str | None, key_env: str | None) -> bytes | None:
    """Return the key from --key-file or --key-env (an env var NAME), or None when neither is given."""
    if key_file and key_env:
        raise EncryptionKeyError("give the key with --key-file or --key-env, not both")
    if key_file:
        try:
            return decode_key(Path(key_file).read_bytes(), f"file {key_file}")
        except OSError as e:
            raise EncryptionKeyError(f"cannot read key file {key_file}: {e.strerror}") from None
    if key_env:
        value = os.environ.get(key_env)
        if value is None:
            raise EncryptionKeyError(f"environment variable {key_env} (named by --key-env) is not set")
        return decode_key(value, f"environment variable {key_env}")
    return None


def generate_key() -> str:
    """A new random key, base64 encoded, ready to put into a Secret."""
    return base64.b64encode(secrets.token_bytes(KEY_SIZE)).decode()
