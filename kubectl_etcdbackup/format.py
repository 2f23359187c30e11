"""The snapshot container format (pure logic, no I/O).

A stored snapshot is the etcd snapshot stream, zstd-compressed, cut into frames, each frame sealed with
AES-256-GCM (or stored plain when encryption is explicitly off).

Layout, all integers big-endian:

    header (40 bytes)
      magic       8   b"ETCDBAK\\0"
      version     1   2 (1 is still read)
      codec       1   0 = none, 1 = zstd
      cipher      1   0 = none, 1 = AES-256-GCM
      reserved    1   0
      frame_size  4   maximum payload bytes per frame before sealing
      key_id      8   first 8 bytes of SHA-256("kubectl-etcdbackup key id" || key); zero when unencrypted
      salt       16   random; file key = HKDF-SHA256(key, salt, info="kubectl-etcdbackup v1 file key")
    binding (version 2 only)
      length      2   bytes of the JSON that follows
      json            {"cluster_id": ..., "created_at": ..., "id": ...}, sorted keys, no spaces
    frames, repeated
      length      4   payload length (ciphertext incl. 16-byte tag when encrypted)
      flags       1   bit 0 = final frame
      payload

Each frame i uses nonce = i as 12 bytes and associated data = header (with the binding) || i (8 bytes) || flags,
so frames cannot be reordered, dropped, moved between files or have their final flag forged, and an object
cannot be passed off under another snapshot's id, time or cluster. In version 2 the final frame's associated data
also carries the raw snapshot's size and sha256 (the trailer, known only once the stream has ended), so an
object cannot be paired with a manifest describing other data. A stream that ends without an authenticated final
frame is truncated; bytes after the final frame are rejected.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import FormatError, IntegrityError, TruncatedError, UsageError
from .keys import KEY_SIZE, Keyring, key_id

MAGIC = b"ETCDBAK\0"
VERSION = 2
READABLE_VERSIONS = (1, 2)
CODEC_NONE, CODEC_ZSTD = 0, 1
CIPHER_NONE, CIPHER_AES256GCM = 0, 1
CODEC_NAMES = {CODEC_NONE: "none", CODEC_ZSTD: "zstd"}
CIPHER_NAMES = {CIPHER_NONE: "none", CIPHER_AES256GCM: "aes-256-gcm"}
DEFAULT_FRAME_SIZE = 1 << 20
MAX_FRAME_SIZE = 16 << 20
TAG_SIZE = 16
MAX_BINDING_SIZE = 1024

_HEADER = struct.Struct(">8sBBBBI8s16s")
HEADER_SIZE = _HEADER.size
_FRAME = struct.Struct(">IB")
_BINDING_LEN = struct.Struct(">H")
FLAG_FINAL = 0x01


@dataclass(frozen=True)
class Binding:
    """What a version 2 object is bound to: the snapshot it was written as."""

    snapshot_id: str
    created_at: str
    cluster_id: str

    def pack(self) -> bytes:
        return json.dumps({"cluster_id": self.cluster_id, "created_at": self.created_at, "id": self.snapshot_id},
                          sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def unpack(cls, data: bytes) -> Binding:
        try:
            obj = json.loads(data)
            return cls(str(obj["id"]), str(obj["created_at"]), str(obj["cluster_id"]))
        except (ValueError, KeyError, TypeError):
            raise FormatError("corrupt snapshot object: unreadable binding in its header") from None


def trailer(raw_size: int, raw_sha256: str) -> bytes:
    """The final frame's extra associated data in version 2: the raw snapshot's size and sha256."""
    return raw_size.to_bytes(8, "big") + bytes.fromhex(raw_sha256)


def _file_key(key: bytes, salt: bytes) -> bytes:
    return HKDF(hashes.SHA256(), KEY_SIZE, salt, b"kubectl-etcdbackup v1 file key").derive(key)


@dataclass(frozen=True)
class Header:
    codec: int
    cipher: int
    frame_size: int
    key_id: bytes
    salt: bytes
    version: int = VERSION

    def pack(self) -> bytes:
        return _HEADER.pack(MAGIC, self.version, self.codec, self.cipher, 0, self.frame_size,
                            self.key_id, self.salt)

    @classmethod
    def unpack(cls, data: bytes) -> Header:
        if len(data) < HEADER_SIZE:
            raise TruncatedError(f"snapshot object is truncated: {len(data)} bytes, shorter than its header")
        magic, version, codec, cipher, _reserved, frame_size, kid, salt = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise FormatError("not a kubectl-etcdbackup snapshot object (bad magic; a raw etcd db?)")
        if version not in READABLE_VERSIONS:
            raise FormatError(f"unsupported snapshot format version {version} (this build reads "
                              f"{', '.join(map(str, READABLE_VERSIONS))})")
        if codec not in CODEC_NAMES or cipher not in CIPHER_NAMES:
            raise FormatError(f"unknown codec {codec} or cipher {cipher} in snapshot header")
        if not 0 < frame_size <= MAX_FRAME_SIZE:
            raise FormatError(f"invalid frame size {frame_size} in snapshot header")
        return cls(codec, cipher, frame_size, kid, salt, version)

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES[self.codec]

    @property
    def cipher_name(self) -> str:
        return CIPHER_NAMES[self.cipher]


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def _aad(header_bytes: bytes, index: int, flags: int) -> bytes:
    return header_bytes + index.to_bytes(8, "big") + bytes([flags])


class FrameSealer:
    """Turns a byte stream into header + sealed frames. Feed with add(); finish() emits the final frame."""

    def __init__(self, key: bytes | None, binding: Binding, codec: int = CODEC_ZSTD,
                 frame_size: int = DEFAULT_FRAME_SIZE):
        if key is not None and len(key) != KEY_SIZE:
            raise UsageError(f"encryption key must be {KEY_SIZE} bytes, got {len(key)}")
        if not 0 < frame_size <= MAX_FRAME_SIZE:
            raise UsageError(f"frame size must be 1..{MAX_FRAME_SIZE}")
        cipher = CIPHER_AES256GCM if key is not None else CIPHER_NONE
        salt = os.urandom(16) if key is not None else bytes(16)
        self.header = Header(codec, cipher, frame_size, key_id(key) if key else bytes(8), salt)
        bound = binding.pack()
        self._header_bytes = self.header.pack() + _BINDING_LEN.pack(len(bound)) + bound
        self._aead = AESGCM(_file_key(key, salt)) if key is not None else None
        self._buf = bytearray()
        self._index = 0
        self._started = False
        self._finished = False

    def _seal(self, payload: bytes, flags: int, extra_aad: bytes = b"") -> bytes:
        if self._aead is not None:
            payload = self._aead.encrypt(_nonce(self._index), payload,
                                         _aad(self._header_bytes, self._index, flags) + extra_aad)
        self._index += 1
        return _FRAME.pack(len(payload), flags) + payload

    def _prefix(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._header_bytes

    def add(self, data: bytes) -> bytes:
        """Buffer data; return whatever whole frames (and the header, first time) are ready."""
        if self._finished:
            raise RuntimeError("FrameSealer already finished")
        self._buf += data
        out = [self._prefix()]
        size = self.header.frame_size
        # Keep at least one byte back so the last frame can always carry the final flag.
        while len(self._buf) > size:
            out.append(self._seal(bytes(self._buf[:size]), 0))
            del self._buf[:size]
        return b"".join(out)

    def finish(self, raw_size: int, raw_sha256: str) -> bytes:
        """Emit the remaining data as the authenticated final frame (possibly empty), bound to the raw
        snapshot's size and sha256."""
        if self._finished:
            raise RuntimeError("FrameSealer already finished")
        self._finished = True
        out = self._prefix() + self._seal(bytes(self._buf), FLAG_FINAL, trailer(raw_size, raw_sha256))
        self._buf.clear()
        return out


