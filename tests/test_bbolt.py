"""The streaming bbolt check (kubectl_etcdbackup/bbolt.py): on real snapshots of etcd 3.5.1 and 3.4.23 it reports
what `snapshot status` does; damaged dbs whose etcd hash was recomputed are refused; the default backup and
`verify --verify status` use it instead of a scratch copy + etcdutl; S3 reads go by bounded ranges."""

from __future__ import annotations

import hashlib
import random
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import backup_args, run_cli, write_key
from infra.etcd_cluster import EtcdCluster

from kubectl_etcdbackup import backup as backup_mod
from kubectl_etcdbackup.backup import BackupOptions, take_backup
from kubectl_etcdbackup.bbolt import NO_FREELIST, BboltScanner, DbSummary, fnv1a64
from kubectl_etcdbackup.catalog import resolve
from kubectl_etcdbackup.errors import IntegrityError, StoreError
from kubectl_etcdbackup.etcd.client import TLSFiles
from kubectl_etcdbackup.etcd.tools import EtcdTool
from kubectl_etcdbackup.fetch import fetch_to_file, scan_object
from kubectl_etcdbackup.format import CIPHER_AES256GCM, CIPHER_NAMES, Binding
from kubectl_etcdbackup.keys import Keyring, load_keyring
from kubectl_etcdbackup.manifest import SnapshotManifest, format_time, new_snapshot_id, object_name
from kubectl_etcdbackup.sealing import SealingStream
from kubectl_etcdbackup.stores import Store, open_store
from kubectl_etcdbackup.stores import s3_store as s3_mod
from kubectl_etcdbackup.verify import check_revision, verify_snapshot

HASH = 32


# ---------------------------------------------------------------------------------------------- helpers


def snapshot_bytes(cluster: EtcdCluster, path: Path) -> bytes:
    """`etcdctl snapshot save` from the first member: the bbolt db + etcd's sha256."""
    cluster.etcdctl("snapshot", "save", str(path), endpoints=cluster.endpoints[:1], command_timeout="120s",
                    timeout=180)
    return path.read_bytes()


def scan(db: bytes, sizes: list[int] | None = None, seed: int = 0) -> DbSummary:
    """Feed db (without etcd's hash) in chunks of `sizes` (cycled), or random sizes."""
    s = BboltScanner()
    rnd = random.Random(seed)
    i = k = 0
    while i < len(db):
        n = sizes[k % len(sizes)] if sizes else rnd.randint(1, 200_000)
        s.feed(memoryview(db)[i:i + n])
        i, k = i + n, k + 1
    return s.finish()


def status_of(tool: EtcdTool, snap: bytes, tmp: Path) -> tuple[int, int, int]:
    p = tmp / f"status-{uuid.uuid4().hex[:6]}.db"
    p.write_bytes(snap)
    st = tool.snapshot_status(str(p))
    p.unlink()
    return st.revision, st.total_key, st.total_size


def with_hash(db: bytes) -> bytes:
    return db + hashlib.sha256(db).digest()


