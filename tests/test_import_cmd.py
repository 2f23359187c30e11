"""`snapshot import`: files made here by real `etcdctl snapshot save` (etcd 3.5.1, mTLS), real `gzip`, real
`gpg --symmetric` and real `zip`, imported into file and S3 stores, listed, verified and restored into a real etcd;
truncated, bit-flipped and wrong-passphrase files refused with one error line and nothing stored."""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_helpers import run_cli, write_key
from infra.etcd_cluster import ClusterLayout

from kubectl_etcdbackup.errors import FormatError
from kubectl_etcdbackup.import_detect import DB, GPG, GZIP, ZIP, etcd_hash_present, name_time, original_time, sniff

PASSPHRASE = "correct horse battery staple"
K3S_TIME = 1714557600  # 2024-05-01T10:00:00Z
MTIME = datetime(2024, 5, 2, 12, 0, tzinfo=UTC)
TIMEOUT = 60


@dataclass
class Sources:
    dir: Path
    files: dict[str, Path]  # kind -> file
    keys: dict[str, dict[str, bytes]]  # kind -> our keys and values when its snapshot was taken
    prefix: str
    passphrase_file: Path


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=TIMEOUT, env=env)


def _gzip(src: Path, dest: Path) -> None:
    with dest.open("wb") as f:
        subprocess.run(["gzip", "-c", str(src)], stdout=f, check=True, timeout=TIMEOUT)


def _gpg_symmetric(src: Path, dest: Path, passphrase_file: Path, home: Path) -> None:
    """As the classic pipeline does: gpg --symmetric --cipher-algo AES256, passphrase from a file."""
    home.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    try:
        _run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase-file", str(passphrase_file),
              "--symmetric", "--cipher-algo", "AES256", "-o", str(dest), str(src)], env=env)
    finally:
        _run(["gpgconf", "--kill", "gpg-agent"], env=env)  # gpg --symmetric starts an agent


@pytest.fixture(scope="module")
def sources(etcd35_tls_cluster, tmp_path_factory: pytest.TempPathFactory) -> Sources:
    """One real etcdctl snapshot per kind (a key written between them, so each holds different data)."""
    cluster = etcd35_tls_cluster
    d = tmp_path_factory.mktemp("import-sources")
    prefix = f"/import/{uuid.uuid4().hex[:8]}/"
    cluster.put_many(prefix + "k-", 100, 1024)
    pp = d / "passphrase"
    pp.write_text(PASSPHRASE + "\n")
    pp.chmod(0o600)
    names = {"raw": f"etcd-snapshot-server1-{K3S_TIME}", "zip": f"etcd-snapshot-server1-{K3S_TIME + 3600}.zip",
             "gz": "etcd-2024-05-01_11-15-00.db.gz", "gpg": "etcd-20240501-113000.db.gz.gpg", "plain": "snapshot.db"}
    files, keys = {}, {}
    for kind, name in names.items():
        cluster.put(prefix + "kind", kind)
        keys[kind] = cluster.get_all(prefix)
        snap = d / f"{kind}.snap"
        cluster.etcdctl("snapshot", "save", str(snap), endpoints=cluster.endpoints[:1])
        out = d / name
        if kind in ("raw", "plain"):
            snap.rename(out)
        elif kind == "zip":  # k3s: the snapshot, named like the zip without .zip, compressed alone
            inner = d / name.removesuffix(".zip")
            snap.rename(inner)
            _run(["zip", "-q", "-j", str(out), str(inner)])
            inner.unlink()
        elif kind == "gz":
            _gzip(snap, out)
        else:
            gz = d / "gpg.db.gz"
            _gzip(snap, gz)
            _gpg_symmetric(gz, out, pp, d / "gnupg")
        files[kind] = out
    os.utime(files["plain"], (MTIME.timestamp(), MTIME.timestamp()))
    return Sources(d, files, keys, prefix, pp)


def _store_files(store_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(store_dir)) for p in store_dir.rglob("*"))


def _import(capsys, store: str, key: Path, *files: Path | str, extra: tuple[str, ...] = ()):
    return run_cli(capsys, "snapshot", "import", *files, "--store", store, "--key-file", key, "--no-progress",
                   "-o", "json", *extra)


