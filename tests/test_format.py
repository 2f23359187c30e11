"""The container format: round trips, and every kind of damage is detected with a clear error."""

import hashlib
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kubectl_etcdbackup.errors import FormatError, IntegrityError, TruncatedError, UsageError
from kubectl_etcdbackup.format import (
    CIPHER_AES256GCM,
    CODEC_NONE,
    FLAG_FINAL,
    HEADER_SIZE,
    VERSION,
    Binding,
    Expected,
    FrameSealer,
    Header,
    _aad,
    _file_key,
    _nonce,
    open_frames,
)
from kubectl_etcdbackup.keys import Keyring, key_id

KEY = bytes(range(32))
OTHER_KEY = bytes(32)
BINDING = Binding("etcd-20261203T061053123Z-ab12", "2026-12-03T06:10:53.123Z", "c0ffee")
HDR = HEADER_SIZE + 2 + len(BINDING.pack())  # fixed header + binding


SEALED: dict[bytes, bytes] = {}  # blob -> payload, so unseal() can expect what a manifest would say


def _expected(data: bytes, key: bytes | None, binding: Binding = BINDING) -> Expected:
    return Expected("aes-256-gcm" if key else "none", binding, len(data), hashlib.sha256(data).hexdigest())


def seal(data: bytes, key: bytes | None = KEY, frame_size: int = 1000, step: int = 333,
         binding: Binding = BINDING) -> bytes:
    s = FrameSealer(key, binding, frame_size=frame_size)
    out = b"".join(s.add(data[i:i + step]) for i in range(0, len(data), step))
    blob = out + s.finish(len(data), hashlib.sha256(data).hexdigest())
    SEALED[blob] = data
    return blob


def unseal(blob: bytes, key: bytes | None = KEY, step: int = 97, expected: Expected | None = None,
           ring: Keyring | None = None, allow_plaintext: bool = False) -> bytes:
    """Open with the keyring of `key` against what the manifest of the sealed payload would say (damaged blobs:
    an empty payload's, which no damaged blob may get past)."""
    ring = ring or (Keyring.of(key) if key else None)
    expected = expected or _expected(SEALED.get(blob, b""), key)
    chunks = (blob[i:i + step] for i in range(0, len(blob), step))
    return b"".join(open_frames(chunks, ring, expected, allow_plaintext=allow_plaintext))


def seal_v1(data: bytes, key: bytes, frame_size: int = 1000) -> bytes:
    """A version 1 object, as releases before the binding wrote them."""
    header = Header(CODEC_NONE, CIPHER_AES256GCM, frame_size, key_id(key), os.urandom(16), version=1).pack()
    aead = AESGCM(_file_key(key, Header.unpack(header).salt))
    chunks = [data[i:i + frame_size] for i in range(0, len(data), frame_size)] or [b""]
    out = [header]
    for i, chunk in enumerate(chunks):
        flags = FLAG_FINAL if i == len(chunks) - 1 else 0
        sealed = aead.encrypt(_nonce(i), chunk, _aad(header, i, flags))
        out.append(len(sealed).to_bytes(4, "big") + bytes([flags]) + sealed)
    return b"".join(out)


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 5000, 12345])
@pytest.mark.parametrize("key", [KEY, None])
def test_round_trip(size: int, key: bytes | None) -> None:
    data = os.urandom(size)
    assert unseal(seal(data, key), key) == data


def test_encrypted_payload_does_not_contain_plaintext() -> None:
    data = b"secret-value-" * 500
    assert b"secret-value" not in seal(data)


def test_same_data_seals_differently_each_time() -> None:
    assert seal(b"x" * 100) != seal(b"x" * 100)  # random per-file salt -> per-file key


@pytest.mark.parametrize("cut", [0, 10, HEADER_SIZE, HDR + 3, HDR + 600, -1, -16])
def test_truncation_is_detected(cut: int) -> None:
    blob = seal(os.urandom(3000))
    with pytest.raises((TruncatedError, IntegrityError)):
        unseal(blob[:cut])


def test_dropping_the_final_frame_is_detected() -> None:
    data = os.urandom(2500)
    blob = seal(data, frame_size=1000)
    # frames: header | 1000 | 1000 | final 500; cut exactly after the second frame
    frame = 5 + 1000 + 16
    with pytest.raises(TruncatedError, match="no authenticated final frame"):
        unseal(blob[:HDR + 2 * frame])


@pytest.mark.parametrize("pos", [HDR + 7, HDR + 500, -3])
def test_flipped_byte_is_detected(pos: int) -> None:
    blob = bytearray(seal(os.urandom(3000)))
    blob[pos] ^= 0x40
    with pytest.raises(IntegrityError):
        unseal(bytes(blob))


def test_flipped_header_byte_is_detected() -> None:
    blob = bytearray(seal(os.urandom(3000)))
    blob[HEADER_SIZE - 1] ^= 1  # inside the salt: authenticated as associated data
    with pytest.raises(IntegrityError):
        unseal(bytes(blob))


