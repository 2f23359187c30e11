"""The container format: round trips, and every kind of damage is detected with a clear error."""

import os

import pytest

from kubectl_etcdbackup.errors import FormatError, IntegrityError, TruncatedError, UsageError
from kubectl_etcdbackup.format import HEADER_SIZE, VERSION, FrameSealer, open_frames

KEY = bytes(range(32))
OTHER_KEY = bytes(32)


def seal(data: bytes, key: bytes | None = KEY, frame_size: int = 1000, step: int = 333) -> bytes:
    s = FrameSealer(key, frame_size=frame_size)
    out = b"".join(s.add(data[i:i + step]) for i in range(0, len(data), step))
    return out + s.finish()


def unseal(blob: bytes, key: bytes | None = KEY, step: int = 97, expect: str | None = None) -> bytes:
    return b"".join(open_frames((blob[i:i + step] for i in range(0, len(blob), step)), key, expect))


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


@pytest.mark.parametrize("cut", [0, 10, HEADER_SIZE, HEADER_SIZE + 3, HEADER_SIZE + 600, -1, -16])
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
        unseal(blob[:HEADER_SIZE + 2 * frame])


@pytest.mark.parametrize("pos", [HEADER_SIZE + 7, HEADER_SIZE + 500, -3])
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
        unseal(seal(b"data"), OTHER_KEY)


def test_missing_key_for_encrypted_object() -> None:
    with pytest.raises(UsageError, match="encrypted"):
        unseal(seal(b"data"), None)


def test_plain_object_claimed_encrypted_is_rejected() -> None:
    with pytest.raises(IntegrityError, match="manifest says aes-256-gcm"):
        unseal(seal(b"data", None), KEY, expect="aes-256-gcm")


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
        unseal(seal(b"data") + b"\0" * 10)


def test_reordered_frames_fail_authentication() -> None:
    data = os.urandom(3000)
    blob = seal(data, frame_size=1000)
    frame = 5 + 1000 + 16
    f1 = blob[HEADER_SIZE:HEADER_SIZE + frame]
    f2 = blob[HEADER_SIZE + frame:HEADER_SIZE + 2 * frame]
    swapped = blob[:HEADER_SIZE] + f2 + f1 + blob[HEADER_SIZE + 2 * frame:]
    with pytest.raises(IntegrityError):
        unseal(swapped)


def test_bad_key_size() -> None:
    with pytest.raises(UsageError):
        FrameSealer(b"short")