@dataclass
class Tree:
    """An independent, random-access reading of a bbolt file (for building damaged copies)."""

    db: bytearray
    page_size: int
    hwm: int
    root: int

    @classmethod
    def read(cls, db: bytes) -> Tree:
        ps = struct.unpack_from("<I", db, 16 + 8)[0]
        m = struct.unpack_from("<IIIIQQQQQQ", db, 16)
        return cls(bytearray(db), ps, m[7], m[4])

    def header(self, pg: int) -> tuple[int, int, int, int]:
        return struct.unpack_from("<QHHI", self.db, pg * self.page_size)

    def children(self, pg: int) -> list[int]:
        _, flags, n, _ = self.header(pg)
        assert flags == 1
        return [struct.unpack_from("<IIQ", self.db, pg * self.page_size + 16 + 16 * i)[2] for i in range(n)]

    def leaf_items(self, pg: int, base: int | None = None) -> list[tuple[int, bytes, bytes]]:
        """(flags, key, value) of a leaf page (at base: an inline page inside a value)."""
        at = pg * self.page_size if base is None else base
        _, flags, n, _ = struct.unpack_from("<QHHI", self.db, at)
        items = []
        for i in range(n):
            e = at + 16 + 16 * i
            f, pos, ks, vs = struct.unpack_from("<IIII", self.db, e)
            items.append((f, bytes(self.db[e + pos:e + pos + ks]), bytes(self.db[e + pos + ks:e + pos + ks + vs])))
        return items

    def pages(self, root: int) -> tuple[list[int], list[int]]:
        """(branch pages, leaf pages in key order) of the tree at root."""
        branches, leaves, stack = [], [], [root]
        while stack:
            pg = stack.pop()
            if self.header(pg)[1] == 1:
                branches.append(pg)
                stack.extend(reversed(self.children(pg)))
            else:
                leaves.append(pg)
        return branches, leaves

    def buckets(self) -> dict[bytes, int]:
        """Top-level bucket name -> root page (0: inline)."""
        out = {}
        for leaf in self.pages(self.root)[1]:
            for _f, k, v in self.leaf_items(leaf):
                out[k] = struct.unpack_from("<Q", v)[0]
        return out

    def reachable(self) -> set[int]:
        seen = {0, 1}

        def walk(root: int) -> None:
            branches, leaves = self.pages(root)
            for pg in branches + leaves:
                seen.update(range(pg, pg + self.header(pg)[3] + 1))
            for leaf in leaves:
                for f, _k, v in self.leaf_items(leaf):
                    if f & 1 and struct.unpack_from("<Q", v)[0]:
                        walk(struct.unpack_from("<Q", v)[0])

        walk(self.root)
        return seen

    def set_meta(self, **fields: int) -> None:
        """Rewrite both meta pages (root=, freelist=, pgid=) with valid checksums."""
        names = ["magic", "version", "page_size", "flags", "root", "sequence", "freelist", "pgid", "txid"]
        for pg in (0, 1):
            at = pg * self.page_size + 16
            vals = list(struct.unpack_from("<IIIIQQQQQ", self.db, at))
            for k, v in fields.items():
                vals[names.index(k)] = v
            struct.pack_into("<IIIIQQQQQ", self.db, at, *vals)
            struct.pack_into("<Q", self.db, at + 56, fnv1a64(self.db[at:at + 56]))

    def set_header(self, pg: int, *, pid: int | None = None, flags: int | None = None) -> None:
        old = self.header(pg)
        struct.pack_into("<QH", self.db, pg * self.page_size, old[0] if pid is None else pid,
                         old[1] if flags is None else flags)


def seal_into(store: Store, snap: bytes, ring: Keyring, *, revision: int = 1, checks: list[Any] | None = None,
              ) -> SnapshotManifest:
    """Store snap as a snapshot object of the usual kind (zstd + AES-256-GCM), via SealingStream as a backup does;
    returns its manifest (not saved). The checks made while streaming are appended to `checks` when given."""
    created = datetime.now(UTC)
    sid = new_snapshot_id(created, "bbolt-test")
    writer = store.writer(object_name(sid))
    stream = SealingStream(writer, ring.primary, Binding(sid, format_time(created), "1"))
    for i in range(0, len(snap), 1 << 20):
        stream.add(snap[i:i + (1 << 20)])
    stream.check.check()
    sealed = stream.finish()
    writer.commit()
    if checks is not None:
        checks.append(stream.check)
    return SnapshotManifest(
        id=sid, created_at=format_time(created), etcd_revision=revision, key_count=0, etcd_version="3.5.1",
        cluster_id="1", member_id="1", member_endpoint="test", raw_size=sealed.raw_size,
        stored_size=sealed.stored_size, raw_sha256=sealed.raw_sha256, stored_sha256=sealed.stored_sha256,
        codec="zstd", cipher=CIPHER_NAMES[CIPHER_AES256GCM], key_id=ring.primary_id.hex(), duration_seconds=0.0,
        tool_version="test")


def tls_of(cluster: EtcdCluster) -> TLSFiles | None:
    t = cluster.client_tls
    return TLSFiles(str(t.ca), str(t.cert), str(t.key)) if t else None


# ---------------------------------------------------------------------------------------------- real snapshots