def test_wrong_key_is_named() -> None:
    with pytest.raises(IntegrityError, match="wrong encryption key"):
        unseal(seal(b"data"), OTHER_KEY, expected=_expected(b"data", KEY))


def test_missing_key_for_encrypted_object() -> None:
    with pytest.raises(UsageError, match="encrypted"):
        unseal(seal(b"data"), None, expected=_expected(b"data", KEY))


def test_plain_object_claimed_encrypted_is_rejected() -> None:
    with pytest.raises(IntegrityError, match="manifest says aes-256-gcm"):
        unseal(seal(b"data", None), KEY, expected=_expected(b"data", KEY))


def test_raw_etcd_db_is_not_a_container() -> None:
    with pytest.raises(FormatError, match="bad magic"):
        unseal(os.urandom(5000))


def test_unknown_version_is_rejected() -> None:
    blob = bytearray(seal(b"data"))
    blob[8] = VERSION + 1
    with pytest.raises(FormatError, match="unsupported snapshot format version"):
        unseal(bytes(blob))


def test_trailing_data_after_final_frame() -> None:
    with pytest.raises(FormatError, match="trailing data"):
        unseal(seal(b"data") + b"\0" * 10, expected=_expected(b"data", KEY))


def test_reordered_frames_fail_authentication() -> None:
    data = os.urandom(3000)
    blob = seal(data, frame_size=1000)
    frame = 5 + 1000 + 16
    f1 = blob[HDR:HDR + frame]
    f2 = blob[HDR + frame:HDR + 2 * frame]
    swapped = blob[:HDR] + f2 + f1 + blob[HDR + 2 * frame:]
    with pytest.raises(IntegrityError):
        unseal(swapped)


def test_bad_key_size() -> None:
    with pytest.raises(UsageError):
        FrameSealer(b"short", BINDING)


# ---------------------------------------------------------------------------- version 2: binding and trailer


def test_renamed_object_is_refused() -> None:
    """An attacker copies an old object under a new snapshot's name: the binding in its header gives it away."""
    data = os.urandom(3000)
    old = seal(data, binding=Binding("etcd-20261101T000000000Z-0001", "2026-11-01T00:00:00.000Z", "c0ffee"))
    with pytest.raises(IntegrityError, match="belongs to snapshot etcd-20261101T000000000Z-0001.*renamed or swapped"):
        unseal(old, expected=_expected(data, KEY))


def test_forged_binding_fails_authentication() -> None:
    """Rewriting the binding to match the new name breaks every frame's authentication (it is associated data)."""
    data = os.urandom(3000)
    other = Binding("etcd-20261101T000000000Z-0001", "2026-11-01T00:00:00.000Z", "c0ffee")
    blob = seal(data, binding=other)
    forged = blob.replace(other.pack(), BINDING.pack())
    assert forged != blob
    with pytest.raises(IntegrityError, match="failed authentication at frame 0"):
        unseal(forged, expected=_expected(data, KEY))


@pytest.mark.parametrize("field", ["size", "sha256"])
def test_manifest_describing_other_data_fails_at_the_final_frame(field: str) -> None:
    data = os.urandom(3000)
    exp = _expected(data, KEY)
    wrong = Expected(exp.cipher, exp.binding, exp.raw_size + 1, exp.raw_sha256) if field == "size" else \
        Expected(exp.cipher, exp.binding, exp.raw_size, hashlib.sha256(b"other").hexdigest())
    with pytest.raises(IntegrityError, match="manifest describes other data"):
        unseal(seal(data), expected=wrong)


def test_keyring_opens_snapshots_of_older_keys() -> None:
    data = os.urandom(2000)
    blob = seal(data, OTHER_KEY)
    assert unseal(blob, OTHER_KEY, ring=Keyring.of(KEY, OTHER_KEY), expected=_expected(data, OTHER_KEY)) == data


def test_key_missing_from_keyring_is_named() -> None:
    with pytest.raises(IntegrityError, match=f"key id {key_id(OTHER_KEY).hex()}, which is not in the keyring"):
        unseal(seal(b"data", OTHER_KEY), ring=Keyring.of(KEY), expected=_expected(b"data", OTHER_KEY))


def test_plaintext_object_refused_while_a_key_is_given() -> None:
    blob = seal(b"data", None)
    with pytest.raises(IntegrityError, match="not encrypted.*--allow-plaintext"):
        unseal(blob, None, ring=Keyring.of(KEY), expected=_expected(b"data", None))
    assert unseal(blob, None, ring=Keyring.of(KEY), expected=_expected(b"data", None), allow_plaintext=True) == b"data"


def test_version_1_objects_stay_readable() -> None:
    data = os.urandom(2500)
    assert unseal(seal_v1(data, KEY), expected=_expected(data, KEY)) == data


def test_version_is_2() -> None:
    assert VERSION == 2 and seal(b"x")[8] == 2
