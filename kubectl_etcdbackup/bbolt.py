"""A streaming check of a bbolt file (etcd's backend db), pure: feed() the db bytes in order, finish() walks the
tree from the meta page and returns what `etcdutl snapshot status` would report (revision, total keys, size),
or raises IntegrityError when the db would not open or is inconsistent.

The layout (go.etcd.io/bbolt page.go, db.go, node.go, bucket.go, freelist.go):
- the file is a sequence of pages of `page_size` bytes; page N starts at N * page_size. Pages 0 and 1 are meta
  pages; bbolt uses the valid one with the higher txid. A page header is id u64, flags u16, count u16,
  overflow u32 (a page spans 1 + overflow slots);
- meta (after the header): magic 0xED0CDAED, version 2, page size, flags, root bucket {root pgid, sequence},
  freelist pgid (all ones: not synced), pgid (the high water mark: pages in use), txid, checksum (FNV-1a 64 of
  the 56 bytes before it);
- branch page: count elements {pos u32, ksize u32, pgid u64}; leaf page: count elements {flags u32, pos u32,
  ksize u32, vsize u32}; key at element address + pos, value right after the key. A leaf element with flag 1
  is a sub-bucket: its value is {root pgid, sequence} and, when root is 0, the bucket's own page inline;
- freelist page: count u64 page ids (count 0xFFFF: the real count is the first u64).
etcd's `key` bucket holds revision keys: main rev (8 bytes big-endian) '_' sub rev (8 bytes), + 't' for a
tombstone (server/mvcc/revision.go); its last key is the db's revision.

Pages arrive in file order and a branch page may point back, so every page slot is recorded compactly (kind,
count, overflow, the main revision of its last key; the child ids of branch pages; the sub-bucket entries of
leaves that have any) and the tree is walked at the end: about 23 bytes per page (46 MB for an 8 GB db), never
the db itself. Unreferenced (free) pages may hold stale or half-rewritten data and are never trusted; the walk
checks what bbolt's `tx.Check` does: page ids and types, bounds, no page referenced twice, no freed page
reachable, every page below the high water mark either reachable or free (when the freelist is synced), and
revision keys in order in the `key` bucket.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import IntegrityError

MAGIC = 0xED0CDAED
VERSION = 2
BRANCH, LEAF, META, FREELIST = 0x01, 0x02, 0x04, 0x10
BUCKET_LEAF = 0x01
NO_FREELIST = (1 << 64) - 1
KEY_BUCKET = b"key"

_HEADER = struct.Struct("<QHHI")  # id, flags, count, overflow
_META = struct.Struct("<IIIIQQQQQQ")  # magic, version, page size, flags, root, sequence, freelist, pgid, txid, sum
_LEAF_ELEM = struct.Struct("<IIII")  # flags, pos, ksize, vsize
_BUCKET = struct.Struct("<QQ")  # root pgid, sequence
_U64 = struct.Struct("<Q")
_HEADER_SIZE = 16
_ELEM_SIZE = 16
_META_SUM_BYTES = 56  # the meta fields the checksum covers
_MIN_PAGE, _MAX_PAGE = 512, 1 << 20

_NOT_A_REVISION = (1 << 64) - 1  # the last key of a leaf is not an etcd revision key
_BAD = 0xFF  # a slot whose page could not be read (only an error if the tree reaches it)


def fnv1a64(data: bytes | memoryview) -> int:
    h = 0xCBF29CE484222325
    for b in bytes(data):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def revision_of(key: bytes) -> int | None:
    """The main revision of an etcd `key` bucket key, None when it is not one."""
    if len(key) in (17, 18) and key[8] == 0x5F and (len(key) == 17 or key[17] == 0x74):
        return int.from_bytes(key[:8], "big")
    return None


@dataclass(frozen=True)
class Meta:
    page_id: int
    magic: int
    version: int
    page_size: int
    flags: int
    root: int
    freelist: int
    pgid: int  # high water mark: pages in use
    txid: int
    checksum: int
    problem: str  # "" when valid

    @classmethod
    def parse(cls, page_id: int, raw: bytes | memoryview) -> Meta:
        magic, version, page_size, flags, root, _seq, freelist, pgid, txid, checksum = _META.unpack_from(raw)
        problem = ""
        if magic != MAGIC:
            problem = f"bad magic {magic:#x}"
        elif version != VERSION:
            problem = f"unsupported version {version}"
        elif checksum != fnv1a64(raw[:_META_SUM_BYTES]):
            problem = "checksum mismatch"
        elif page_size < _MIN_PAGE or page_size > _MAX_PAGE or page_size & (page_size - 1):
            problem = f"bad page size {page_size}"
        elif pgid < 2 or root < 2 or root >= pgid or (freelist != NO_FREELIST and not 2 <= freelist < pgid):
            problem = f"bad page ids (root {root}, freelist {freelist}, high water mark {pgid})"
        return cls(page_id, magic, version, page_size, flags, root, freelist, pgid, txid, checksum, problem)


@dataclass(frozen=True)
class DbSummary:
    """What the walk found; revision and total_keys as `etcdutl snapshot status` reports them."""

    revision: int  # main revision of the last key in the `key` bucket (0: none)
    total_keys: int  # entries in all top-level buckets
    total_size: int  # pages in use x page size (the db part of a snapshot)
    page_size: int
    pages: int
    txid: int
    buckets: dict[str, int] = field(default_factory=dict)  # top-level bucket -> entries
    free_pages: int = -1  # -1: freelist not synced


@dataclass
class _Bucket:
    name: bytes
    root: int  # 0: inline
    inline_count: int = 0
    inline_rev: int = 0


@dataclass
class _Want:
    """Bytes [start, end) of the stream that a page needs and that were not in view when it was read."""

    start: int
    end: int
    handler: Callable[[bytes], None]
    slot: int
    parts: list[bytes] = field(default_factory=list)
    got: int = 0


class BboltScanner:
    """feed() the db bytes in order (any chunking), then finish()."""

    def __init__(self) -> None:
        self.page_size = 0
        self.failed = ""  # the decoder itself failed (reported by finish(); the stream goes on)
        self.metas: list[Meta] = []
        self._size = 0  # bytes fed
        self._carry = b""  # an incomplete slot (or the start of the file before the page size is known)
        self._carry_at = 0
        self._done_upto = 0  # bytes before this offset were handed to the wants already
        self._kind = bytearray()
        self._count = array("H")
        self._overflow = array("I")
        self._rev = array("Q")
        self._children: dict[int, bytes] = {}  # branch slot -> child page ids (u64 little-endian)
        self._buckets: dict[int, list[_Bucket]] = {}  # leaf slot -> its sub-bucket entries
        self._freelists: dict[int, bytes] = {}  # freelist slot (named by a meta) -> page ids
        self._wants: list[_Want] = []
        self._limit = 0  # the end of the pages in use, once meta 0 is read: wants past it are refused
        self._view: memoryview | None = None  # the slots being scanned
        self._view_at = 0
        self._slot_struct: struct.Struct | None = None
        self._summary: DbSummary | None = None

    # ---------------------------------------------------------------------------------------------- feeding

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if not data or self.failed:
            return
        try:
            self._feed(memoryview(data).cast("B"))
        except Exception as e:  # noqa: BLE001 - a decoder bug must never break the stream it watches
            self.failed = f"{type(e).__name__}: {e}"

    def _feed(self, mv: memoryview) -> None:
        self._size += len(mv)
        if not self.page_size:
            self._carry += bytes(mv)
            if len(self._carry) < _HEADER_SIZE + _META.size:
                return
            self._start(self._carry)
            mv, self._carry = memoryview(self._carry), b""
        ps = self.page_size
        pos = 0
        if self._carry:
            need = ps - len(self._carry)
            if len(mv) < need:
                self._carry += bytes(mv)
                return
            slot = memoryview(self._carry + bytes(mv[:need]))
            self._scan(slot, self._carry_at)
            pos = need
            self._carry = b""
        whole = (len(mv) - pos) // ps * ps
        if whole:
            self._scan(mv[pos:pos + whole], self._size - len(mv) + pos)
            pos += whole
        if pos < len(mv):
            self._carry = bytes(mv[pos:])
            self._carry_at = self._size - len(self._carry)

    def _start(self, head: bytes) -> None:
        """The page size, from meta page 0 (bbolt falls back to the OS page size when meta 0 is unreadable)."""
        first = Meta.parse(0, memoryview(head)[_HEADER_SIZE:_HEADER_SIZE + _META.size])
        ps = first.page_size if first.magic == MAGIC and _MIN_PAGE <= first.page_size <= _MAX_PAGE and not (
            first.page_size & (first.page_size - 1)) else 4096
        self.page_size = ps
        self._slot_struct = struct.Struct(f"<QHHI{ps - _HEADER_SIZE}x")
        if not first.problem:
            self._limit = first.pgid * ps

    def _scan(self, mv: memoryview, at: int) -> None:
        """Record every whole slot of mv (starting at stream offset at), then hand its bytes to the wants."""
        ps = self.page_size
        first = at // ps
        self._view, self._view_at = mv, at
        kind, count, overflow, rev = self._kind, self._count, self._overflow, self._rev
        limit_slots = (self._limit // ps) if self._limit else 1 << 62
        elems_fit = ps - _HEADER_SIZE
        for i, (pid, flags, n, ovf) in enumerate(self._slot_struct.iter_unpack(mv)):  # type: ignore[union-attr]
            slot = first + i
            if pid != slot or slot + ovf >= limit_slots and slot >= 2:
                kind.append(_BAD)
                count.append(0)
                overflow.append(0)
                rev.append(0)
                continue
            kind.append(flags if flags in (BRANCH, LEAF, META, FREELIST) else _BAD)
            count.append(n)
            overflow.append(ovf)
            if flags == LEAF:
                # The common case inline: the elements and the last key in this slot, no sub-bucket.
                off = i * ps
                if n and n * _ELEM_SIZE <= elems_fit:
                    e = off + _HEADER_SIZE + (n - 1) * _ELEM_SIZE
                    _f, pos, ksize, _v = _LEAF_ELEM.unpack_from(mv, e)
                    k = e + pos
                    if pos and k + ksize <= off + ps and not any(mv[off + _HEADER_SIZE:e + 1:_ELEM_SIZE]):
                        if (ksize == 17 or ksize == 18 and mv[k + 17] == 0x74) and mv[k + 8] == 0x5F:
                            rev.append(int.from_bytes(mv[k:k + 8], "big"))
                        else:
                            rev.append(_NOT_A_REVISION)
                        continue
                rev.append(0)
                if n:
                    self._leaf(slot, n)
                continue
            rev.append(0)
            if flags == BRANCH:
                self._branch(slot, n)
            elif flags == META and slot < 2:
                self._meta(slot, mv[i * ps:i * ps + ps])
            elif flags == FREELIST and any(m.freelist == slot for m in self.metas if not m.problem):
                self._freelist(slot, n)
        self._deliver(mv, at)
        self._view = None

    def _need(self, slot: int, start: int, end: int, handler: Callable[[bytes], None]) -> None:
        """Call handler with stream bytes [start, end) of the page at slot: now when in view, else once they
        have arrived. Ranges outside the page's slots, or already gone, make the slot unreadable."""
        ps = self.page_size
        span_end = (slot + 1 + self._overflow[slot]) * ps
        if start < slot * ps or end > span_end or start > end:
            self._kind[slot] = _BAD
            return
        v, at = self._view, self._view_at
        if v is not None and at <= start and end <= at + len(v):
            handler(bytes(v[start - at:end - at]))
        elif start < self._done_upto:
            self._kind[slot] = _BAD
        else:
            self._wants.append(_Want(start, end, handler, slot))

    def _deliver(self, mv: memoryview, at: int) -> None:
        """Hand stream bytes [at, at + len(mv)) to the wants (once each); handlers may ask for more."""
        end = at + len(mv)
        self._done_upto = at  # wants made while delivering may still start in mv
        keep: list[_Want] = []
        todo, self._wants = self._wants, []
        while todo:
            for w in todo:
                lo, hi = max(w.start + w.got, at), min(w.end, end)
                if lo < hi:
                    w.parts.append(bytes(mv[lo - at:hi - at]))
                    w.got += hi - lo
                if w.got < w.end - w.start:
                    keep.append(w)
                elif self._kind[w.slot] != _BAD:
                    w.handler(b"".join(w.parts))
            todo, self._wants = self._wants, []
        self._wants = keep
        self._done_upto = end

    # ---------------------------------------------------------------------------------------------- pages

    def _meta(self, slot: int, page: memoryview) -> None:
        m = Meta.parse(slot, page[_HEADER_SIZE:_HEADER_SIZE + _META.size])
        self.metas.append(m)
        if slot == 0 and not m.problem:
            self._limit = m.pgid * self.page_size

    def _leaf(self, slot: int, n: int) -> None:
        base = slot * self.page_size + _HEADER_SIZE
        self._need(slot, base, base + n * _ELEM_SIZE, lambda elems: self._leaf_elements(slot, base, elems))

    def _leaf_elements(self, slot: int, base: int, elems: bytes) -> None:
        n = len(elems) // _ELEM_SIZE
        last = base + (n - 1) * _ELEM_SIZE
        _flags, pos, ksize, _vsize = _LEAF_ELEM.unpack_from(elems, (n - 1) * _ELEM_SIZE)

        def last_key(key: bytes) -> None:
            r = revision_of(key)
            self._rev[slot] = _NOT_A_REVISION if r is None else r

        self._need(slot, last + pos, last + pos + ksize, last_key)
        if elems[::_ELEM_SIZE].count(0) == n:  # no element has the bucket flag (flags are little-endian)
            return
        found: list[_Bucket] = []
        self._buckets[slot] = found

        def entry(ksize: int) -> Callable[[bytes], None]:
            return lambda kv: found.append(self._bucket(kv[:ksize], kv[ksize:]))

        for i in range(n):
            flags, pos, ksize, vsize = _LEAF_ELEM.unpack_from(elems, i * _ELEM_SIZE)
            if flags & BUCKET_LEAF:
                at = base + i * _ELEM_SIZE + pos
                self._need(slot, at, at + ksize + vsize, entry(ksize))

    def _bucket(self, name: bytes, value: bytes) -> _Bucket:
        if len(value) < _BUCKET.size:
            return _Bucket(name, -1)
        root, _seq = _BUCKET.unpack_from(value)
        b = _Bucket(name, root)
        if root == 0:  # inline: the bucket's only (leaf) page follows its header
            page = value[_BUCKET.size:]
            if len(page) < _HEADER_SIZE:
                b.root = -1
                return b
            _id, flags, n, _ovf = _HEADER.unpack_from(page)
            if n and (flags != LEAF or len(page) < _HEADER_SIZE + n * _ELEM_SIZE):
                b.root = -1
                return b
            b.inline_count = n
            if n:
                e = _HEADER_SIZE + (n - 1) * _ELEM_SIZE
                _f, pos, ksize, _v = _LEAF_ELEM.unpack_from(page, e)
                if e + pos + ksize > len(page):
                    b.root = -1
                    return b
                r = revision_of(page[e + pos:e + pos + ksize])
                b.inline_rev = _NOT_A_REVISION if r is None else r
        return b

    def _branch(self, slot: int, n: int) -> None:
        base = slot * self.page_size + _HEADER_SIZE

        def children(elems: bytes) -> None:
            self._children[slot] = memoryview(elems).cast("Q")[1::2].tobytes()

        if n:
            self._need(slot, base, base + n * _ELEM_SIZE, children)
        else:
            self._kind[slot] = _BAD  # bbolt never writes an empty branch page

    def _freelist(self, slot: int, n: int) -> None:
        base = slot * self.page_size + _HEADER_SIZE

        def ids(raw: bytes) -> None:
            self._freelists[slot] = raw

        if n != 0xFFFF:
            self._need(slot, base, base + 8 * n, ids)
        else:
            self._need(slot, base, base + 8, lambda c: self._need(
                slot, base + 8, base + 8 + 8 * _U64.unpack(c)[0], ids))

    # ---------------------------------------------------------------------------------------------- the walk

    def finish(self) -> DbSummary:
        """Walk the tree; IntegrityError when the db is inconsistent."""
        if self.failed:
            raise IntegrityError(f"db structure: the page decoder failed ({self.failed})")
        if self._summary is None:
            self._summary = self._walk()
            self._release()
        return self._summary

    def _release(self) -> None:
        """Drop the page records once walked: only the summary is kept."""
        self._kind, self._count, self._overflow, self._rev = bytearray(), array("H"), array("I"), array("Q")
        self._children, self._buckets, self._freelists, self._wants = {}, {}, {}, []

    def _walk(self) -> DbSummary:
        for w in self._wants:  # bytes that never came: the stream ended inside these pages
            self._kind[w.slot] = _BAD
        self._wants = []
        if not self.page_size:
            raise IntegrityError("db structure: no bbolt meta pages (not an etcd db, or truncated)")
        metas = sorted(self.metas, key=lambda m: m.txid, reverse=True)
        valid = [m for m in metas if not m.problem]
        if not valid:
            raise IntegrityError("db structure: no valid bbolt meta page ("
                                 + "; ".join(f"meta {m.page_id}: {m.problem}" for m in self.metas) + ")")
        meta = valid[0]
        ps = self.page_size
        hwm = meta.pgid
        if meta.page_size != ps:
            raise IntegrityError(f"db structure: meta {meta.page_id} page size {meta.page_size} differs from "
                                 f"meta 0 ({ps})")
        if self._size < hwm * ps:
            raise IntegrityError(f"db structure: {self._size} bytes, but {hwm} pages of {ps} bytes are in use "
                                 "(truncated)")
        reach = bytearray(min(hwm, len(self._kind)))
        reach[0:2] = b"\x01\x01"
        free_pages = -1
        if meta.freelist != NO_FREELIST:
            free_pages = self._check_freelist(meta, reach)
        walk = _Walk(self, reach)
        buckets: dict[str, int] = {}
        revision = 0
        total = 0
        for b in walk.bucket_entries(meta.root, top=True):
            name = b.name.decode("utf-8", "replace")
            if b.root < 0:
                raise IntegrityError(f"db structure: bucket {name!r} has an unreadable header")
            if b.root == 0:
                keys, rev = b.inline_count, b.inline_rev
            else:
                keys, rev = walk.bucket(b.root, name, revisions=b.name == KEY_BUCKET)
            if b.name == KEY_BUCKET:
                if rev == _NOT_A_REVISION:
                    raise IntegrityError("db structure: the key bucket holds a key that is not a revision")
                revision = rev
            buckets[name] = keys
            total += keys
        if free_pages >= 0:
            missing = reach.find(0)
            if missing >= 0:
                raise IntegrityError(f"db structure: page {missing} is neither reachable nor free")
        return DbSummary(revision, total, hwm * ps, ps, hwm, meta.txid, buckets, free_pages)

    def _check_freelist(self, meta: Meta, reach: bytearray) -> int:
        fl = meta.freelist
        if fl >= len(self._kind) or self._kind[fl] != FREELIST or fl not in self._freelists:
            raise IntegrityError(f"db structure: freelist page {fl} is missing or unreadable")
        span = self._overflow[fl] + 1
        reach[fl:fl + span] = b"\x01" * span
        ids = array("Q", self._freelists[fl])
        hwm = len(reach)
        for pid in ids:
            if pid >= hwm or pid < 2:
                raise IntegrityError(f"db structure: freelist names page {pid}, outside the db")
            if reach[pid]:
                raise IntegrityError(f"db structure: page {pid} is freed twice, or is free and in use")
            reach[pid] = 2
        return len(ids)