@pytest.mark.parametrize("version", ["3.5", "3.4"])
def test_page_walk_matches_snapshot_status(version: str, request, tmp_path) -> None:
    cluster: EtcdCluster = request.getfixturevalue("etcd35_tls_cluster" if version == "3.5"
                                                   else "etcd34_tls_cluster")
    prefix = f"/bbolt-test/{uuid.uuid4().hex[:8]}/"
    cluster.put_many(prefix + "small-", 300, 100)
    cluster.put_many(prefix + "big-", 6, 40_000)  # values over a page: overflow pages, last keys past page 1
    for i in range(0, 300, 7):
        cluster.etcdctl("del", f"{prefix}small-{i:06d}")  # tombstones
    before = cluster.revision()
    snap = snapshot_bytes(cluster, tmp_path / "snap.db")
    after = cluster.revision()
    tool = EtcdTool(str(cluster.bins.restore_tool))
    rev, keys, size = status_of(tool, snap, tmp_path)

    got = scan(snap[:-HASH], [1 << 20])
    assert (got.revision, got.total_keys, got.total_size) == (rev, keys, size)
    assert before <= got.revision <= after
    assert got.buckets["key"] >= 300 + 6 + 43 and sum(got.buckets.values()) == keys
    for sizes in ([4095, 4097, 7, 65536], None):  # any chunking: pages and keys split across chunks
        assert scan(snap[:-HASH], sizes) == got


def test_page_walk_after_compaction_defrag_and_a_final_delete(etcd_cluster_factory, tmp_path) -> None:
    cluster = etcd_cluster_factory("3.5", 1, True)
    cluster.put_many("/c/a-", 500, 300)
    cluster.put_many("/c/b-", 20, 9000)
    for i in range(0, 500, 3):
        cluster.etcdctl("del", f"/c/a-{i:06d}")
    cluster.etcdctl("compact", str(cluster.revision() - 10))
    cluster.etcdctl("defrag", command_timeout="60s")
    cluster.put("/c/last", "x")
    cluster.etcdctl("del", "/c/last")  # the db's last key is a tombstone ('t')
    snap = snapshot_bytes(cluster, tmp_path / "snap.db")
    rev, keys, size = status_of(EtcdTool(str(cluster.bins.restore_tool)), snap, tmp_path)
    got = scan(snap[:-HASH])
    assert (got.revision, got.total_keys, got.total_size) == (rev, keys, size)
    assert got.revision == cluster.revision()


def test_never_written_etcd_is_accepted(etcd_cluster_factory, tmp_path) -> None:
    cluster = etcd_cluster_factory("3.5", 1, True)
    snap = snapshot_bytes(cluster, tmp_path / "snap.db")
    rev, keys, size = status_of(EtcdTool(str(cluster.bins.restore_tool)), snap, tmp_path)
    got = scan(snap[:-HASH])
    assert (got.revision, got.total_keys, got.total_size) == (rev, keys, size) == (0, keys, size)
    assert got.buckets["key"] == 0
    m = seal_into(open_store(f"file://{tmp_path / 'store'}", create=True), snap, Keyring.of(b"k" * 32))
    check_revision(m, got.revision)  # revision 1 with no revision in the db: fine

    key = write_key(tmp_path / "key")
    manifest = take_backup(BackupOptions(cluster.endpoints, open_store(f"file://{tmp_path / 'b'}", create=True),
                                         load_keyring(str(key), None), tls_of(cluster), progress=False))
    assert manifest.verified and manifest.verification["level"] == "status"
    assert manifest.etcd_revision == 1 and manifest.verification["revision"] == 0


# ---------------------------------------------------------------------------------------------- damage


@pytest.fixture(scope="module")
def real_db(etcd35_tls_cluster: EtcdCluster, tmp_path_factory) -> bytes:
    """A real etcd 3.5 db (without etcd's hash) whose key bucket has a branch root."""
    etcd35_tls_cluster.put_many(f"/bbolt-damage/{uuid.uuid4().hex[:6]}/", 200, 2000)
    snap = snapshot_bytes(etcd35_tls_cluster, tmp_path_factory.mktemp("damage") / "snap.db")
    return snap[:-HASH]


