"""The snapshot container format (pure logic, no I/O).

A stored snapshot is the etcd snapshot stream, zstd-compressed, cut into frames, each frame sealed with
AES-256-GCM (or stored plain when encryption is explicitly off).

Layout, all integers big-endian:

    header (40 bytes)
      magic       8   b"ETCDBAK\\0"
      version     1   1
      codec       1   0 = none, 1 = zstd
      cipher      1   0 = none, 1 = AES-256-GCM
      reserved    1   0
      frame_size  4   maximum payload bytes per frame before sealing
      key_id      8   first 8 bytes of SHA-256("kubectl-etcdbackup key id" || key); zero when unencrypted
      salt       16   random; file key = HKDF-SHA256(key, salt, info="kubectl-etcdbackup v1 file key")
    frames, repeated
      length      4   payload length (ciphertext incl. 16-byte tag when encrypted)
      flags       1   bit 0 = final frame
      payload

Each frame i uses nonce = i as 12 bytes and associated data = header || i (8 bytes) || flags, so frames
cannot be reordered, dropped, moved between files or have their final flag forged. A stream that ends
without an authenticated final frame is truncated; bytes after the final frame are rejected.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import FormatError, IntegrityError, TruncatedError, UsageError

MAGIC = b"ETCDBAK\0"
VERSION = 1
CODEC_NONE, CODEC_ZSTD = 0, 1
CIPHER_NONE, CIPHER_AES256GCM = 0, 1
CODEC_NAMES = {CODEC_NONE: "none", CODEC_ZSTD: "zstd"}
CIPHER_NAMES = {CIPHER_NONE: "none", CIPHER_AES256GCM: "aes-256-gcm"}
DEFAULT_FRAME_SIZE = 1 << 20
MAX_FRAME_SIZE = 16 << 20
TAG_SIZE = 16
KEY_SIZE = 32

_HEADER = struct.Struct(">8sBBBBI8s16s")
HEADER_SIZE = _HEADER.size
_FRAME = struct.Struct(">IB")
FLAG_FINAL = 0x01


def key_id(key: bytes) -> bytes:
    """Non-secret fingerprint of a key, stored so a wrong key is named as such before any decryption."""
    return hashlib.sha256(b"kubectl-etcdbackup key id" + key).digest()[:8]


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
        if version != VERSION:
            raise FormatError(f"unsupported snapshot format version {version} (this build reads {VERSION})")
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

    def __init__(self, key: bytes | None, codec: int = CODEC_ZSTD, frame_size: int = DEFAULT_FRAME_SIZE):
        if key is not None and len(key) != KEY_SIZE:
            raise UsageError(f"encryption key must be {KEY_SIZE} bytes, got {len(key)}")
        if not 0 < frame_size <= MAX_FRAME_SIZE:
            raise UsageError(f"frame size must be 1..{MAX_FRAME_SIZE}")
        cipher = CIPHER_AES256GCM if key is not None else CIPHER_NONE
        salt = os.urandom(16) if key is not None else bytes(16)
        self.header = Header(codec, cipher, frame_size, key_id(key) if key else bytes(8), salt)
        self._header_bytes = self.header.pack()
        self._aead = AESGCM(_file_key(key, salt)) if key is not None else None
        self._buf = bytearray()
        self._index = 0
        self._started = False
        self._finished = False

    def _seal(self, payload: bytes, flags: int) -> bytes:
        if self._aead is not None:
            payload = self._aead.encrypt(_nonce(self._index), payload,
                                         _aad(self._header_bytes, self._index, flags))
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

    def finish(self) -> bytes:
        """Emit the remaining data as the authenticated final frame (possibly empty)."""
        if self._finished:
            raise RuntimeError("FrameSealer already finished")
        self._finished = True
        out = self._prefix() + self._seal(bytes(self._buf), FLAG_FINAL)
        self._buf.clear()
        return out


class FrameOpener:
    """Incremental reader: feed stored bytes, get payload bytes back; close() checks completeness."""

    def __init__(self, key: bytes | None, expect_cipher: str | None = None):
        self._key = key
        self._expect_cipher = expect_cipher
        self._buf = bytearray()
        self.header: Header | None = None
        self._header_bytes = b""
        self._aead: AESGCM | None = None
        self._index = 0
        self._final_seen = False

    def _open_header(self) -> None:
        h = Header.unpack(bytes(self._buf[:HEADER_SIZE]))
        if self._expect_cipher is not None and h.cipher_name != self._expect_cipher:
            raise IntegrityError(
                f"snapshot object is {h.cipher_name}-encrypted but its manifest says {self._expect_cipher}")
        if h.cipher == CIPHER_AES256GCM:
            if self._key is None:
                raise UsageError("snapshot is encrypted: give the key with --key-file or --key-env")
            if key_id(self._key) != h.key_id:
                raise IntegrityError(
                    f"wrong encryption key: snapshot was sealed with key id {h.key_id.hex()}, "
                    f"given key has id {key_id(self._key).hex()}")
            self._aead = AESGCM(_file_key(self._key, h.salt))
        self.header = h
        self._header_bytes = bytes(self._buf[:HEADER_SIZE])
        del self._buf[:HEADER_SIZE]

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._buf += data
        if self.header is None:
            if len(self._buf) < HEADER_SIZE:
                return
            self._open_header()
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
                try:
                    payload = self._aead.decrypt(_nonce(self._index), payload,
                                                 _aad(self._header_bytes, self._index, flags))
                except InvalidTag:
                    raise IntegrityError(
                        f"snapshot object failed authentication at frame {self._index}: "
                        "corrupted, tampered with, or the wrong key") from None
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


def open_frames(chunks: Iterable[bytes], key: bytes | None, expect_cipher: str | None = None,
                ) -> Iterator[bytes]:
    """Yield payloads of a whole stored object; raises on truncation or corruption at the end."""
    opener = FrameOpener(key, expect_cipher)
    for chunk in chunks:
        yield from opener.feed(chunk)
    opener.close()
