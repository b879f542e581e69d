"""Duplicate content: exact copies (same sha256 under different paths) and near-copies (SimHash).

Duplicates waste tokens and crowd search results with the same passage. They are a WARN: copies
can be legitimate (a page vendored in two guides). The manifest picks what a repair does:
``keep_all`` (report only), ``canonical`` (record the copies as ``aliases`` in the canonical row's
metadata) or ``drop`` (delete the non-canonical rows). Canonical = shortest doc_path, then
lexicographic. Groups never span doc types: the doc-server filters by doc type, so a copy in
another doc type is not redundant.

SimHash: 64-bit fingerprint over word shingles; two texts within ``simhash_bits`` differing bits
are near-duplicates. Candidates come from splitting the fingerprint into ``bits + 1`` bands: two
fingerprints within k bits agree exactly on at least one of k + 1 bands (pigeonhole), so only
texts sharing a band value are compared. SimHash is a vote over shingles: in a chunk of ~500 words a
one-word edit stays within 3 bits about 75 % of the time (unrelated texts sit ~32 bits apart), so
raise ``simhash_bits`` for more recall, lower it for more precision. Chunks under ``min_words``
words are matched exactly only.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import Settings
from ..storage import fingerprints
from .common import WARN, check_result, plural
from .config import DuplicateConfig, ValidationConfig

_WORD = re.compile(r"\w+")
_MULT = np.array([0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD6E8FEB86659FD93] * 4,
                 dtype=np.uint64)


@dataclass(frozen=True)
class Member:
    id: str
    partition: str
    doc_type: str
    source_name: str
    doc_path: str
    source_file: str
    sha: str
    aliases: tuple[tuple[str, str], ...] = ()

    def sort_key(self) -> tuple[int, str, str]:
        return (len(self.doc_path), self.doc_path, self.source_name)

    def ref(self) -> dict[str, str]:
        return {"partition": self.partition, "source_name": self.source_name, "doc_path": self.doc_path,
                "source_file": self.source_file}


@dataclass
class Group:
    kind: str  # "exact" | "near"
    doc_type: str
    members: list[Member]
    distance: int = 0
    canonical: Member = field(init=False)
    others: list[Member] = field(init=False)

    def __post_init__(self) -> None:
        ordered = sorted(self.members, key=Member.sort_key)
        self.canonical, self.others = ordered[0], ordered[1:]

    @property
    def aliased(self) -> bool:
        """The canonical row already lists every copy (the ``canonical`` repair was applied)."""
        have = set(self.canonical.aliases)
        return all((m.source_name, m.doc_path) in have for m in self.others)


def _mix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _crc_table() -> np.ndarray:
    """zlib's CRC-32 table (reflected 0xEDB88320), so word ids stay exactly ``zlib.crc32(word)``."""
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> np.uint32(1)) ^ np.uint32(0xEDB88320), table >> np.uint32(1))
    return table.astype(np.uint32)


_CRC = _crc_table()
_WORD_BYTE = np.zeros(256, dtype=bool)  # bytes of a ``\w+`` word: ASCII [0-9a-z_] and every UTF-8 non-ASCII byte
_WORD_BYTE[np.frombuffer(b"0123456789abcdefghijklmnopqrstuvwxyz_", dtype=np.uint8)] = True
_WORD_BYTE[0x80:] = True
_LOWER = np.arange(256, dtype=np.uint8)  # ASCII lower-casing (what str.lower() does to ASCII text)
_LOWER[ord("A"):ord("Z") + 1] += 32
_NIBBLE_BITS = (np.arange(16)[:, None] >> np.arange(4)) & 1  # nibble value -> its 4 bits, least significant first
LONG_WORD = 64
BATCH_BYTES = 4 << 20  # text fingerprinted per numpy pass (bounds the temporary arrays to ~100 MB)
LOAD_BATCH = 2000  # rows fetched at a time (~6 MB of chunk text)


def _word_bytes(text: str) -> bytes:
    r"""The text's ``\w+`` words as bytes separated by non-word bytes, lower-cased by the caller (ASCII
    letters only: :data:`_LOWER`). ASCII text is used as is (its non-word bytes are the separators; checking
    and encoding it is a copy); other text goes through the regex so Unicode ``\w`` and ``lower()`` decide."""
    if text.isascii():
        return text.encode("ascii")
    return " ".join(_WORD.findall(text.lower())).encode("utf-8")


