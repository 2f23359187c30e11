"""S3 store (any S3-compatible endpoint): streaming multipart upload, aborted on failure."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from ..errors import SnapshotNotFound, StoreError
from .base import ObjectInfo, ObjectWriter, PendingWrite, Store

# Memory: a backup holds about 3 parts (the one filling, 2 uploading), a read 3 ranges; with boto3's own ~30 MiB this
# keeps a process under 150 MiB whatever the db size.
PART_SIZE = 5 << 20  # S3's smallest part; 10,000 parts: 50 GB per object, six times etcd's largest quota (8 GiB)
MAX_PARTS_IN_FLIGHT = 2
READ_RANGE = 8 << 20  # reads: ranged GETs of this size,
MAX_RANGES_IN_FLIGHT = 2  # this many requested ahead of the one being consumed
_RANGE_TIMEOUT = 900.0  # one range, with the client's own retries (5 x 60 s reads) inside


def _range_total(content_range: str | None) -> int | None:
    """The object size from a Content-Range "bytes 0-99/1234" (None when absent or unknown)."""
    if not content_range or "/" not in content_range:
        return None
    total = content_range.rsplit("/", 1)[1]
    return int(total) if total.isdigit() else None


def _read_all(body: Any) -> bytes:
    try:
        return body.read()
    finally:
        body.close()


def _describe(e: Exception, what: str) -> StoreError:
    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        code = err.get("Code", "")
        if code in ("NoSuchBucket",):
            return StoreError(f"{what}: bucket {err.get('BucketName', '')} does not exist".replace("  ", " "))
        if code in ("NoSuchKey", "404", "NotFound"):
            return SnapshotNotFound(f"{what}: not found")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StoreError(f"{what}: access denied ({code}); check the S3 credentials and policy")
        return StoreError(f"{what}: {code or 'error'}: {err.get('Message', e)}")
    if isinstance(e, NoCredentialsError):
        return StoreError(f"{what}: no S3 credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")
    return StoreError(f"{what}: {e}")


def s3_client(endpoint_url: str | None, region: str | None, session: Any = None) -> Any:
    """The one S3 client configuration: standard retries (5 attempts), 10 s to connect, 60 s per read."""
    return (session or boto3.session.Session()).client(
        "s3", endpoint_url=endpoint_url, region_name=region,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60))


class S3ObjectWriter(ObjectWriter):
    def __init__(self, store: S3Store, key: str):
        self._s3 = store.client
        self._bucket = store.bucket
        self._key = key
        self._extra = store.sse_args
        self._buf = bytearray()
        self._parts: list[Future[dict[str, Any]]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._upload_id: str | None = None
        self._done = False

    def _start_part(self, data: bytes) -> None:
        if self._upload_id is None:
            resp = self._s3.create_multipart_upload(Bucket=self._bucket, Key=self._key, **self._extra)
            self._upload_id = resp["UploadId"]
            self._pool = ThreadPoolExecutor(MAX_PARTS_IN_FLIGHT, thread_name_prefix="s3-part")
        assert self._pool is not None
        # Bound memory: wait for the oldest part before queueing more than MAX_PARTS_IN_FLIGHT.
        pending = [f for f in self._parts if not f.done()]
        if len(pending) >= MAX_PARTS_IN_FLIGHT:
            pending[0].result()
        number = len(self._parts) + 1
        self._parts.append(self._pool.submit(self._upload_part, number, data))

    def _upload_part(self, number: int, data: bytes) -> dict[str, Any]:
        resp = self._s3.upload_part(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                                    PartNumber=number, Body=data)
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def write(self, data: bytes) -> None:
        self._buf += data
        try:
            while len(self._buf) >= PART_SIZE:
                with memoryview(self._buf) as view:  # one copy of the part, not two (memory: see PART_SIZE)
                    part = bytes(view[:PART_SIZE])
                del self._buf[:PART_SIZE]
                self._start_part(part)
        except (ClientError, BotoCoreError) as e:
            self.abort()
            raise _describe(e, f"cannot upload s3://{self._bucket}/{self._key}") from None

    def commit(self) -> None:
        try:
            if self._upload_id is None:  # small object: one PUT
                self._s3.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._buf), **self._extra)
            else:
                if self._buf:
                    self._start_part(bytes(self._buf))
                parts = [f.result() for f in self._parts]
                self._s3.complete_multipart_upload(Bucket=self._bucket, Key=self._key,
                                                   UploadId=self._upload_id,
                                                   MultipartUpload={"Parts": parts})
        except (ClientError, BotoCoreError) as e:
            self.abort()
            raise _describe(e, f"cannot upload s3://{self._bucket}/{self._key}") from None
        self._done = True
        self._buf.clear()
        if self._pool:
            self._pool.shutdown()

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buf.clear()
        if self._pool:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._upload_id is not None:
            # best effort; a bucket lifecycle rule should expire stale uploads too
            with contextlib.suppress(ClientError, BotoCoreError):
                self._s3.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 region: str | None = None, sse: str | None = None, sse_kms_key_id: str | None = None,
                 client: Any = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self.client = client or s3_client(endpoint_url, region)
        self.sse_args: dict[str, str] = {}
        if sse:
            self.sse_args["ServerSideEncryption"] = sse
        if sse_kms_key_id:
            self.sse_args["SSEKMSKeyId"] = sse_kms_key_id

    def _key(self, name: str) -> str:
        if "/" in name or not name:
            raise StoreError(f"invalid object name {name!r}")
        return self.prefix + name

    def _where(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"

    def writer(self, name: str, *, private: bool = False) -> ObjectWriter:
        return S3ObjectWriter(self, self._key(name))

    def read_chunks(self, name: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The object in order, fetched as READ_RANGE byte ranges with at most MAX_RANGES_IN_FLIGHT requested
        ahead (memory stays at a few ranges whatever the size). Every range after the first must come from the
        same version of the object (If-Match its ETag)."""
        where = self._where(name)
        key = self._key(name)
        pool: ThreadPoolExecutor | None = None
        try:
            try:
                first = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{READ_RANGE - 1}")
            except ClientError as e:
                if e.response.get("Error", {}).get("Code", "") != "InvalidRange":
                    raise
                return  # an empty object
            total = _range_total(first.get("ContentRange"))  # None: the server sent the whole object
            etag = first.get("ETag")
            pool = ThreadPoolExecutor(MAX_RANGES_IN_FLIGHT, thread_name_prefix="s3-range")
            pending = deque([pool.submit(_read_all, first["Body"])])
            start = READ_RANGE
            while pending:
                while total is not None and start < total and len(pending) < MAX_RANGES_IN_FLIGHT:
                    end = min(start + READ_RANGE, total)
                    pending.append(pool.submit(self._get_range, key, start, end, etag, where))
                    start = end
                data = pending.popleft().result(timeout=_RANGE_TIMEOUT)
                for i in range(0, len(data), chunk_size):
                    yield data[i:i + chunk_size]
        except (ClientError, BotoCoreError) as e:
            raise _describe(e, f"cannot read {where}") from None
        except FutureTimeout:
            raise StoreError(f"cannot read {where}: no data for {_RANGE_TIMEOUT:g} s") from None
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def _get_range(self, key: str, start: int, end: int, etag: str | None, where: str) -> bytes:
        extra = {"IfMatch": etag} if etag else {}
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}", **extra)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code", "") in ("PreconditionFailed", "412"):
                raise StoreError(f"cannot read {where}: it changed while being read") from None
            raise
        data = _read_all(resp["Body"])
        if len(data) != end - start:
            raise StoreError(f"cannot read {where}: bytes {start}-{end - 1} came back as {len(data)} bytes")
        return data

    def put_bytes(self, name: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data, **self.sse_args)
        except (ClientError, BotoCoreError) as e:
            raise _describe(e, f"cannot write {self._where(name)}") from None

    def get_bytes(self, name: str) -> bytes:
        return b"".join(self.read_chunks(name))

    def list_names(self) -> list[str]:
        names: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"):
                names.extend(o["Key"][len(self.prefix):] for o in page.get("Contents", []))
        except (ClientError, BotoCoreError) as e:
            raise _describe(e, f"cannot list {self.url}") from None
        return sorted(names)

    def delete(self, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except (ClientError, BotoCoreError) as e:
            raise _describe(e, f"cannot delete {self._where(name)}") from None

    def size(self, name: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(name))["ContentLength"])
        except (ClientError, BotoCoreError) as e:
            raise _describe(e, f"cannot stat {self._where(name)}") from None

    def modified_at(self, name: str) -> datetime:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(name))["LastModified"]
        except (ClientError, BotoCoreError) as e:
            raise _describe(e, f"cannot stat {self._where(name)}") from None

    def check_writable(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise StoreError(f"S3 bucket {self.bucket} does not exist") from None
            raise _describe(e, f"cannot access S3 bucket {self.bucket}") from None
        except BotoCoreError as e:
            raise _describe(e, f"cannot reach S3 for bucket {self.bucket}") from None

    def pending_writes(self) -> list[PendingWrite]:
        """Incomplete multipart uploads of objects directly under the prefix (a killed writer's parts)."""
        found = []
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=self.bucket, Prefix=self.prefix):
                for u in page.get("Uploads", []):
                    if "/" not in u["Key"][len(self.prefix):]:
                        found.append(PendingWrite(u["Key"], "multipart-upload", u["Initiated"], u["UploadId"]))
        except (ClientError, BotoCoreError) as e:
            raise _describe(e, f"cannot list incomplete uploads in {self.url}") from None
        return sorted(found, key=lambda w: (w.name, w.handle))

    def discard_pending(self, pending: PendingWrite) -> None:
        """Abort one incomplete multipart upload (S3 then frees its parts); one already gone is fine."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=pending.name, UploadId=pending.handle)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code", "") != "NoSuchUpload":
                raise _describe(e, f"cannot abort the upload of s3://{self.bucket}/{pending.name}") from None
        except BotoCoreError as e:
            raise _describe(e, f"cannot abort the upload of s3://{self.bucket}/{pending.name}") from None

    def list_objects(self) -> list[ObjectInfo]:
        """Every object directly under the prefix with its size and ETag, from the listing alone (one request
        per 1,000 objects)."""
        found: list[ObjectInfo] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"):
                found.extend(ObjectInfo(o["Key"][len(self.prefix):], int(o.get("Size", 0)),
                                        f"{o.get('ETag', '')}-{o.get('LastModified', '')}")
                             for o in page.get("Contents", []))
        except (ClientError, BotoCoreError) as e:
            raise _describe(e, f"cannot list {self.url}") from None
        return sorted(found, key=lambda o: o.name)