def _listed(capsys, store: str, key: Path) -> dict[str, dict]:
    r = run_cli(capsys, "list", "--store", store, "--key-file", key, "-o", "json")
    assert r.rc == 0, r.err
    return {m["id"]: m for m in r.json()}


@pytest.mark.parametrize("kind", ["raw", "zip", "gz", "gpg"])
def test_import_list_verify_restore(kind: str, sources: Sources, capsys, tmp_path: Path, file_store_url: str,
                                    etcd_cluster_factory) -> None:
    key = write_key(tmp_path / "key")
    work = tmp_path / "work"
    work.mkdir()
    r = _import(capsys, file_store_url, key, sources.files[kind],
                extra=("--passphrase-file", str(sources.passphrase_file), "--work-dir", str(work)))
    assert r.rc == 0, r.err
    assert r.err == ""
    [row] = r.json()
    assert row["status"] == "imported" and row["etcd_sha256"] == "ok"
    assert row["kind"] == {"raw": "db", "zip": "zip+db", "gz": "gzip+db", "gpg": "gpg+gzip+db"}[kind]
    assert not list(work.iterdir())  # scratch (gpg home, verify copy) removed

    m = _listed(capsys, file_store_url, key)[row["id"]]
    expected_time = {"raw": "2024-05-01T10:00:00.000Z", "zip": "2024-05-01T11:00:00.000Z",
                     "gz": "2024-05-01T11:15:00.000Z", "gpg": "2024-05-01T11:30:00.000Z"}[kind]
    assert m["created_at"] == expected_time and row["id"].startswith("etcd-20240501T")
    assert m["verified"] is True and m["authenticated"] is True and not m["untrusted_reason"]
    assert m["cipher"] == "aes-256-gcm" and m["codec"] == "zstd"
    assert m["member_endpoint"] == f"imported:{sources.files[kind].name}"
    v = m["verification"]
    assert v["level"] == "imported" and v["source"] == sources.files[kind].name
    assert v["source_kind"] == row["kind"] and v["original_time"] == expected_time
    assert v["original_time_from"] == "name"
    assert m["etcd_revision"] > 1 and m["db_total_keys"] >= 100

    r = run_cli(capsys, "verify", row["id"], "--store", file_store_url, "--key-file", key, "-o", "json")
    assert r.rc == 0, r.err
    assert r.json()[0]["status"] == "ok" and r.json()[0]["revision"] == m["etcd_revision"]

    layout = ClusterLayout.allocate(1, tls=True, name_prefix="r")
    data_dir = tmp_path / "restored" / "r0.etcd"
    r = run_cli(capsys, "restore", row["id"], "--store", file_store_url, "--key-file", key, "--data-dir", data_dir,
                "--name", "r0", "--initial-cluster", layout.initial_cluster,
                "--initial-advertise-peer-urls", layout.peer_urls[0], "--bump-revision", "0", "--no-progress")
    assert r.rc == 0, r.err
    restored = etcd_cluster_factory("3.5", 1, True, layout=layout, data_dirs=[data_dir])
    assert restored.get_all(sources.prefix) == sources.keys[kind]
    assert restored.revision() == m["etcd_revision"]


def test_several_files_mtime_fallback_and_duplicates(sources: Sources, capsys, tmp_path: Path,
                                                    file_store_url: str) -> None:
    key = write_key(tmp_path / "key")
    r = _import(capsys, file_store_url, key, sources.files["plain"], sources.files["gz"], sources.files["plain"])
    assert r.rc == 0, r.err
    plain, gz, again = r.json()
    assert plain["status"] == gz["status"] == "imported"
    assert again["status"] == f"already stored as {plain['id']}" and again["id"] is None
    listed = _listed(capsys, file_store_url, key)
    assert set(listed) == {plain["id"], gz["id"]}
    m = listed[plain["id"]]
    assert m["created_at"] == "2024-05-02T12:00:00.000Z"  # no time in the name: the file's mtime
    assert m["verification"]["original_time_from"] == "mtime"

    r = _import(capsys, file_store_url, key, sources.files["gz"])  # re-run: nothing new
    assert r.rc == 0 and r.json()[0]["status"] == f"already stored as {gz['id']}"
    assert set(_listed(capsys, file_store_url, key)) == {plain["id"], gz["id"]}