def _crc32_words(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """``zlib.crc32`` of every word at once: one table step per byte position, over the words still that
    long. Words longer than :data:`LONG_WORD` (rare: hashes, base64) are hashed one by one instead, so a
    megabyte-long token costs one call, not a million numpy steps."""
    out = np.empty(len(lens), dtype=np.uint64)
    long_words = np.flatnonzero(lens > LONG_WORD)
    raw = buf.tobytes() if len(long_words) else b""
    for i in long_words.tolist():
        out[i] = zlib.crc32(raw[starts[i]:starts[i] + lens[i]])
    short_words = np.flatnonzero(lens <= LONG_WORD)
    if not len(short_words):
        return out
    # Longest first, so the words still being hashed at any byte position are a prefix (radix sort).
    order = short_words[np.argsort((LONG_WORD - lens[short_words]).astype(np.uint16), kind="stable")]
    s_starts, s_lens = starts[order], lens[order]
    crc = np.full(len(order), 0xFFFFFFFF, dtype=np.uint32)
    active = np.searchsorted(-s_lens, -np.arange(int(s_lens[0])), side="left")
    for pos, k in enumerate(active.tolist()):
        c = crc[:k]
        crc[:k] = _CRC[(c ^ buf[s_starts[:k] + pos]) & np.uint32(0xFF)] ^ (c >> np.uint32(8))
    out[order] = crc ^ np.uint32(0xFFFFFFFF)
    return out


def _simhash_batch(texts: list[str], shingle_words: int, min_words: int) -> list[int | None]:
    """SimHash of many texts in one vectorised pass (see :func:`simhash_many`)."""
    encoded = [_word_bytes(t) for t in texts]
    offsets = np.cumsum([1] + [len(e) + 1 for e in encoded])[:-1]  # each text after one separator byte
    buf = _LOWER[np.frombuffer(b" " + b" ".join(encoded) + b" ", dtype=np.uint8)]
    word = _WORD_BYTE[buf]  # first and last byte are separators
    starts = np.flatnonzero(word[1:] & ~word[:-1]) + 1
    ends = np.flatnonzero(word[:-1] & ~word[1:]) + 1  # exclusive
    out: list[int | None] = [None] * len(texts)
    if not len(starts):
        return out
    doc = np.searchsorted(offsets, starts, side="right") - 1
    n_words = np.bincount(doc, minlength=len(texts))
    first = np.concatenate(([0], np.cumsum(n_words)[:-1]))
    ids = _crc32_words(buf, starts, ends - starts)
    # Shingle i covers words i..i+k-1 of one text; only texts with enough words are fingerprinted.
    k = shingle_words
    m = len(ids) - k + 1
    if m <= 0:
        return out
    with np.errstate(over="ignore"):
        h = ids[:m] * _MULT[0]
        for j in range(1, k):
            h = h ^ (ids[j:j + m] * _MULT[j % len(_MULT)])
    h = _mix(h)
    eligible = n_words >= max(min_words, k)
    sdoc = doc[:m]
    keep = eligible[sdoc] & (np.arange(m) + k <= first[sdoc] + n_words[sdoc])
    h, sdoc = h[keep], sdoc[keep]
    if not len(h):
        return out
    first_of_text = np.concatenate(([True], sdoc[1:] != sdoc[:-1]))  # shingles are in text order
    docs = sdoc[first_of_text]
    local = (np.cumsum(first_of_text) - 1) * 16
    # Set bits per text: a histogram of each 4-bit nibble of the shingle hashes per text (16 passes over
    # the shingles rather than 64), then each nibble value's bits, summed by a small matrix product.
    hbytes = h.astype("<u8").view(np.uint8).reshape(-1, 8)
    counts = np.empty((len(docs), 64), dtype=np.int64)
    for b in range(8):
        column = hbytes[:, b]
        for half, nibble in enumerate((column & np.uint8(15), column >> np.uint8(4))):
            hist = np.bincount(local + nibble, minlength=len(docs) * 16).reshape(len(docs), 16)
            counts[:, 8 * b + 4 * half:8 * b + 4 * half + 4] = hist @ _NIBBLE_BITS
    shingles = n_words[docs] - k + 1
    packed = np.packbits(counts * 2 > shingles[:, None], axis=1, bitorder="little")
    for d, fp in zip(docs.tolist(), packed.view("<u8").ravel().tolist(), strict=True):
        out[d] = int(fp)
    return out


def simhash_many(texts: list[str], shingle_words: int = 3, min_words: int = 24) -> list[int | None]:
    """:func:`simhash` of every text, vectorised with numpy: the per-word Python loop (``crc32`` of each
    word) cost ~0.25 ms per chunk, a quarter of a minute on a 90k-row load. Same fingerprints, bit for bit."""
    out: list[int | None] = []
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= BATCH_BYTES:
            out.extend(_simhash_batch(batch, shingle_words, min_words))
            batch, size = [], 0
    if batch:
        out.extend(_simhash_batch(batch, shingle_words, min_words))
    return out


def simhash(text: str, shingle_words: int = 3, min_words: int = 24) -> int | None:
    """64-bit SimHash over lower-cased word shingles; None for texts too short to fingerprint reliably.

    Words are ``\\w+`` runs, hashed with ``zlib.crc32``; shingle hashes are mixed and vote per bit."""
    return simhash_many([text], shingle_words, min_words)[0]


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 (numpy ≥ 2 has a ufunc; older numpy counts bytes)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def near_pairs(fps: list[int], bits: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) for fingerprints within ``bits`` differing bits, via pigeonhole banding."""
    if len(fps) < 2:
        return []
    arr = np.array(fps, dtype=np.uint64)
    bands = bits + 1
    width = 64 // bands
    found: dict[tuple[int, int], int] = {}
    for b in range(bands):
        lo = b * width
        hi = 64 if b == bands - 1 else lo + width
        mask = np.uint64(((1 << (hi - lo)) - 1) << lo)
        buckets: dict[int, list[int]] = defaultdict(list)
        for i, v in enumerate((arr & mask).tolist()):
            buckets[v].append(i)
        for idx in buckets.values():
            if len(idx) < 2:
                continue
            sub = arr[idx]
            for a in range(len(idx) - 1):
                dist = popcount(sub[a] ^ sub[a + 1:])
                for off in np.nonzero(dist <= bits)[0].tolist():
                    i, j = idx[a], idx[a + 1 + off]
                    found[(min(i, j), max(i, j))] = int(dist[off])
    return [(i, j, d) for (i, j), d in sorted(found.items())]


def _fingerprints(settings: Settings, url: str, missing: list[str], cfg: DuplicateConfig) -> dict[bytes, int | None]:
    """SimHash of the texts of rows ``missing`` (no fingerprint stored yet), computed in batches of
    content and remembered for the next check."""
    out: dict[bytes, int | None] = {}
    for batch in fingerprints.texts(settings, url, missing, LOAD_BATCH):
        fps = simhash_many([content for _, content in batch], cfg.shingle_words, cfg.min_words)
        found = [(sha, fp) for (sha, _), fp in zip(batch, fps, strict=True)]
        fingerprints.store(settings, url, cfg.shingle_words, cfg.min_words, found)
        out.update(found)
    return out


def find_groups(settings: Settings, url: str, keys: list[str], cfg: DuplicateConfig,
                written: set[str] | None = None) -> tuple[list[Group], int]:
    """All duplicate groups among the partitions' rows (exact first, then near), and the rows compared.
    ``written``: only the groups holding one of these rows (a run's new rows, compared with every row
    of the partitions)."""
    by_sha: dict[tuple[str, str], list[Member]] = defaultdict(list)
    # Near-duplicates: one representative per distinct text, compared within a doc type; texts are
    # read and shingled only when their fingerprint is not stored yet.
    distinct: dict[tuple[str, str], tuple[Member, int | None]] = {}
    unknown: dict[bytes, str] = {}  # text sha -> a row holding it
    rows = fingerprints.duplicate_candidates(settings, url, keys, cfg.shingle_words, cfg.min_words)
    pending: list[tuple[Member, bytes]] = []
    for rid, key, doc_type, source_name, doc_path, source_file, text_sha, aliases, known, fp in rows:
        alias_refs: tuple[tuple[str, str], ...] = ()
        if isinstance(aliases, list):
            alias_refs = tuple((str(a.get("source_name")), str(a.get("doc_path"))) for a in aliases
                               if isinstance(a, dict))
        raw = bytes(text_sha)
        m = Member(rid, key, doc_type, source_name, doc_path, source_file, raw.hex(), alias_refs)
        dkey = (doc_type, m.sha)
        if cfg.near and dkey not in distinct:
            distinct[dkey] = (m, fp)
            if not known:
                unknown.setdefault(raw, rid)
                pending.append((m, raw))
        by_sha[dkey].append(m)
    if pending:
        computed = _fingerprints(settings, url, list(unknown.values()), cfg)
        for m, raw in pending:
            distinct[(m.doc_type, m.sha)] = (m, computed.get(raw))
    groups = [Group("exact", dt, ms) for (dt, _), ms in sorted(by_sha.items()) if len(ms) > 1]
    reps: dict[str, list[tuple[Member, int]]] = defaultdict(list)
    for m, fp in distinct.values():
        if fp is not None:
            reps[m.doc_type].append((m, fp))
    for doc_type, items in sorted(reps.items()):
        pairs = near_pairs([fp for _, fp in items], cfg.simhash_bits)
        if not pairs:
            continue
        parent = list(range(len(items)))

        def find(i: int, parent: list[int] = parent) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i, j, _ in pairs:
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
        worst: dict[int, int] = defaultdict(int)
        for i, _, d in pairs:
            worst[find(i)] = max(worst[find(i)], d)
        comps: dict[int, list[int]] = defaultdict(list)
        for i in range(len(items)):
            comps[find(i)].append(i)
        for root, idx in sorted(comps.items()):
            if len(idx) < 2:
                continue
            members = [m for i in idx for m in by_sha[(doc_type, items[i][0].sha)]]
            dist = worst[root]
            groups.append(Group("near", doc_type, members, dist))
    if written is not None:
        groups = [g for g in groups if any(m.id in written for m in g.members)]
    return groups, len(rows)


def check_duplicates(settings: Settings, url: str, keys: list[str], config: ValidationConfig | None = None,
                     written_by: str | None = None) -> dict[str, Any]:
    """Exact and near-duplicate rows per doc type (WARN): what a repair would merge, per the strategy.
    ``written_by``: only groups holding a row that run wrote (each still compared with every row)."""
    cfg = config or ValidationConfig()
    dcfg = cfg.duplicates
    written = fingerprints.written_ids(settings, url, written_by) if written_by else None
    groups, scanned = find_groups(settings, url, keys, dcfg, written)
    open_groups = [g for g in groups if not (dcfg.strategy == "canonical" and g.aliased)]
    findings: list[dict[str, Any]] = []
    for g in open_groups:
        acts = g.kind == "exact" or dcfg.merge_near
        if dcfg.strategy == "drop" and acts:
            action = f"repair deletes {plural(len(g.others), 'row')}"
        elif dcfg.strategy == "canonical" and acts:
            action = f"repair records {plural(len(g.others), 'alias')} on the canonical row"
        else:
            action = "report only"
        findings.append({
            "kind": g.kind, "doc_type": g.doc_type, "size": len(g.members), "distance": g.distance,
            "canonical": g.canonical.ref(), "duplicates": [m.ref() for m in g.others[:10]],
            "partitions": sorted({m.partition for m in g.members}), "action": action,
        })
    # Interleave the kinds so near-duplicates stay visible when exact groups exceed the cap.
    ex = [f for f in findings if f["kind"] == "exact"]
    nr = [f for f in findings if f["kind"] == "near"]
    findings = [f for pair in zip(ex, nr, strict=False) for f in pair] + ex[len(nr):] + nr[len(ex):]
    exact = len(ex)
    near = len(open_groups) - exact
    redundant = sum(len(g.others) for g in open_groups if g.kind == "exact")
    if open_groups:
        first = findings[0]
        hint = {"keep_all": "set validation.duplicates.strategy to canonical or drop and run "
                            "`doc-migrate validate --repair` to merge them, or remove the copies from the sources",
                "canonical": "run `doc-migrate validate --repair` to record them as aliases of the canonical rows",
                "drop": "run `doc-migrate validate --repair` to delete the non-canonical rows"}[dcfg.strategy]
        message = (f"{plural(exact, 'exact duplicate group')} ({plural(redundant, 'redundant row')}) and "
                   f"{plural(near, 'near-duplicate group')} (e.g. {first['doc_type']}/{first['canonical']['doc_path']}"
                   f" = {first['duplicates'][0]['doc_path']}): {hint}")
    else:
        how = f"SimHash ≤ {dcfg.simhash_bits} bits" if dcfg.near else "exact matches only"
        among = (f"{plural(len(written), 'row')} this run wrote, compared with {plural(scanned, 'row')}"
                 if written is not None else plural(scanned, "row"))
        message = f"no duplicate content among {among} ({how})"
    return check_result("duplicates", passed=not open_groups, severity=WARN, message=message, findings=findings,
                        cap=cfg.max_findings, partitions=[], rows_scanned=scanned,
                        rows_written_checked=None if written is None else len(written), exact_groups=exact,
                        near_groups=near, redundant_rows=redundant, strategy=dcfg.strategy,
                        merge_near=dcfg.merge_near, aliased_groups=len(groups) - len(open_groups))