class _Walk:
    """Depth-first over bucket trees, marking every page reached (1) in `reach`; a page marked before (in use
    or free) is an error."""

    def __init__(self, s: BboltScanner, reach: bytearray):
        self.s = s
        self.reach = reach

    def _pages(self, root: int, where: str) -> list[int]:
        """The leaves of the tree at root, in key order."""
        s, reach = self.s, self.reach
        kind, overflow, children = s._kind, s._overflow, s._children
        hwm = len(reach)
        leaves: list[int] = []
        stack = [root]
        while stack:
            pg = stack.pop()
            if pg >= hwm:
                raise IntegrityError(f"db structure: {where}: page {pg} is beyond the {hwm} pages in use")
            k = kind[pg]
            if k != LEAF and k != BRANCH:
                raise IntegrityError(f"db structure: {where}: page {pg} is not a readable branch or leaf page")
            span = overflow[pg] + 1
            if span == 1 and not reach[pg]:
                reach[pg] = 1
            else:
                end = pg + span
                if end > hwm:
                    raise IntegrityError(f"db structure: {where}: page {pg} runs past the {hwm} pages in use")
                if reach[pg:end].count(0) != span:
                    what = "freed" if 2 in reach[pg:end] else "referenced twice"
                    raise IntegrityError(f"db structure: {where}: page {pg} is {what}")
                reach[pg:end] = b"\x01" * span
            if k == LEAF:
                leaves.append(pg)
            else:
                kids = array("Q", children.get(pg, b""))
                kids.reverse()
                stack.extend(kids)
        return leaves

    def bucket_entries(self, root: int, top: bool = False, where: str = "root bucket") -> list[_Bucket]:
        found: list[_Bucket] = []
        for leaf in self._pages(root, where):
            entries = self.s._buckets.get(leaf, [])
            if top and len(entries) != self.s._count[leaf]:
                raise IntegrityError(f"db structure: {where}: page {leaf} holds entries that are not buckets")
            found.extend(entries)
        return found

    def bucket(self, root: int, name: str, revisions: bool) -> tuple[int, int]:
        """(entries, last revision) of the bucket at root; its sub-buckets are walked (not counted)."""
        s = self.s
        count, rev, buckets = s._count, s._rev, s._buckets
        where = f"bucket {name!r}"
        total = 0
        last = 0
        for leaf in self._pages(root, where):
            n = count[leaf]
            total += n
            if revisions and n:
                r = rev[leaf]
                if r == _NOT_A_REVISION:
                    return total, r
                if r < last:
                    raise IntegrityError(f"db structure: {where}: revisions out of order at page {leaf}")
                last = r
            for sub in buckets.get(leaf, ()):
                if sub.root < 0:
                    raise IntegrityError(f"db structure: {where}: a sub-bucket has an unreadable header")
                if sub.root:
                    self.bucket(sub.root, f"{name}/{sub.name.decode('utf-8', 'replace')}", False)
        return total, last