@dataclass(frozen=True)
class Expected:
    """What a snapshot's manifest says its object is. The opener refuses an object that is anything else."""

    cipher: str
    binding: Binding
    raw_size: int
    raw_sha256: str


class FrameOpener:
    """Incremental reader: feed stored bytes, get payload bytes back; close() checks completeness.

    With a keyring, an unencrypted object is refused unless allow_plaintext: whoever can write to the store
    could otherwise substitute a snapshot of their own.
    """

    def __init__(self, keyring: Keyring | None, expected: Expected | None = None, *, allow_plaintext: bool = False):
        self._keyring = keyring
        self._expected = expected
        self._allow_plaintext = allow_plaintext
        self._buf = bytearray()
        self.header: Header | None = None
        self.binding: Binding | None = None
        self._header_bytes = b""
        self._aead: AESGCM | None = None
        self._index = 0
        self._final_seen = False

    def _header_length(self) -> int | None:
        """Bytes of the whole header (with the binding), or None while more bytes are needed to tell."""
        if len(self._buf) < HEADER_SIZE:
            return None
        h = Header.unpack(bytes(self._buf[:HEADER_SIZE]))
        if h.version == 1:
            return HEADER_SIZE
        if len(self._buf) < HEADER_SIZE + _BINDING_LEN.size:
            return None
        (n,) = _BINDING_LEN.unpack_from(self._buf, HEADER_SIZE)
        if n > MAX_BINDING_SIZE:
            raise FormatError(f"corrupt snapshot object: binding of {n} bytes in its header")
        return HEADER_SIZE + _BINDING_LEN.size + n

    def _open_header(self, length: int) -> None:
        h = Header.unpack(bytes(self._buf[:HEADER_SIZE]))
        exp = self._expected
        if exp is not None and h.cipher_name != exp.cipher:
            raise IntegrityError(f"snapshot object is {h.cipher_name}-encrypted but its manifest says {exp.cipher}")
        if h.cipher == CIPHER_NONE and self._keyring is not None and not self._allow_plaintext:
            raise IntegrityError("snapshot object is not encrypted, so nothing proves who made it; refusing it while "
                                 "an encryption key is given (pass --allow-plaintext if you made it yourself)")
        if h.cipher == CIPHER_AES256GCM:
            if self._keyring is None:
                raise UsageError("snapshot is encrypted: give the key with --encryption-key-file or --key-env")
            key = self._keyring.find(h.key_id)
            if key is None:
                raise IntegrityError(
                    f"wrong encryption key: snapshot was sealed with key id {h.key_id.hex()}, which is not in the "
                    f"keyring (key ids {', '.join(self._keyring.ids)})")
            self._aead = AESGCM(_file_key(key, h.salt))
        if h.version >= 2:
            self.binding = Binding.unpack(bytes(self._buf[HEADER_SIZE + _BINDING_LEN.size:length]))
            if exp is not None and self.binding != exp.binding:
                b = self.binding
                raise IntegrityError(
                    f"snapshot object belongs to snapshot {b.snapshot_id} (made {b.created_at}, cluster "
                    f"{b.cluster_id}), not to {exp.binding.snapshot_id}: it was renamed or swapped")
        self.header = h
        self._header_bytes = bytes(self._buf[:length])
        del self._buf[:length]

    def _final_aad(self) -> bytes:
        assert self.header is not None
        if self.header.version < 2 or self._aead is None:
            return b""
        if self._expected is None:
            raise UsageError("a version 2 snapshot object is opened only against its manifest")
        return trailer(self._expected.raw_size, self._expected.raw_sha256)

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._buf += data
        if self.header is None:
            length = self._header_length()
            if length is None or len(self._buf) < length:
                return
            self._open_header(length)
        assert self.header is not None
        limit = self.header.frame_size + (TAG_SIZE if self._aead else 0)
        while len(self._buf) >= _FRAME.size:
            if self._final_seen:
                raise FormatError("snapshot object has trailing data after its final frame")
            length, flags = _FRAME.unpack_from(self._buf)
            if length > limit or flags & ~FLAG_FINAL:
                raise FormatError(f"corrupt snapshot object: bad frame {self._index} "
                                  f"(length {length}, flags {flags:#x})")
            end = _FRAME.size + length
            if len(self._buf) < end:
                return
            payload = bytes(self._buf[_FRAME.size:end])
            del self._buf[:end]
            if self._aead is not None:
                extra = self._final_aad() if flags & FLAG_FINAL else b""
                try:
                    payload = self._aead.decrypt(_nonce(self._index), payload,
                                                 _aad(self._header_bytes, self._index, flags) + extra)
                except InvalidTag:
                    what = ("corrupted, tampered with, or its manifest describes other data" if extra
                            else "corrupted, tampered with, or the wrong key")
                    raise IntegrityError(
                        f"snapshot object failed authentication at frame {self._index}: {what}") from None
            self._index += 1
            if flags & FLAG_FINAL:
                self._final_seen = True
            yield payload

    def close(self) -> None:
        if self.header is None:
            raise TruncatedError("snapshot object is truncated: shorter than its header")
        if self._buf or not self._final_seen:
            raise TruncatedError(f"snapshot object is truncated after frame {self._index} "
                                 "(no authenticated final frame)")


def open_frames(chunks: Iterable[bytes], keyring: Keyring | None, expected: Expected | None = None, *,
                allow_plaintext: bool = False) -> Iterator[bytes]:
    """Yield payloads of a whole stored object; raises on truncation or corruption at the end."""
    opener = FrameOpener(keyring, expected, allow_plaintext=allow_plaintext)
    for chunk in chunks:
        yield from opener.feed(chunk)
    opener.close()