def test_import_into_s3(sources: Sources, capsys, tmp_path: Path, s3_server, s3_store_url: str,
                        monkeypatch) -> None:
    monkeypatch.setenv("ETCDBACKUP_S3_ENDPOINT_URL", s3_server.endpoint_url)
    key = write_key(tmp_path / "key")
    r = _import(capsys, s3_store_url, key, sources.files["zip"])
    assert r.rc == 0, r.err
    sid = r.json()[0]["id"]
    assert _listed(capsys, s3_store_url, key)[sid]["verification"]["source_kind"] == "zip+db"
    r = run_cli(capsys, "verify", "latest", "--store", s3_store_url, "--key-file", key, "-o", "json")
    assert r.rc == 0, r.err
    assert r.json()[0]["id"] == sid


def _flip(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


def _truncate(data: bytes) -> bytes:
    return data[:len(data) // 2 + 7]


BAD_FILES = [  # (id, source kind, damage, expected part of the error)
    ("truncated-raw", "raw", _truncate, "the file is truncated"),
    ("truncated-gz", "gz", _truncate, "the file is truncated"),
    ("truncated-zip", "zip", _truncate, "not a complete zip file"),
    ("truncated-gpg", "gpg", _truncate, "gpg could not decrypt it"),
    ("flipped-raw", "raw", _flip, "does not match etcd's appended sha256"),
    ("flipped-gz", "gz", _flip, "corrupt gzip data"),
    ("flipped-zip", "zip", _flip, "corrupt zip data"),
    ("flipped-gpg", "gpg", _flip, "gpg could not decrypt it"),
    ("no-hash", "raw", lambda d: d[:-32], "no etcd sha256 appended"),
    ("not-a-snapshot", "raw", lambda d: b"hello, I am a text file\n" * 100, "not an etcd snapshot"),
]


@pytest.mark.parametrize(("source", "damage", "message"), [pytest.param(*c[1:], id=c[0]) for c in BAD_FILES])
def test_damaged_file_is_refused_and_nothing_stored(source: str, damage, message: str, sources: Sources, capsys,
                                                     tmp_path: Path, tmp_store_dir: Path, file_store_url: str) -> None:
    key = write_key(tmp_path / "key")
    work = tmp_path / "work"
    work.mkdir()
    original = sources.files[source]
    bad = tmp_path / original.name
    bad.write_bytes(damage(original.read_bytes()))
    before = _store_files(tmp_store_dir)
    r = _import(capsys, file_store_url, key, bad,
                extra=("--passphrase-file", str(sources.passphrase_file), "--work-dir", str(work)))
    assert r.rc == 1
    [line] = r.err.splitlines()
    assert line.startswith(f"error: import {bad}: ") and message in line, line
    assert _store_files(tmp_store_dir) == before
    assert not list(work.iterdir())


def test_wrong_or_missing_passphrase(sources: Sources, capsys, tmp_path: Path, tmp_store_dir: Path,
                                     file_store_url: str) -> None:
    key = write_key(tmp_path / "key")
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")
    work = tmp_path / "work"
    work.mkdir()
    before = _store_files(tmp_store_dir)
    r = _import(capsys, file_store_url, key, sources.files["gpg"],
                extra=("--passphrase-file", str(wrong), "--work-dir", str(work)))
    assert r.rc == 1
    [line] = r.err.splitlines()
    assert "Bad session key (wrong passphrase?)" in line, line
    r = _import(capsys, file_store_url, key, sources.files["gpg"])
    assert r.rc == 1
    [line] = r.err.splitlines()
    assert "gpg-encrypted: give its passphrase with --passphrase-file" in line, line
    assert _store_files(tmp_store_dir) == before
    assert not list(work.iterdir())
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline")  # no gpg (or agent) left running on our work dir
                if str(work).encode() in _read(p)]


def _read(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError:
        return b""


def test_db_without_hash_only_when_allowed(sources: Sources, capsys, tmp_path: Path, file_store_url: str) -> None:
    """A copied member db (no etcd sha256): imported with --allow-no-hash, the db's sha256 appended, so that
    etcdutl restores it (checked by a test restore)."""
    key = write_key(tmp_path / "key")
    bare = tmp_path / "member-db-2024-05-03T08:00:00Z"
    bare.write_bytes(sources.files["raw"].read_bytes()[:-32])
    r = _import(capsys, file_store_url, key, bare, extra=("--allow-no-hash",))
    assert r.rc == 0, r.err
    row = r.json()[0]
    assert row["etcd_sha256"] == "none in the file; appended at import"
    m = _listed(capsys, file_store_url, key)[row["id"]]
    assert m["created_at"] == "2024-05-03T08:00:00.000Z" and m["raw_size"] == bare.stat().st_size + 32
    r = run_cli(capsys, "verify", row["id"], "--store", file_store_url, "--key-file", key, "--test-restore")
    assert r.rc == 0, r.err


def test_usage_errors(sources: Sources, capsys, tmp_path: Path, file_store_url: str) -> None:
    r = run_cli(capsys, "snapshot", "import", sources.files["raw"], "--store", file_store_url)
    assert r.rc == 2 and "give the key with" in r.err
    key = write_key(tmp_path / "key")
    r = _import(capsys, file_store_url, key, sources.files["raw"], extra=("--cluster-id", "not-hex"))
    assert r.rc == 2 and "--cluster-id must be" in r.err
    r = _import(capsys, file_store_url, key, tmp_path / "missing.db")
    assert r.rc == 1 and "cannot read" in r.err and "No such file" in r.err


# ---------------------------------------------------------------------------- pure detection


def test_sniff_by_content_not_name(sources: Sources) -> None:
    heads = {kind: f.read_bytes()[:32] for kind, f in sources.files.items()}
    assert sniff(heads["raw"], "x.gz") == DB
    assert sniff(heads["gz"], "x.db") == GZIP
    assert sniff(heads["zip"], "x") == ZIP
    assert sniff(heads["gpg"], "x") == GPG
    assert sniff(b"-----BEGIN PGP MESSAGE-----\n", "x") == GPG
    with pytest.raises(FormatError, match=r"although the name ends in \.gz"):
        sniff(b"plain text, not gzip at all......", "x.db.gz")
    with pytest.raises(FormatError, match="kubectl-etcdbackup object already"):
        sniff(b"ETCDBAK\0" + bytes(24), "x.etcdbak")


def test_hash_presence_by_size() -> None:
    assert etcd_hash_present(4096 * 5 + 32) is True
    assert etcd_hash_present(4096 * 5) is False
    assert etcd_hash_present(4096 * 5 + 100) is None


@pytest.mark.parametrize(("name", "expected"), [
    ("etcd-snapshot-server1-1714557600", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ("on-demand-node-a-1714557600.zip", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ("etcd-2024-05-01T10:15:30Z.db", datetime(2024, 5, 1, 10, 15, 30, tzinfo=UTC)),
    ("backup_20240501-101530.db.gz.gpg", datetime(2024, 5, 1, 10, 15, 30, tzinfo=UTC)),
    ("snap-20240501101530.db", datetime(2024, 5, 1, 10, 15, 30, tzinfo=UTC)),
    ("etcd-20241399-101530.db", None),  # no such date
    ("snapshot.db", None),
])
def test_name_time(name: str, expected: datetime | None) -> None:
    assert name_time(name) == expected


def test_original_time_falls_back_to_mtime() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    mtime = datetime(2024, 6, 1, tzinfo=UTC).timestamp()
    assert original_time("etcd-snapshot-n-1714557600", mtime, now) == (datetime(2024, 5, 1, 10, tzinfo=UTC), "name")
    assert original_time("etcd-snapshot-n-1999999999", mtime, now)[1] == "mtime"  # in the future
    assert original_time("snap-19990101-000000.db", mtime, now)[1] == "mtime"  # before etcd existed
    assert original_time("snapshot.db", datetime(2030, 1, 1, tzinfo=UTC).timestamp(), now) == (now, "mtime")
