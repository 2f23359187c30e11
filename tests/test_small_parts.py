"""Small pure pieces: durations, keys, manifests, etcd's appended hash."""

import base64
import hashlib
import os

import pytest

from kubectl_etcdbackup.durations import format_duration, parse_duration
from kubectl_etcdbackup.errors import EncryptionKeyError, FormatError, IntegrityError, TruncatedError
from kubectl_etcdbackup.keys import generate_key, load_key
from kubectl_etcdbackup.manifest import SnapshotManifest, validate_id
from kubectl_etcdbackup.snapshot_hash import SnapshotHashCheck


@pytest.mark.parametrize("text,secs", [("90s", 90), ("15m", 900), ("1h30m", 5400), ("7d", 604800),
                                       ("2w", 1209600), ("120", 120)])
def test_parse_duration(text: str, secs: float) -> None:
    assert parse_duration(text) == secs


@pytest.mark.parametrize("bad", ["", "7x", "d7", "1h 30m", "-5m"])
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (5, 120, 3700, 90000)] == ["5s", "2m", "1h1m", "1d1h"]


def test_key_from_file_and_env(tmp_path, monkeypatch) -> None:
    k = generate_key()
    (tmp_path / "key").write_text(k + "\n")
    assert load_key(str(tmp_path / "key"), None) == base64.b64decode(k)
    monkeypatch.setenv("MY_KEY", k)
    assert load_key(None, "MY_KEY") == base64.b64decode(k)
    assert load_key(None, None) is None


@pytest.mark.parametrize("content,msg", [("not base64!!", "not valid base64"),
                                         (base64.b64encode(b"short").decode(), "need 32")])
def test_bad_keys(tmp_path, content: str, msg: str) -> None:
    (tmp_path / "key").write_text(content)
    with pytest.raises(EncryptionKeyError, match=msg):
        load_key(str(tmp_path / "key"), None)


def test_key_errors_never_echo_the_key(tmp_path) -> None:
    secret = base64.b64encode(b"x" * 31).decode()
    (tmp_path / "key").write_text(secret)
    with pytest.raises(EncryptionKeyError) as e:
        load_key(str(tmp_path / "key"), None)
    assert secret not in str(e.value)


def test_missing_key_file(tmp_path) -> None:
    with pytest.raises(EncryptionKeyError, match="cannot read key file"):
        load_key(str(tmp_path / "nope"), None)


def test_manifest_round_trip_and_validation() -> None:
    m = SnapshotManifest(id="etcd-1", created_at="2026-11-27T08:00:00Z", etcd_revision=5, key_count=3,
                         etcd_version="3.5.1", cluster_id="a", member_id="b", member_endpoint="e",
                         raw_size=10, stored_size=5, raw_sha256="r", stored_sha256="s", codec="zstd",
                         cipher="aes-256-gcm", key_id="k", duration_seconds=1.5)
    assert SnapshotManifest.from_json(m.to_json()) == m
    with pytest.raises(FormatError):
        SnapshotManifest.from_json(b"{not json")
    with pytest.raises(FormatError, match="missing fields"):
        SnapshotManifest.from_json(b'{"id": "x"}')
    with pytest.raises(FormatError):
        validate_id("../etc/passwd")


def stream(db: bytes) -> bytes:
    return db + hashlib.sha256(db).digest()


@pytest.mark.parametrize("step", [1, 7, 32, 33, 1000])
def test_etcd_hash_check(step: int) -> None:
    data = stream(os.urandom(3000))
    c = SnapshotHashCheck()
    for i in range(0, len(data), step):
        c.update(data[i:i + step])
    c.check()
    assert c.raw_sha256 == hashlib.sha256(data).hexdigest()


def test_etcd_hash_mismatch_and_truncation() -> None:
    data = bytearray(stream(os.urandom(500)))
    data[100] ^= 1
    c = SnapshotHashCheck()
    c.update(bytes(data))
    with pytest.raises(IntegrityError):
        c.check()
    c = SnapshotHashCheck()
    c.update(b"short")
    with pytest.raises(TruncatedError):
        c.check()


def test_read_ahead_passes_batches_and_errors_through() -> None:
    from kubectl_etcdbackup.backup import _read_ahead

    def source():
        yield 5, b"a"
        yield 5, b"b"
        raise RuntimeError("stream broke")

    got = []
    with pytest.raises(RuntimeError, match="stream broke"):
        for item in _read_ahead(source()):
            got.append(item)
    assert got == [(5, b"a"), (5, b"b")]
