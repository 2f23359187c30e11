"""Leftovers of killed runs, on real stores: file-store temp files and incomplete S3 multipart uploads (moto over
HTTP), found by age and removed; the agent's verify scratch dirs."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kubectl_etcdbackup.leftovers import (
    LEFTOVER_MIN_AGE_SECONDS,
    find_leftovers,
    find_local_scratch,
    remove_leftovers,
    remove_local,
)
from kubectl_etcdbackup.stores import FileStore, open_store


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_file_store_temp_files_found_by_age_and_removed(tmp_store_dir: Path) -> None:
    store = FileStore(tmp_store_dir)
    store.put_bytes("etcd-1.json", b"{}")
    old_writer, young_writer = store.writer("etcd-1.etcdbak"), store.writer("etcd-2.etcdbak")
    old_writer.write(b"partial")  # a writer killed mid-way: never committed nor aborted
    young_writer.write(b"in progress")
    old_tmp, young_tmp = sorted(tmp_store_dir.glob(".tmp-etcd-1*")), sorted(tmp_store_dir.glob(".tmp-etcd-2*"))
    assert len(old_tmp) == len(young_tmp) == 1
    age(old_tmp[0], 2 * LEFTOVER_MIN_AGE_SECONDS)
    stuck = tmp_store_dir / ".tmp-not-a-file"
    stuck.mkdir()
    age(stuck, 2 * LEFTOVER_MIN_AGE_SECONDS)

    found = find_leftovers(store, datetime.now(UTC), LEFTOVER_MIN_AGE_SECONDS)
    assert sorted(f.name for f in found) == sorted([old_tmp[0].name, stuck.name])
    assert {f.kind for f in found} == {"temp-file"} and all(f.age_seconds >= 7000 for f in found)

    problems = remove_leftovers(store, found)
    assert len(problems) == 1 and stuck.name in problems[0]  # one bad item: reported, the rest removed
    assert not old_tmp[0].exists() and young_tmp[0].exists()
    assert store.list_names() == ["etcd-1.json"]
    young_writer.commit()
    assert store.get_bytes("etcd-2.etcdbak") == b"in progress"


def test_incomplete_s3_multipart_upload_found_and_aborted(s3_server, s3_bucket) -> None:
    client = s3_server.client()
    store = open_store(f"s3://{s3_bucket}/backups", s3_endpoint_url=s3_server.endpoint_url)

    def killed_upload(key: str) -> str:
        upload = client.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]
        client.upload_part(Bucket=s3_bucket, Key=key, UploadId=upload, PartNumber=1, Body=os.urandom(1 << 20))
        return upload

    ours = killed_upload("backups/etcd-20260101T000000Z-abcd.etcdbak")
    killed_upload("other/etcd-x.etcdbak")  # another store's prefix
    killed_upload("backups/nested/etcd-x.etcdbak")  # not an object of this (flat) store
    store.put_bytes("etcd-20260101T000000Z-abcd.json", b"{}")

    # moto reports a fixed Initiated time in 2010, so the age filter itself is tested on the file store
    later = datetime.now(UTC) + timedelta(seconds=2 * LEFTOVER_MIN_AGE_SECONDS)
    found = find_leftovers(store, later, LEFTOVER_MIN_AGE_SECONDS)
    assert [(f.name, f.kind, f.handle) for f in found] == [
        ("backups/etcd-20260101T000000Z-abcd.etcdbak", "multipart-upload", ours)]
    assert remove_leftovers(store, found) == []
    assert remove_leftovers(store, found) == []  # already gone is fine
    left = {u["Key"] for u in client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])}
    assert left == {"other/etcd-x.etcdbak", "backups/nested/etcd-x.etcdbak"}
    assert store.list_names() == ["etcd-20260101T000000Z-abcd.json"]


def test_verify_scratch_dirs_found_by_age_and_removed(tmp_path: Path) -> None:
    old, young, unrelated = (tmp_path / n for n in ("etcdbackup-verify-old1", "etcdbackup-verify-new1", "keep"))
    for d in (old, young, unrelated):
        (d / "member" / "snap").mkdir(parents=True)
        (d / "member" / "snap" / "db").write_bytes(b"plaintext")
    for d in (old, unrelated):
        age(d, 2 * LEFTOVER_MIN_AGE_SECONDS)

    found = find_local_scratch(tmp_path, datetime.now(UTC), LEFTOVER_MIN_AGE_SECONDS)
    assert [(f.name, f.kind) for f in found] == [(str(old), "scratch-dir")]
    assert remove_local(found) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["etcdbackup-verify-new1", "keep"]
    assert find_local_scratch(tmp_path / "missing", datetime.now(UTC), 0) == []
