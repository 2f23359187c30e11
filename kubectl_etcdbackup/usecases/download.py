"""Download a verified, decrypted etcd snapshot file (as `etcdctl snapshot save` would have written it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import legacy_note
from ..fetch import fetch_to_file
from ..keys import Keyring
from ..manifest import SnapshotManifest
from .source import SourceSpec, open_source


@dataclass(frozen=True)
class DownloadOptions:
    source: SourceSpec
    ref: str
    dest: str
    keyring: Keyring | None = None
    allow_plaintext: bool = False
    progress: bool | None = None


@dataclass
class DownloadReport:
    manifest: SnapshotManifest
    path: Path
    notes: list[str] = field(default_factory=list)


def run_download(opts: DownloadOptions) -> DownloadReport:
    """The file appears (mode 0600) only once every check passed."""
    with open_source(opts.source) as src:
        store = src.readable_store("snapshot download")
        m = src.resolve(opts.ref, opts.keyring, allow_plaintext=opts.allow_plaintext)
        path = fetch_to_file(store, m, opts.keyring, opts.dest, opts.progress, allow_plaintext=opts.allow_plaintext)
        return DownloadReport(m, path, [*src.notes, *legacy_note(m)])
