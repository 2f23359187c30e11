"""Stores: where snapshot objects and manifests live. open_store() picks one from a URL."""

from __future__ import annotations

from urllib.parse import urlparse

from ..errors import UsageError
from .base import ObjectWriter, Store
from .file_store import FileStore

__all__ = ["FileStore", "ObjectWriter", "Store", "open_store"]


def open_store(url: str, *, s3_endpoint_url: str | None = None, s3_region: str | None = None,
               s3_sse: str | None = None, s3_sse_kms_key_id: str | None = None, create: bool = False,
               ) -> Store:
    """file:///abs/dir (or a plain absolute path) or s3://bucket/prefix."""
    if not url:
        raise UsageError("no store given (--store file:///path or s3://bucket/prefix)")
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        path = parsed.path if parsed.scheme else url
        if parsed.netloc:
            raise UsageError(f"file store URL must be file:///absolute/path, got {url}")
        if not path.startswith("/"):
            raise UsageError(f"file store path must be absolute, got {url}")
        return FileStore(path, create=create)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise UsageError(f"S3 store URL must be s3://bucket/prefix, got {url}")
        from .s3_store import S3Store  # boto3 is slow to import; only S3 users pay for it

        return S3Store(parsed.netloc, parsed.path, endpoint_url=s3_endpoint_url, region=s3_region,
                       sse=s3_sse, sse_kms_key_id=s3_sse_kms_key_id)
    raise UsageError(f"unsupported store URL scheme {parsed.scheme!r} (use file:// or s3://)")
