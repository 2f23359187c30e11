"""Small pure pieces: durations, keys, manifests, etcd's appended hash."""

import base64
import hashlib
import os

import pytest

from kubectl_etcdbackup.durations import format_duration, parse_duration
from kubectl_etcdbackup.errors import EncryptionKeyError, FormatError, IntegrityError, TruncatedError
from kubectl_etcdbackup.keys import Keyring, generate_key, load_keyring, rotate_key_file
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
    (tmp_path / "key").chmod(0o600)
    assert load_keyring(str(tmp_path / "key"), None) == Keyring.of(base64.b64decode(k))
    monkeypatch.setenv("MY_KEY", k)
    assert load_keyring(None, "MY_KEY") == Keyring.of(base64.b64decode(k))
    assert load_keyring(None, None) is None


@pytest.mark.parametrize("content,msg", [("not base64!!", "not valid base64"),
                                         (base64.b64encode(b"short").decode(), "need 32")])
def test_bad_keys(tmp_path, content: str, msg: str) -> None:
    (tmp_path / "key").write_text(content)
    (tmp_path / "key").chmod(0o600)
    with pytest.raises(EncryptionKeyError, match=msg):
        load_keyring(str(tmp_path / "key"), None)


def test_key_errors_never_echo_the_key(tmp_path) -> None:
    secret = base64.b64encode(b"x" * 31).decode()
    (tmp_path / "key").write_text(secret)
    (tmp_path / "key").chmod(0o600)
    with pytest.raises(EncryptionKeyError) as e:
        load_keyring(str(tmp_path / "key"), None)
    assert secret not in str(e.value)


def test_missing_key_file(tmp_path) -> None:
    with pytest.raises(EncryptionKeyError, match="cannot read key file"):
        load_keyring(str(tmp_path / "nope"), None)


def test_manifest_round_trip_and_validation() -> None:
    m = SnapshotManifest(id="etcd-1", created_at="2026-11-27T08:00:00Z", etcd_revision=5, key_count=3,
                         etcd_version="3.5.1", cluster_id="a", member_id="b", member_endpoint="e",
                         raw_size=10, stored_size=5, raw_sha256="1" * 64, stored_sha256="2" * 64, codec="zstd",
                         cipher="aes-256-gcm", key_id="0" * 16, duration_seconds=1.5)
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


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path, mode: int) -> None:
    """Like ssh with a private key: a key file others could read is refused, unless explicitly allowed."""
    f = tmp_path / "key"
    f.write_text(generate_key() + "\n")
    f.chmod(mode)
    with pytest.raises(EncryptionKeyError, match=r"readable by (others|its group).*chmod 600"):
        load_keyring(str(f), None)
    assert load_keyring(str(f), None, allow_insecure_file=True) is not None


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_key_file_is_accepted(tmp_path, mode: int) -> None:
    f = tmp_path / "key"
    f.write_text(generate_key() + "\n")
    f.chmod(mode)
    assert load_keyring(str(f), None) is not None


def test_keyring_file_newest_first_with_comments(tmp_path) -> None:
    new, old = generate_key(), generate_key()
    f = tmp_path / "key"
    f.write_text(f"# rotated 2026-12-03\n{new}\n\n{old}\n")
    f.chmod(0o600)
    ring = load_keyring(str(f), None)
    assert ring is not None and ring.keys == (base64.b64decode(new), base64.b64decode(old))
    assert str(base64.b64decode(new)) not in repr(ring) and ring.ids[0] in repr(ring)


def test_rotate_key_file_keeps_old_keys_first_is_new(tmp_path) -> None:
    f = tmp_path / "key"
    first = generate_key()
    f.write_text(first + "\n")
    f.chmod(0o600)
    new_id, old_ids = rotate_key_file(str(f))
    ring = load_keyring(str(f), None)
    assert ring is not None and ring.ids == [new_id, *old_ids] and len(ring.keys) == 2
    assert ring.keys[1] == base64.b64decode(first)
    assert f.stat().st_mode & 0o777 == 0o600
    rotate_key_file(str(f), keep=1)
    ring2 = load_keyring(str(f), None)
    assert ring2 is not None and ring2.ids[1] == new_id and len(ring2.keys) == 2


def test_group_readable_key_is_accepted_only_through_an_fs_group(tmp_path) -> None:
    """Kubernetes' fsGroup layout (group = a group the process has, 0440) passes; the same file read by a process
    without that group, or a group-readable file of group root, is refused."""
    import subprocess
    import sys

    f = tmp_path / "key"
    f.write_text(generate_key() + "\n")
    f.chmod(0o440)
    os.chown(f, 0, 65532)
    code = f"from kubectl_etcdbackup.keys import load_keyring; load_keyring({str(f)!r}, None)"
    as_pod = subprocess.run([sys.executable, "-c", code], extra_groups=[*os.getgroups(), 65532], capture_output=True,
                            text=True, timeout=60, check=False)
    assert as_pod.returncode == 0, as_pod.stderr
    outsider = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert outsider.returncode != 0 and "readable by its group" in outsider.stderr
    os.chown(f, 0, 0)
    with pytest.raises(EncryptionKeyError, match="readable by its group"):
        load_keyring(str(f), None)
