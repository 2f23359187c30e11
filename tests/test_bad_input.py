"""Bad input gets a clear one-line error and loses nothing: corrupt or truncated objects, wrong key,
unencrypted object passed as encrypted, unknown format version, missing bucket, unreachable etcd,
data dir already present, full disk."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from cli_helpers import backup_args, run_cli, write_key


@pytest.fixture
def snapshot(etcd35_tls_cluster, file_store_url, tmp_store_dir, tmp_path, capsys):
    """One verified, encrypted snapshot in a file store: (id, object path, key file)."""
    key = write_key(tmp_path / "key")
    r = run_cli(capsys, *backup_args(etcd35_tls_cluster, file_store_url, key, "--verify", "hash"))
    assert r.rc == 0, r.err
    sid = r.json()["id"]
    return sid, tmp_store_dir / f"{sid}.etcdbak", key


def store_files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def assert_refused(capsys, args: list, match: str, data_dir: Path | None = None) -> None:
    r = run_cli(capsys, *args)
    assert r.rc != 0
    lines = [ln for ln in r.err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and match in lines[0], r.err
    assert "Traceback" not in r.err
    if data_dir is not None:
        assert not data_dir.exists()
        assert not list(data_dir.parent.glob(f"{data_dir.name}.restoring-*"))
        # nothing but the restore lock file (kept by design: removing it would race a waiting restore)
        assert [p.name for p in data_dir.parent.glob(f".{data_dir.name}.*")] in ([], [f".{data_dir.name}.restore.lock"])


def restore_args(store: str, sid: str, key: Path, data_dir: Path, *extra: str) -> list:
    return ["restore", sid, "--store", store, "--key-file", key, "--data-dir", data_dir, "--name", "m0",
            "--initial-cluster", "m0=http://127.0.0.1:2380", "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380", "--bump-revision", "0", "--no-progress", *extra]


@pytest.mark.parametrize("damage,match", [
    ("truncate", "truncated"),
    ("truncate-header", "truncated"),
    ("flip", "failed authentication"),
    ("version", "unsupported snapshot format version"),
    ("raw-db", "bad magic"),
])
def test_damaged_object(damage: str, match: str, snapshot, file_store_url, tmp_store_dir, tmp_path, capsys) -> None:
    sid, obj, key = snapshot
    data = bytearray(obj.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 100]
    elif damage == "truncate-header":
        data = data[:20]
    elif damage == "flip":
        data[len(data) // 2] ^= 0x01
    elif damage == "version":
        data[8] = 99
    elif damage == "raw-db":
        data = bytearray(os.urandom(len(data)))
    obj.write_bytes(bytes(data))
    before = store_files(tmp_store_dir)
    data_dir = tmp_path / "restore" / "m0.etcd"
    assert_refused(capsys, ["verify", sid, "--store", file_store_url, "--key-file", key, "--no-progress"], match)
    assert_refused(capsys, restore_args(file_store_url, sid, key, data_dir), match, data_dir)
    out = tmp_path / "out.db"
    assert_refused(capsys, ["snapshot", "get", sid, "--store", file_store_url, "--key-file", key, "-f", out,
                            "--no-progress"], match)
    assert not out.exists() and not list(tmp_path.glob(".out.db*"))
    assert store_files(tmp_store_dir) == before  # nothing deleted or changed


def test_wrong_key(snapshot, file_store_url, tmp_path, capsys) -> None:
    sid, _obj, _key = snapshot
    other = write_key(tmp_path / "other")
    data_dir = tmp_path / "m0.etcd"
    assert_refused(capsys, restore_args(file_store_url, sid, other, data_dir), "which is not in the keyring", data_dir)


def test_unencrypted_object_passed_as_encrypted(snapshot, etcd35_tls_cluster, file_store_url, tmp_store_dir,
                                                tmp_path, capsys) -> None:
    sid, obj, key = snapshot
    r = run_cli(capsys, *backup_args(etcd35_tls_cluster, file_store_url, None, "--verify", "hash"))
    assert r.rc == 0, r.err
    plain = tmp_store_dir / f"{r.json()['id']}.etcdbak"
    obj.write_bytes(plain.read_bytes())  # swap in an unencrypted object under the encrypted manifest
    data_dir = tmp_path / "m0.etcd"
    assert_refused(capsys, restore_args(file_store_url, sid, key, data_dir), "manifest says aes-256-gcm", data_dir)


def test_data_dir_already_present(snapshot, file_store_url, tmp_path, capsys) -> None:
    sid, _obj, key = snapshot
    data_dir = tmp_path / "m0.etcd"
    (data_dir / "member").mkdir(parents=True)
    (data_dir / "member" / "precious").write_text("old data")
    r = run_cli(capsys, *restore_args(file_store_url, sid, key, data_dir))
    assert r.rc != 0 and "already exists; nothing was changed" in r.err and "--move-aside" in r.err
    assert (data_dir / "member" / "precious").read_text() == "old data"
    # With --move-aside the old data is kept beside the restored one.
    r = run_cli(capsys, *restore_args(file_store_url, sid, key, data_dir, "--move-aside"))
    assert r.rc == 0, r.err
    aside = list(tmp_path.glob("m0.etcd.before-restore-*"))
    assert len(aside) == 1 and (aside[0] / "member" / "precious").read_text() == "old data"
    assert (data_dir / "member" / "snap" / "db").is_file()


def test_missing_bucket(etcd35_tls_cluster, s3_server, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("ETCDBACKUP_S3_ENDPOINT_URL", s3_server.endpoint_url)
    key = write_key(tmp_path / "key")
    assert_refused(capsys, backup_args(etcd35_tls_cluster, "s3://no-such-bucket-here/x", key),
                   "bucket no-such-bucket-here does not exist")
    assert_refused(capsys, ["list", "--store", "s3://no-such-bucket-here/x"], "does not exist")


def test_unreachable_etcd_is_bounded_and_leaves_nothing(file_store_url, tmp_store_dir, tmp_path, capsys) -> None:
    key = write_key(tmp_path / "key")
    started = time.monotonic()
    r = run_cli(capsys, "agent", "backup", "--endpoints", "https://127.0.0.1:1,https://127.0.0.1:2",
                "--dial-timeout", "1s", "--store", file_store_url, "--key-file", key, "--no-progress")
    assert r.rc == 1 and "no etcd endpoint could take a snapshot" in r.err
    assert "127.0.0.1:1" in r.err and "127.0.0.1:2" in r.err
    assert time.monotonic() - started < 10
    assert not [p for p in tmp_store_dir.iterdir() if p.name.endswith((".etcdbak", ".json"))]
    assert run_cli(capsys, "list", "--store", file_store_url, "-o", "json").json() == []


def test_client_without_cert_is_refused(etcd35_tls_cluster, file_store_url, tmp_path, capsys) -> None:
    key = write_key(tmp_path / "key")
    r = run_cli(capsys, "agent", "backup", "--endpoints", etcd35_tls_cluster.endpoints[0], "--cacert",
                etcd35_tls_cluster.client_tls.ca, "--dial-timeout", "1s", "--store", file_store_url, "--key-file",
                key, "--no-progress")
    assert r.rc == 1 and "error:" in r.err


def test_encryption_must_be_explicitly_off(etcd35_tls_cluster, file_store_url, capsys) -> None:
    r = run_cli(capsys, "agent", "backup", "--endpoints", etcd35_tls_cluster.endpoints[0], "--store", file_store_url)
    assert r.rc == 2 and "--no-encryption explicitly" in r.err


def test_key_is_never_on_the_command_line_or_in_output(snapshot, file_store_url, tmp_path, capsys) -> None:
    sid, _obj, key = snapshot
    secret = key.read_text().strip()
    r = run_cli(capsys, "verify", sid, "--store", file_store_url, "--key-file", key, "-o", "json")
    assert r.rc == 0 and secret not in r.out + r.err
    assert secret not in (Path(file_store_url[7:]) / f"{sid}.json").read_text()


@pytest.fixture
def tiny_fs(tmp_path):
    """A 2 MiB tmpfs, to fill up. Needs root and mount rights; skipped where the sandbox forbids it."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, check=False)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_while_storing(etcd_cluster_factory, tiny_fs, tmp_path, capsys) -> None:
    cluster = etcd_cluster_factory("3.5", 1, True)
    cluster.put_many("/big/", 3000, 2048)  # ~6 MB of half-random values: does not fit in 2 MiB compressed
    key = write_key(tmp_path / "key")
    store = tiny_fs / "store"
    r = run_cli(capsys, *backup_args(cluster, f"file://{store}", key, "--verify", "hash"))
    assert r.rc == 1 and "no space left on device" in r.err, r.err
    assert [p.name for p in store.iterdir()] in ([], ["etcdbackup.status"])  # no partial object left