def _key_tree(t: Tree) -> tuple[list[int], list[int]]:
    branches, leaves = t.pages(t.buckets()[b"key"])
    assert branches and len(leaves) > 4
    return branches, leaves


def _meta_garbled(t: Tree) -> None:
    struct.pack_into("<Q", t.db, 16 + 16, t.root + 1)  # meta 0 root changed, checksum not updated
    struct.pack_into("<Q", t.db, t.page_size + 16 + 16, t.root + 1)


def _root_is_a_key_leaf(t: Tree) -> None:
    t.set_meta(root=_key_tree(t)[1][1])  # valid checksums, but the root bucket is now a page of revisions


def _leaf_id(t: Tree) -> None:
    leaf = _key_tree(t)[1][2]
    t.set_header(leaf, pid=leaf + 1)


def _branch_type(t: Tree) -> None:
    t.set_header(_key_tree(t)[0][0], flags=0x10)


def _double_reference(t: Tree) -> None:
    branch = _key_tree(t)[0][-1]
    kids = t.children(branch)
    struct.pack_into("<Q", t.db, branch * t.page_size + 16 + 16 * 1 + 8, kids[0])


def _out_of_bounds(t: Tree) -> None:
    branch = _key_tree(t)[0][-1]
    struct.pack_into("<Q", t.db, branch * t.page_size + 16 + 16 * 1 + 8, t.hwm + 3)


def _leaves_swapped(t: Tree) -> None:
    single = [pg for pg in _key_tree(t)[1] if t.header(pg)[3] == 0]  # one-slot pages: swappable
    a, b = single[1], single[-2]
    ps = t.page_size
    pa, pb = bytes(t.db[a * ps:(a + 1) * ps]), bytes(t.db[b * ps:(b + 1) * ps])
    t.db[a * ps:(a + 1) * ps], t.db[b * ps:(b + 1) * ps] = pb, pa
    t.set_header(a, pid=a)
    t.set_header(b, pid=b)


def _not_a_revision(t: Tree) -> None:
    leaf = _key_tree(t)[1][3]
    at = leaf * t.page_size
    n = t.header(leaf)[2]
    e = at + 16 + 16 * (n - 1)
    _f, pos, _ks, _vs = struct.unpack_from("<IIII", t.db, e)
    t.db[e + pos + 8] = ord("x")  # main rev '_' sub rev -> not a revision key


def _truncated(t: Tree) -> None:
    del t.db[-t.page_size:]


