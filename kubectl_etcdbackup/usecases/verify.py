"""Verify a stored snapshot end to end, or every segment of a delta chain (here, or next to the cluster's volume
with the cluster's key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..catalog import legacy_note
from ..errors import IntegrityError, StoreError, UsageError
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


@dataclass
class VerifyChainReport:
    chain: str
    window: dict[str, Any]  # ChainWindow.as_dict()
    rows: list[dict[str, Any]]  # one per segment: segment, revisions, events, status ("ok" or the problem)
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]


def run_verify_chain(opts: VerifyOptions) -> VerifyChainReport:
    """Check every segment of a chain (opts.ref: its id or latest) without replaying; the report has a row per
    segment. The command fails on report.failures (see raise_for_chain)."""
    with open_source(opts.source) as src:
        if src.store is None:
            rows = extract_json(src.remote(["verify", "--chain", opts.ref, "-o", "json"]), "[")
            if not isinstance(rows, list):
                raise StoreError("unexpected output of `kubectl-etcdbackup verify --chain` in the cluster")
            return VerifyChainReport(opts.ref, {}, rows, src.notes)
        if opts.keyring is None:
            raise UsageError("delta chains are encrypted and authenticated: give --encryption-key-file or --key-env")
        from ..continuous.chain import pick_chain
        from ..continuous.stored import check_chain, read_chains

        snapshots = src.listing(opts.keyring, allow_plaintext=opts.allow_plaintext).snapshots
        w = pick_chain(read_chains(src.store, opts.keyring, snapshots), opts.ref)
        notes = list(src.notes)
        if w.base is None:
            notes.append(f"base snapshot {w.id} of chain {w.id} is gone or not trusted: {w.state}")
        rows = [c.as_dict() for c in check_chain(src.store, opts.keyring, w)]
        return VerifyChainReport(w.id, w.as_dict(), rows, notes)


def raise_for_chain(report: VerifyChainReport) -> None:
    """IntegrityError naming the first failing segment (and how many failed), when any did."""
    bad = report.failures
    if bad:
        more = f" ({len(bad)} of {len(report.rows)} segments failed)" if len(bad) > 1 else ""
        raise IntegrityError(f"delta chain {report.chain}: segment {bad[0]['segment']}: {bad[0]['status']}{more}")