def test_full_disk_while_restoring(snapshot, file_store_url, tiny_fs, capsys, etcd_cluster_factory,
                                   tmp_path) -> None:
    cluster = etcd_cluster_factory("3.5", 1, True)
    cluster.put_many("/big/", 3000, 2048)
    key = write_key(tmp_path / "key2")
    r = run_cli(capsys, *backup_args(cluster, file_store_url, key, "--verify", "hash"))
    assert r.rc == 0, r.err
    data_dir = tiny_fs / "m0.etcd"
    assert_refused(capsys, restore_args(file_store_url, r.json()["id"], key, data_dir), "no space left on device",
                   data_dir)


@pytest.mark.slow
def test_sigterm_mid_upload_leaves_nothing(etcd_cluster_factory, tmp_store_dir, file_store_url, tmp_path) -> None:
    """Kubernetes stops a Job with SIGTERM: the partial object is removed and nothing is listed."""
    import signal
    import sys

    from cli_helpers import tls_args

    cluster = etcd_cluster_factory("3.5", 1, True)
    cluster.put_many("/big/", 40000, 2048)
    key = write_key(tmp_path / "key")
    exe = Path(sys.executable).parent / "kubectl-etcdbackup"
    proc = subprocess.Popen([exe, "agent", "backup", "--endpoints", cluster.endpoints[0], *tls_args(cluster),
                             "--store", file_store_url, "--key-file", str(key), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not any(p.name.startswith(".tmp-") and p.stat().st_size > 0 for p in tmp_store_dir.iterdir()):
            assert proc.poll() is None, "backup finished before it could be interrupted"
            assert time.monotonic() < deadline, "no upload started"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 128 + signal.SIGTERM
    assert [p.name for p in tmp_store_dir.iterdir() if p.name != "etcdbackup.status"] == []
    status = json.loads((tmp_store_dir / "etcdbackup.status").read_text())
    assert status["failures_total"] == 1 and "interrupted" in status["last_failure_message"]


@pytest.mark.parametrize("args,match", [(["list", "--bogus"], "error: No such option: --bogus"),
                                        (["agent", "backup"], "error: Missing option '--store'")])
def test_usage_errors_are_one_line_exit_2(args: list[str], match: str) -> None:
    from cli_helpers import run_cli_subprocess

    r = run_cli_subprocess(*args)
    assert r.rc == 2 and r.err.rstrip().splitlines()[-1].startswith(match), r.err
    assert "Traceback" not in r.err


def test_cli_needs_no_click_package() -> None:
    """typer >= 0.29 vendors click; a fresh install has no `click`, so the CLI must not import it."""
    import sys

    code = ("import sys; sys.modules['click'] = None\n"
            "from kubectl_etcdbackup.cli import main; sys.exit(main(['version']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