DAMAGE: dict[str, tuple[Callable[[Tree], None], str]] = {
    "both meta pages garbled": (_meta_garbled, "no valid bbolt meta page"),
    "root bucket points at a key page": (_root_is_a_key_leaf, "entries that are not buckets"),
    "leaf page id wrong": (_leaf_id, "not a readable branch or leaf page"),
    "branch page type wrong": (_branch_type, "not a readable branch or leaf page"),
    "page referenced twice": (_double_reference, "referenced twice"),
    "child beyond the end": (_out_of_bounds, "beyond the"),
    "leaves swapped": (_leaves_swapped, "out of order"),
    "key is not a revision": (_not_a_revision, "not a revision"),
    "last page missing": (_truncated, "truncated"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_db_with_recomputed_hash_is_refused(kind: str, real_db: bytes) -> None:
    damage, message = DAMAGE[kind]
    assert scan(real_db).total_keys > 200  # the undamaged db passes
    t = Tree.read(real_db)
    damage(t)
    damaged = bytes(t.db)
    with pytest.raises(IntegrityError, match=message):
        scan(damaged)
    with pytest.raises(IntegrityError, match=message):
        scan(damaged, [4097, 333, 1 << 20])


@pytest.mark.parametrize("kind", ["leaves swapped", "page referenced twice"])
def test_damaged_snapshot_is_refused_by_backup_verify_and_restore(kind: str, real_db: bytes, tmp_path,
                                                                   monkeypatch) -> None:
    t = Tree.read(real_db)
    DAMAGE[kind][0](t)
    snap = with_hash(bytes(t.db))  # etcd's hash matches: only the page walk can tell
    ring = Keyring.of(b"k" * 32)
    store = open_store(f"file://{tmp_path / 'store'}", create=True)
    streamed: list[Any] = []
    m = seal_into(store, snap, ring, checks=streamed)
    # The backup's default verification: the walk of the pages decoded while streaming.
    opts = BackupOptions(["unused"], store, ring, progress=False)
    with pytest.raises(IntegrityError, match=DAMAGE[kind][1]):
        backup_mod._verify_new(opts, store, m, streamed[0])
    # verify --verify status: one streaming pass over the stored object.
    with pytest.raises(IntegrityError, match=DAMAGE[kind][1]):
        verify_snapshot(store, m, ring, progress=False)
    # restore's fetch pass.
    from kubectl_etcdbackup.restore import _restore_into_staging
    from kubectl_etcdbackup.restore_plan import MemberSpec, plan_restore

    member = MemberSpec("m0", str(tmp_path / "m0.etcd"), "m0=https://127.0.0.1:2380", "https://127.0.0.1:2380",
                        bump_revision=0, mark_compacted=False)
    plan = plan_restore(m.id, store.url, member, data_dir_exists=False, move_aside=False)
    Path(plan.staging_dir).mkdir()
    with pytest.raises(IntegrityError, match=DAMAGE[kind][1]):
        _restore_into_staging(plan, store, m, ring, EtcdTool(), False, False)


def test_synced_freelist_is_checked(real_db: bytes, tmp_path) -> None:
    """etcd does not sync bbolt's freelist; bbolt's default does. Append one listing every unreachable page:
    etcdutl (tx.Check) accepts the result and so does the walk; a page missing from it, or a page both free
    and in use, is refused."""
    t = Tree.read(real_db)
    free = sorted(set(range(2, t.hwm)) - t.reachable())
    assert free  # etcd's db always has some

    def with_freelist(ids: list[int]) -> bytes:
        f = Tree(bytearray(t.db), t.page_size, t.hwm, t.root)
        ps = t.page_size
        body = struct.pack(f"<{len(ids)}Q", *ids)
        span = -(-(16 + len(body)) // ps)
        page = bytearray(span * ps)
        struct.pack_into("<QHHI", page, 0, t.hwm, 0x10, len(ids), span - 1)
        page[16:16 + len(body)] = body
        f.db += page
        f.set_meta(freelist=t.hwm, pgid=t.hwm + span)
        return bytes(f.db)

    good = with_freelist(free)
    got = scan(good)
    assert got.free_pages == len(free) and got.total_keys == scan(real_db).total_keys
    assert scan(real_db).free_pages == -1  # etcd's own: not synced
    snap = with_hash(good)
    p = tmp_path / "freelist.db"
    p.write_bytes(snap)
    st = EtcdTool().snapshot_status(str(p))  # etcdutl 3.5 runs bbolt's tx.Check: our freelist is right
    assert (st.revision, st.total_key) == (got.revision, got.total_keys)
    with pytest.raises(IntegrityError, match="neither reachable nor free"):
        scan(with_freelist(free[1:]))
    in_use = sorted(t.reachable() - {0, 1})[0]
    with pytest.raises(IntegrityError, match="free and in use|freed"):
        scan(with_freelist(sorted([*free, in_use])))
    assert NO_FREELIST == (1 << 64) - 1


def test_not_a_bbolt_file_is_refused() -> None:
    with pytest.raises(IntegrityError, match="no valid bbolt meta page"):
        scan(bytes(range(256)) * 64)
    s = BboltScanner()
    s.feed(b"\0" * 10)
    with pytest.raises(IntegrityError, match="no bbolt meta pages"):
        s.finish()


# ---------------------------------------------------------------------------------------------- where it is used


def test_default_backup_checks_while_streaming(etcd35_tls_cluster, tmp_path, monkeypatch, capsys) -> None:
    """--verify status: no read back, no scratch copy, no etcdutl; the walk's numbers are in the manifest."""
    def no_tool(*_a, **_k):
        raise AssertionError("etcdutl must not run for --verify status")

    monkeypatch.setattr(EtcdTool, "snapshot_status", no_tool)
    monkeypatch.setattr(EtcdTool, "restore", no_tool)
    reads: list[str] = []
    from kubectl_etcdbackup.stores.file_store import FileStore
    real_read = FileStore.read_chunks

    def counting(self, name, chunk_size=1 << 20):
        reads.append(name)
        return real_read(self, name, chunk_size)

    monkeypatch.setattr(FileStore, "read_chunks", counting)
    work = tmp_path / "work"
    work.mkdir()
    key = write_key(tmp_path / "key")
    store = f"file://{tmp_path / 'store'}"
    r = run_cli(capsys, *backup_args(etcd35_tls_cluster, store, key, "--work-dir", str(work)))
    assert r.rc == 0, r.err
    sid = r.json()["id"]
    assert not [n for n in reads if n == object_name(sid)] and not list(work.iterdir())
    m = resolve(open_store(store), sid, load_keyring(str(key), None))
    assert m.verification["level"] == "status" and m.verification["tool"] == "bbolt page walk"
    assert m.verification["revision"] == m.etcd_revision and m.db_total_keys >= 200

    monkeypatch.undo()
    # verify --verify status: the same numbers from one streaming pass over the stored object.
    ring = load_keyring(str(key), None)
    again = verify_snapshot(open_store(store), m, ring, progress=False)
    assert (again.revision, again.total_keys, again.tool) == (m.verification["revision"], m.db_total_keys,
                                                               "bbolt page walk")
    # --verify restore keeps etcdutl's checks, and they agree.
    full = verify_snapshot(open_store(store), m, ring, test_restore=True, work_dir=str(work), progress=False)
    assert (full.revision, full.total_keys, full.level) == (again.revision, again.total_keys, "restore")
    assert full.tool.startswith("etcdutl")


# ---------------------------------------------------------------------------------------------- S3 ranges


@pytest.fixture
def small_ranges(monkeypatch) -> None:
    monkeypatch.setattr(s3_mod, "READ_RANGE", 64 << 10)
    monkeypatch.setattr(s3_mod, "MAX_RANGES_IN_FLIGHT", 3)


def test_s3_reads_by_bounded_ranges(s3_store_url, s3_server, small_ranges, monkeypatch) -> None:
    store = open_store(s3_store_url, s3_endpoint_url=s3_server.endpoint_url)
    data = random.Random(3).randbytes(5 * (64 << 10) + 1234)
    store.put_bytes("obj", data)
    store.put_bytes("empty", b"")
    store.put_bytes("small", b"abc")
    calls: list[str] = []
    real = store.client.get_object

    def get_object(**kw):
        calls.append(kw.get("Range", ""))
        return real(**kw)

    monkeypatch.setattr(store.client, "get_object", get_object)
    chunks = list(store.read_chunks("obj", chunk_size=10_000))
    assert b"".join(chunks) == data and max(map(len, chunks)) == 10_000
    assert len(calls) == 6 and all(c.startswith("bytes=") for c in calls)
    assert store.get_bytes("empty") == b"" and store.get_bytes("small") == b"abc"

    # The object replaced between two ranges: refused, not spliced.
    it = store.read_chunks("obj", chunk_size=64 << 10)
    first = next(it)
    monkeypatch.setattr(store.client, "get_object", real)
    store.put_bytes("obj", bytes(len(data)))
    with pytest.raises(StoreError, match="changed while being read"):
        b"".join(it)  # ranges 4-6 (at least) are asked for after the change
    assert len(first) == 64 << 10


def test_restore_and_verify_from_s3_by_ranges(real_db, s3_store_url, s3_server, small_ranges, tmp_path) -> None:
    ring = Keyring.of(b"k" * 32)
    snap = with_hash(real_db)
    store = open_store(s3_store_url, s3_endpoint_url=s3_server.endpoint_url)
    m = seal_into(store, snap, ring)
    assert m.stored_size > 4 * (64 << 10)  # several ranges
    assert scan_object(store, m, ring).total_keys == scan(real_db).total_keys
    pages = BboltScanner()
    out = fetch_to_file(store, m, ring, tmp_path / "out.db", durable=False, pages=pages)
    assert out.read_bytes() == snap and pages.finish().revision == scan(real_db).revision
