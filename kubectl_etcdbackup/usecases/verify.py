"""Verify a stored snapshot end to end (here, or next to the cluster's volume with the cluster's key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..catalog import legacy_note
from ..errors import StoreError
from ..keys import Keyring
from ..textutil import extract_json
from ..verify import verify_snapshot
from .source import SourceSpec, open_source


@dataclass(frozen=True)
class VerifyOptions:
    source: SourceSpec
    ref: str  # id or latest
    keyring: Keyring | None = None
    test_restore: bool = False
    allow_plaintext: bool = False
    progress: bool | None = None


@dataclass
class VerifyReport:
    result: dict[str, Any]  # id, level, revision, total_keys, total_size, tool, seconds, status
    notes: list[str] = field(default_factory=list)


def run_verify(opts: VerifyOptions) -> VerifyReport:
    """Raises the integrity/format error that makes the snapshot unusable; returns what was checked."""
    with open_source(opts.source) as src:
        if src.store is None:
            out = src.remote(["verify", opts.ref, "-o", "json", *(["--test-restore"] if opts.test_restore else [])])
            rows = extract_json(out, "[")
            if not isinstance(rows, list) or not rows:
                raise StoreError("unexpected output of `kubectl-etcdbackup verify` in the cluster")
            return VerifyReport(rows[0], src.notes)
        m = src.resolve(opts.ref, opts.keyring, allow_plaintext=opts.allow_plaintext)
        result = verify_snapshot(src.store, m, opts.keyring, test_restore=opts.test_restore,
                                 progress=opts.progress, allow_plaintext=opts.allow_plaintext)
        return VerifyReport(result.as_dict() | {"status": "ok"}, [*src.notes, *legacy_note(m)])
