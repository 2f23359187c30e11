"""Trust: whoever can write to the store but holds no key cannot get a snapshot of their choosing restored,
roll `latest` back, make prune delete a kept snapshot, or make a bad manifest abort a command. Real etcd 3.5.1
(mTLS), a file store and moto S3 over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zstandard
from cli_helpers import backup_args, run_cli, write_key

from kubectl_etcdbackup.backup import BackupOptions, take_backup
from kubectl_etcdbackup.catalog import list_snapshots
from kubectl_etcdbackup.etcd.client import TLSFiles
from kubectl_etcdbackup.exporter import make_exporter
from kubectl_etcdbackup.fetch import fetch_to_file
from kubectl_etcdbackup.format import CODEC_ZSTD, Binding, FrameSealer
from kubectl_etcdbackup.keys import load_keyring
from kubectl_etcdbackup.manifest import LEGACY_UNAUTHENTICATED, SnapshotManifest, format_time
from kubectl_etcdbackup.stores import open_store


def backup(capsys, cluster, store: str, key: Path | None, *extra: str) -> dict:
    r = run_cli(capsys, *backup_args(cluster, store, key, "--verify", "hash", *extra))
    assert r.rc == 0, r.err
    return r.json()


def manifest_of(store_dir: Path, sid: str) -> dict:
    return json.loads((store_dir / f"{sid}.json").read_text())


def write_manifest(store_dir: Path, name: str, obj: dict) -> None:
    (store_dir / f"{name}.json").write_text(json.dumps(obj))


def later_id(sid: str, minutes: int = 5) -> tuple[str, str]:
    """A fresh-looking id and created_at, `minutes` after now (a plausible newer backup)."""
    t = datetime.now(UTC) + timedelta(seconds=1)
    return f"etcd-{t:%Y%m%dT%H%M%S}{t.microsecond // 1000:03d}Z-beef", format_time(t)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return write_key(tmp_path / "key")


def listed(capsys, store: str, key: Path) -> list[dict]:
    r = run_cli(capsys, "list", "--store", store, "--key-file", key, "-o", "json")
    assert r.rc == 0, r.err
    return json.loads(r.out)


# ---------------------------------------------------------------------------- a bucket writer without the key


def test_planted_plaintext_snapshot_is_never_picked(etcd35_tls_cluster, etcd_cluster_factory, file_store_url,
                                                     tmp_store_dir, key, tmp_path, capsys) -> None:
    """The attacker backs up their OWN etcd unencrypted into the victim's store, dated newer: before, `verify
    latest` and `restore latest` took it (the cipher was checked only against the attacker's manifest)."""
    genuine = backup(capsys, etcd35_tls_cluster, file_store_url, key)
    evil = etcd_cluster_factory("3.5", size=1, tls=False)
    evil.put_many("/registry/secrets/kube-system/evil-", 5, 64)
    planted = backup(capsys, evil, file_store_url, None)  # --no-encryption: a plaintext snapshot, newer
    assert (tmp_store_dir / f"{planted['id']}.etcdbak").stat().st_mode & 0o777 == 0o600  # plaintext: owner only
    assert (tmp_store_dir / f"{genuine['id']}.etcdbak").stat().st_mode & 0o777 == 0o644  # sealed: exporter reads
    rows = {r["id"]: r for r in listed(capsys, file_store_url, key)}
    assert rows[planted["id"]]["untrusted_reason"].startswith("plaintext snapshot")
    assert rows[genuine["id"]]["authenticated"] is True
    r = run_cli(capsys, "verify", "latest", "--store", file_store_url, "--key-file", key, "--no-progress",
                "-o", "json")
    assert r.rc == 0 and json.loads(r.out)[0]["id"] == genuine["id"], r.err
    r = run_cli(capsys, "snapshot", "get", planted["id"], "--store", file_store_url, "--key-file", key,
                "-f", tmp_path / "evil.db", "--no-progress")
    assert r.rc == 1 and "plaintext snapshot" in r.err and not (tmp_path / "evil.db").exists()
    out = tmp_path / "genuine.db"
    r = run_cli(capsys, "snapshot", "get", "latest", "--store", file_store_url, "--key-file", key, "-f", out,
                "--no-progress")
    assert r.rc == 0, r.err
    assert genuine["id"] in r.out and out.stat().st_mode & 0o777 == 0o600  # plaintext of the cluster: 0600


def test_rollback_under_a_new_id_is_refused(etcd35_tls_cluster, s3_server, s3_store_url, key, capsys,
                                            monkeypatch) -> None:
    """Copy an old snapshot (object and manifest) under a new id with a newer created_at: `latest` must not move."""
    monkeypatch.setenv("ETCDBACKUP_S3_ENDPOINT_URL", s3_server.endpoint_url)
    old = backup(capsys, etcd35_tls_cluster, s3_store_url, key)
    etcd35_tls_cluster.put_many("/trust/rollback-", 3, 16)
    new = backup(capsys, etcd35_tls_cluster, s3_store_url, key)
    store = open_store(s3_store_url, s3_endpoint_url=s3_server.endpoint_url)
    m = json.loads(store.get_bytes(f"{old['id']}.json"))
    fake_id, fake_time = later_id(old["id"])
    store.put_bytes(f"{fake_id}.etcdbak", store.get_bytes(f"{old['id']}.etcdbak"))
    store.put_bytes(f"{fake_id}.json", json.dumps(m | {"id": fake_id, "created_at": fake_time}).encode())
    rows = {r["id"]: r for r in listed(capsys, s3_store_url, key)}
    assert rows[fake_id]["untrusted_reason"] == "MAC does not verify (forged or altered)"
    r = run_cli(capsys, "verify", "latest", "--store", s3_store_url, "--key-file", key, "--no-progress", "-o", "json")
    assert r.rc == 0 and json.loads(r.out)[0]["id"] == new["id"], r.err
    # Even with the MAC field stripped and the version set back to 1, the object is bound to the old id.
    legacy = m | {"id": fake_id, "created_at": fake_time, "format_version": 1, "mac": ""}
    store.put_bytes(f"{fake_id}.json", json.dumps(legacy).encode())
    r = run_cli(capsys, "verify", fake_id, "--store", s3_store_url, "--key-file", key, "--no-progress")
    assert r.rc == 1 and f"belongs to snapshot {old['id']}" in r.err, r.err


def test_swapped_objects_are_refused(etcd35_tls_cluster, file_store_url, tmp_store_dir, key, capsys) -> None:
    a = backup(capsys, etcd35_tls_cluster, file_store_url, key)
    b = backup(capsys, etcd35_tls_cluster, file_store_url, key)
    (tmp_store_dir / f"{b['id']}.etcdbak").write_bytes((tmp_store_dir / f"{a['id']}.etcdbak").read_bytes())
    r = run_cli(capsys, "verify", b["id"], "--store", file_store_url, "--key-file", key, "--no-progress")
    assert r.rc == 1 and "renamed or swapped" in r.err, r.err


def test_decoy_manifest_cannot_make_prune_delete_a_kept_snapshot(etcd35_tls_cluster, file_store_url,
                                                                  tmp_store_dir, key, capsys) -> None:
    """A decoy `X.json` saying `"id": <kept snapshot>`: prune deleted the kept one by the id inside the file."""
    kept = [backup(capsys, etcd35_tls_cluster, file_store_url, key)["id"] for _ in range(2)]
    decoy_id, _ = later_id(kept[0])
    (tmp_store_dir / f"{decoy_id}.etcdbak").write_bytes(b"junk")
    write_manifest(tmp_store_dir, decoy_id, manifest_of(tmp_store_dir, kept[0]))  # its "id" names kept[0]
    r = run_cli(capsys, "prune", "--store", file_store_url, "--key-file", key, "--retain-count", "2", "-o", "json")
    assert r.rc == 0, r.err
    assert all((tmp_store_dir / f"{sid}.etcdbak").exists() and (tmp_store_dir / f"{sid}.json").exists()
               for sid in kept)
    assert "not the one its name says" in r.err


# ---------------------------------------------------------------------------- malformed and future manifests


BAD_FIELDS = [{"created_at": 5}, {"created_at": "yesterday"}, {"format_version": "1"}, {"raw_size": -1},
              {"verified": "yes"}, {"id": "../../etc/passwd"}]


def test_malformed_manifests_never_abort_a_command(etcd35_tls_cluster, file_store_url, tmp_store_dir, key,
                                                   capsys) -> None:
    good = backup(capsys, etcd35_tls_cluster, file_store_url, key)
    base = manifest_of(tmp_store_dir, good["id"])
    for i, bad in enumerate(BAD_FIELDS):
        sid = f"etcd-20261101T00000{i}000Z-bad{i}"
        (tmp_store_dir / f"{sid}.etcdbak").write_bytes(b"x")
        write_manifest(tmp_store_dir, sid, base | {"id": sid} | bad)
    (tmp_store_dir / "etcd-20261101T000009000Z-big9.etcdbak").write_bytes(b"x")
    (tmp_store_dir / "etcd-20261101T000009000Z-big9.json").write_text(json.dumps(base | {"pad": "x" * 100_000}))
    r = run_cli(capsys, "list", "--store", file_store_url, "--key-file", key, "-o", "json")
    assert r.rc == 0 and [s["id"] for s in json.loads(r.out)] == [good["id"]], r.err
    assert r.err.count("warning:") == len(BAD_FIELDS) + 1 and "created_at must be a UTC time" in r.err
    assert "over the 65536-byte limit" in r.err
    r = run_cli(capsys, "agent", "monitor", "--store", file_store_url, "--key-file", key, "--max-age", "1h")
    assert r.rc == 0 and good["id"] in r.out, r.err
    r = run_cli(capsys, "prune", "--store", file_store_url, "--key-file", key, "--retain-count", "1")
    assert r.rc == 0, r.err
    body = scrape(file_store_url, key)
    assert "etcd_backup_stale" in body and 'etcd_backup_untrusted_manifests{store="' in body


def scrape(url: str, key: Path) -> str:
    from infra.ports import allocate_port

    port = allocate_port()
    server = make_exporter(open_store(url), load_keyring(str(key), None), "127.0.0.1", port, 3600, 0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        server.shutdown()
        server.server_close()
        t.join(timeout=10)


def test_future_dated_snapshot_is_neither_latest_nor_fresh(etcd35_tls_cluster, file_store_url, key, capsys) -> None:
    """A genuine, authenticated snapshot from a node whose clock is a day ahead: it must not count as fresh
    (it kept the staleness alert quiet forever) nor as latest."""
    keyring = load_keyring(str(key), None)
    store = open_store(file_store_url)
    tls = etcd35_tls_cluster.client_tls
    opts = BackupOptions(etcd35_tls_cluster.endpoints, store, keyring, TLSFiles(str(tls.ca), str(tls.cert),
                         str(tls.key)), verify="hash", progress=False)
    ahead = take_backup(replace(opts, now=lambda: datetime.now(UTC) + timedelta(days=1)))
    listing = list_snapshots(store, keyring)
    assert listing.snapshots[0].id == ahead.id and "in the future" in listing.snapshots[0].untrusted_reason
    assert listing.trusted == []
    r = run_cli(capsys, "agent", "monitor", "--store", file_store_url, "--key-file", key, "--max-age", "1h")
    assert r.rc == 3 and "STALE" in r.out
    now = take_backup(opts)
    r = run_cli(capsys, "agent", "monitor", "--store", file_store_url, "--key-file", key, "--max-age", "1h")
    assert r.rc == 0 and now.id in r.out
    assert 'etcd_backup_last_success_timestamp{store="' in scrape(file_store_url, key)


# ---------------------------------------------------------------------------- keyring, legacy, bounded decode


def test_key_rotation_keeps_old_backups_restorable(etcd35_tls_cluster, file_store_url, key, tmp_path,
                                                    capsys) -> None:
    before = backup(capsys, etcd35_tls_cluster, file_store_url, key)
    r = run_cli(capsys, "keygen", "--rotate", key)
    assert r.rc == 0 and "new key" in r.err
    after = backup(capsys, etcd35_tls_cluster, file_store_url, key)
    ring = load_keyring(str(key), None)
    assert ring is not None and len(ring.keys) == 2
    assert manifest_of(Path(file_store_url[7:]), after["id"])["key_id"] == ring.ids[0]
    assert manifest_of(Path(file_store_url[7:]), before["id"])["key_id"] == ring.ids[1]
    for sid in (before["id"], after["id"]):
        r = run_cli(capsys, "verify", sid, "--store", file_store_url, "--key-file", key, "--no-progress")
        assert r.rc == 0, r.err
    newest_only = tmp_path / "newest"
    newest_only.write_text(key.read_text().splitlines()[0] + "\n")
    newest_only.chmod(0o600)
    rows = {r["id"]: r for r in listed(capsys, file_store_url, newest_only)}
    assert "not in the keyring" in rows[before["id"]]["untrusted_reason"]
    assert rows[after["id"]]["authenticated"]


def test_version_1_snapshot_stays_readable_but_flagged(etcd35_tls_cluster, file_store_url, tmp_store_dir, key,
                                                        tmp_path, capsys) -> None:
    """A snapshot written by a release before authenticated manifests: restorable by id, never `latest`."""
    from test_format import seal_v1

    genuine = backup(capsys, etcd35_tls_cluster, file_store_url, key)
    store, keyring = open_store(file_store_url), load_keyring(str(key), None)
    m = SnapshotManifest.from_json((tmp_store_dir / f"{genuine['id']}.json").read_bytes())
    raw = fetch_to_file(store, m, keyring, tmp_path / "raw.db").read_bytes()
    old_id = "etcd-20261101T000000000Z-0ld1"
    obj = seal_v1(raw, keyring.primary, frame_size=1 << 20)  # codec none: as if written with compression off
    (tmp_store_dir / f"{old_id}.etcdbak").write_bytes(obj)
    legacy = m.to_dict() | {"id": old_id, "created_at": "2026-11-01T00:00:00.000Z", "format_version": 1, "mac": "",
                            "codec": "none", "stored_size": len(obj),
                            "stored_sha256": __import__("hashlib").sha256(obj).hexdigest()}
    legacy.pop("mac")
    write_manifest(tmp_store_dir, old_id, legacy)
    rows = {r["id"]: r for r in listed(capsys, file_store_url, key)}
    assert rows[old_id]["untrusted_reason"] == LEGACY_UNAUTHENTICATED
    r = run_cli(capsys, "verify", old_id, "--store", file_store_url, "--key-file", key, "--no-progress")
    assert r.rc == 0 and "version 1 manifest" in r.err, r.err


def test_decompression_bomb_stops_at_the_manifest_size(file_store_url, tmp_store_dir, key, tmp_path) -> None:
    """A sealed zstd payload that expands far beyond the manifest's raw_size: decoding stops with a clear error
    instead of filling the disk (a 16 MiB tmpfs here; the payload would be 256 MiB)."""
    keyring = load_keyring(str(key), None)
    sid, created = "etcd-20261203T000000000Z-b0mb", "2026-12-03T00:00:00.000Z"
    sealer = FrameSealer(keyring.primary, Binding(sid, created, "c1"), CODEC_ZSTD)
    comp = zstandard.ZstdCompressor(level=3).compressobj()
    parts = [sealer.add(comp.compress(bytes(1 << 20))) for _ in range(256)]
    raw_sha = "0" * 64
    obj = b"".join(parts) + sealer.add(comp.flush()) + sealer.finish(1 << 20, raw_sha)
    import hashlib

    (tmp_store_dir / f"{sid}.etcdbak").write_bytes(obj)
    m = SnapshotManifest(id=sid, created_at=created, etcd_revision=1, key_count=0, etcd_version="3.5.1",
                         cluster_id="c1", member_id="m1", member_endpoint="e", raw_size=1 << 20,
                         stored_size=len(obj), raw_sha256=raw_sha, stored_sha256=hashlib.sha256(obj).hexdigest(),
                         codec="zstd", cipher="aes-256-gcm", key_id=keyring.ids[0], duration_seconds=0.1,
                         verified=True)
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(tiny)], check=True, timeout=30)
    try:
        from kubectl_etcdbackup.errors import FormatError

        with pytest.raises(FormatError, match="decodes to more than the 1048576 bytes"):
            fetch_to_file(open_store(file_store_url), m, keyring, tiny / "out.db")
        assert os.listdir(tiny) == []
    finally:
        subprocess.run(["umount", str(tiny)], check=True, timeout=30)
