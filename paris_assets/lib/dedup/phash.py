"""Duplicate search over a whole data set: near duplicates by pHash Hamming distance.

The grouping rule (`group_near_duplicates`), bounded so that a group cannot chain across the hash space:

1. Equal hashes collapse to one value; a value's priority is that of its best item (highest priority, ties
   going to the lowest index), so 20,000 identical placeholders cost one entry.
2. Values are visited in priority order. A value nobody has claimed yet becomes a leader: its best item is
   the group's representative, and it claims every still-unclaimed value within `radius` bits of itself.
3. Every item belongs to the group of its value's leader.

So every member is within `radius` of its representative (A~B and B~C do not put C in A's group unless C
is within radius of A), and the representative is the group's best item.
`group_near_duplicates_bruteforce` is the same rule written plainly, in O(n^2), for tests.

Finding the values within radius uses multi-index hashing (the idea behind faiss' IndexBinaryMultiHash, done
with numpy sorts): split the 64 bits into m blocks; two hashes within `radius` bits agree exactly on at least
s = m - radius blocks (pigeonhole), so for every choice of s blocks only hashes that share those blocks (a
"run" of equal keys after a sort) need comparing. Pairs are listed only inside small runs; a dense run (many
distinct values sharing a key, as copies of one placeholder or skewed real pHashes do) is never expanded
into its pairs: a leader compares itself with the run's still-unclaimed members, and claimed members drop
out. Leaders are found a chunk of values at a time with array operations (see `_leaders`), not one Python
step per value.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

HASH_BITS = 64
DENSE_RUN = 48  # runs of equal keys longer than this are scanned per leader instead of expanded into pairs
CHUNK_WORK = 2_000_000  # dense-run comparisons per chunk of leaders: ~100 MB of temporary arrays


def search_plan(n: int, radius: int) -> tuple[int, int]:
    """(blocks m, blocks that must match s) with m = radius + s, chosen for the least expected work.

    Pigeonhole: two hashes within `radius` bits differ in at most `radius` of m blocks, so they agree exactly
    on at least s = m - radius of them. Each choice of s blocks is one sort; longer keys mean fewer
    candidate pairs to verify.
    """
    best = None
    for s in range(1, 5):
        m = radius + s
        if m > HASH_BITS:
            break
        key_bits = HASH_BITS * s / m
        cost = math.comb(m, s) * (n * math.log2(max(n, 2)) + 4 * n * n / 2 ** (key_bits + 1))
        if best is None or cost < best[0]:
            best = (cost, m, s)
    return best[1], best[2]


def key_masks(n: int, radius: int) -> list[np.uint64]:
    """One 64-bit mask per choice of s of the m blocks (see search_plan): the multi-index's keys."""
    m, s = search_plan(n, radius)
    edges = np.linspace(0, HASH_BITS, m + 1).round().astype(int)
    blocks = [((1 << (hi - lo)) - 1) << lo for lo, hi in itertools.pairwise(edges.tolist())]
    return [np.uint64(sum(combo)) for combo in itertools.combinations(blocks, s)]


def near_pairs(hashes: np.ndarray, radius: int) -> np.ndarray:
    """All pairs (i, j), i < j, with Hamming(hashes[i], hashes[j]) <= radius, as a sorted (M, 2) int64 array.

    Multi-index hashing over every pair: exact, about n log n per key when hashes are spread, but it lists
    every pair of a dense group (quadratic there). The grouping does not use it; it is the all-pairs answer
    for analysis and the benchmark's "before".
    """
    h = np.asarray(hashes, np.uint64)
    if len(h) < 2:
        return np.empty((0, 2), np.int64)
    found = []
    for mask in key_masks(len(h), radius):
        order = np.argsort(h & mask)
        found.append(_pairs_in_runs(h, order, *_runs((h & mask)[order]), radius))
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of each run of equal sorted keys."""
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return starts, np.diff(np.r_[starts, len(sorted_keys)])


def _pairs_in_runs(h: np.ndarray, order: np.ndarray, starts: np.ndarray, lengths: np.ndarray, radius: int,
                   walk: np.ndarray | None = None) -> np.ndarray:
    """Pairs (lower, higher index) within `radius` among hashes in the same run (hashes h[order] sorted by
    key, runs given by start and length); with `walk` (per run) only those runs."""
    sorted_hashes = h[order]  # candidates then compare neighbours in memory, not scattered hashes
    if walk is not None:
        starts, lengths = starts[walk], lengths[walk]
    starts, lengths = starts[lengths > 1], lengths[lengths > 1]
    end = np.repeat(starts + lengths, lengths)
    k = np.repeat(starts, lengths) + np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    keep = k + 1 < end
    k, end = k[keep], end[keep]
    found = [np.empty((0, 2), np.int64)]
    step = 1
    while len(k):  # pairs (k, k+step) for growing step
        near = np.bitwise_count(sorted_hashes[k] ^ sorted_hashes[k + step]) <= radius
        if near.any():
            a, b = order[k[near]], order[k[near] + step]
            found.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
        keep = k + step + 1 < end
        k, end = k[keep], end[keep]
        step += 1
    return np.concatenate(found)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64)))


def near_pairs_bruteforce(hashes: np.ndarray, radius: int, block: int = 2048) -> np.ndarray:
    """The all-pairs baseline (quadratic), for tests and the benchmark."""
    hashes = np.asarray(hashes, np.uint64)
    bits = np.unpackbits(hashes.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1).astype(np.float32)
    out = []
    for start in range(0, len(hashes), block):
        chunk = bits[start:start + block]
        dist = chunk @ (1 - bits).T + (1 - chunk) @ bits.T
        i, j = np.nonzero(dist <= radius)
        i = i + start
        keep = j > i
        out.append(np.stack([i[keep], j[keep]], axis=1))
    return np.concatenate(out).astype(np.int64) if out else np.empty((0, 2), np.int64)


def priority_order(n: int, priority: np.ndarray | None) -> np.ndarray:
    """Item indices best first: highest `priority` (any number per item, e.g. pixel count), ties to the
    lowest index; without priority, index order."""
    if priority is None:
        return np.arange(n)
    priority = np.asarray(priority, np.float64)
    if priority.shape != (n,):
        raise ValueError(f"priority has shape {priority.shape}; it needs one value per hash ({n})")
    return np.lexsort((np.arange(n), -priority))


def group_near_duplicates_bruteforce(hashes: np.ndarray, radius: int,
                                     priority: np.ndarray | None = None) -> np.ndarray:
    """The grouping rule of this module, item by item over all items (O(n * groups)): for tests."""
    h = np.asarray(hashes, np.uint64)
    rep = np.full(len(h), -1, np.int64)
    for i in priority_order(len(h), priority):
        if rep[i] < 0:
            rep[(rep < 0) & (hamming(h, h[i]) <= radius)] = i
    return rep


def group_near_duplicates(hashes: np.ndarray, radius: int, priority: np.ndarray | None = None,
                          stats: dict | None = None) -> np.ndarray:
    """Index of the representative of each item's group, under the rule in the module docstring.

    `hashes` are 64-bit integers; `priority` one number per item (higher is kept first; ties go to the
    lowest index). Returns (n,) int64; rep[i] == i for the kept items. `stats`, when given, receives counts
    of the work done: items, unique values, groups, pairs listed (from small runs), dense runs, and distances
    (the pairs listed plus the comparisons against dense-run members).
    """
    h = np.asarray(hashes, np.uint64)
    n = len(h)
    if n == 0:
        return np.empty(0, np.int64)
    order = priority_order(n, priority)
    # unique values ranked by their best item: value r is the r-th to be visited
    uniq, first_pos, inverse = np.unique(h[order], return_index=True, return_inverse=True)
    by_rank = np.argsort(first_pos, kind="stable")
    rank_of_uniq = np.empty(len(uniq), np.int64)
    rank_of_uniq[by_rank] = np.arange(len(uniq))
    values, best_item = uniq[by_rank], order[first_pos[by_rank]]
    item_rank = np.empty(n, np.int64)
    item_rank[order] = rank_of_uniq[inverse]
    leader, work = _leaders(values, radius)
    if stats is not None:
        stats.update(work, items=n, unique=len(values), groups=int((leader == np.arange(len(values))).sum()))
    return best_item[leader[item_rank]]


def _leaders(values: np.ndarray, radius: int) -> tuple[np.ndarray, dict]:
    """Leader (a rank) of each distinct value, values given in visiting order.

    Values that could claim anything (a listed pair or a dense run) are taken in rank order in chunks, each
    chunk as one set of array operations: every chunk value's neighbours after it among the unclaimed (listed
    pairs, and the members of its dense runs within radius), then which chunk values lead (the rule among
    the chunk's own pairs), then the claims. A chunk grows while most of its values turn out to lead and
    shrinks when they do not, so a dense group is met by a few values at a time; it is also cut where its
    dense-run comparisons would pass CHUNK_WORK.
    """
    u = len(values)
    source, target, dense_runs = _candidate_pairs(values, radius)
    forward = _Csr(source, target, u)
    runs = _Csr(np.repeat(np.arange(len(dense_runs)), [len(r) for r in dense_runs]),
                np.concatenate(dense_runs) if dense_runs else np.empty(0, np.int64), len(dense_runs))
    runs_of = _Csr(runs.target, runs.row, u)  # the dense runs each value sits in
    leader = np.full(u, -1, np.int64)
    todo = np.flatnonzero(np.diff(forward.start) + np.diff(runs_of.start) > 0)
    distances, chunk, pos = len(source), 1, 0
    while pos < len(todo):
        at = np.arange(pos, min(pos + chunk, len(todo)))
        at = at[leader[todo[at]] < 0]
        pos += chunk
        if not len(at):
            continue
        run_src, run = runs_of.pairs(todo[at])
        work = np.bincount(np.searchsorted(todo[at], run_src), runs.start[run + 1] - runs.start[run], len(at))
        fits = max(1, int(np.searchsorted(np.cumsum(work), CHUNK_WORK, side="right")))
        if fits < len(at):  # keep a chunk's comparisons (and memory) bounded: resume after the last taken
            pos, at = int(at[fits]), at[:fits]
            run_src, run = runs_of.pairs(todo[at])
        batch = todo[at]
        src, dst = forward.pairs(batch)
        member_src, member = runs.pairs(run, run_src)
        distances += len(member)
        near = (member > member_src) & (np.bitwise_count(values[member] ^ values[member_src]) <= radius)
        src, dst = np.r_[src, member_src[near]], np.r_[dst, member[near]]
        keep = leader[dst] < 0
        src, dst = src[keep], dst[keep]
        inside = np.isin(dst, batch)
        leads = batch[_first_leaders(len(batch), np.searchsorted(batch, src[inside]),
                                     np.searchsorted(batch, dst[inside]))]
        leader[leads] = leads
        claim = np.isin(src, leads) & (leader[dst] < 0)
        order = np.lexsort((src[claim], dst[claim]))
        dst, src = dst[claim][order], src[claim][order]
        first = np.r_[True, dst[1:] != dst[:-1]] if len(dst) else np.empty(0, bool)
        leader[dst[first]] = src[first]
        if 2 * len(leads) >= len(batch):
            chunk = min(2 * chunk, 1 << 16)
        else:
            chunk = max(1, chunk // 2)
        if len(runs.target) > 4096 and 2 * np.count_nonzero(leader[runs.target] < 0) < len(runs.target):
            runs = runs.where(leader[runs.target] < 0)  # drop claimed members once half are claimed
    alone = leader < 0
    leader[alone] = np.flatnonzero(alone)
    return leader, {"pairs_listed": len(source), "dense_runs": len(dense_runs), "distances": distances}


class _Csr:
    """Rows of targets, a sparse adjacency: row r holds target[start[r]:start[r + 1]]."""

    def __init__(self, row: np.ndarray, target: np.ndarray, rows: int):
        order = np.argsort(row, kind="stable")
        self.row, self.target = row[order], target[order]
        self.start = np.searchsorted(self.row, np.arange(rows + 1))

    def pairs(self, rows: np.ndarray, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(label, target) for every target in the given rows (label: the row itself unless given)."""
        first, count = self.start[rows], self.start[rows + 1] - self.start[rows]
        at = np.repeat(first - np.cumsum(count) + count, count) + np.arange(count.sum())
        return np.repeat(rows if labels is None else labels, count), self.target[at]

    def where(self, keep: np.ndarray) -> _Csr:
        return _Csr(self.row[keep], self.target[keep], len(self.start) - 1)


def _first_leaders(k: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Which of k values (in visiting order) lead, given every pair a < b within radius among them: a value
    leads unless an earlier leader is its neighbour. Decided in rounds: a value whose earliest neighbour
    before it that is not yet known to follow is a leader, follows; one with none, leads."""
    state = np.zeros(k, np.int8)  # 0 open, 1 leads, 2 follows
    order = np.lexsort((a, b))
    a, b = a[order], b[order]
    while (state == 0).any():
        first = np.r_[True, b[1:] != b[:-1]] if len(b) else np.empty(0, bool)
        blocked = np.zeros(k, bool)
        blocked[b[first]] = True
        follows = b[first][state[a[first]] == 1]
        state[(state == 0) & ~blocked] = 1
        state[follows] = 2
        keep = (state[b] == 0) & (state[a] != 2)
        a, b = a[keep], b[keep]
    return state == 1


def _candidate_pairs(values: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(source, target, dense runs): every pair within radius that shares a small run of some key, as
    source < target sorted by (target, source); and the members of each run longer than DENSE_RUN."""
    u = len(values)
    pairs, dense_runs = [np.empty((0, 2), np.int64)], []
    for mask in (key_masks(u, radius) if u > 1 else []):
        keys = values & mask
        order = np.argsort(keys)  # order inside a run does not matter; quicksort is 6x faster here
        starts, lengths = _runs(keys[order])
        dense = lengths > DENSE_RUN
        pairs.append(_pairs_in_runs(values, order, starts, lengths, radius, ~dense))
        dense_runs += [order[a:a + k].copy() for a, k in zip(starts[dense].tolist(), lengths[dense].tolist())]
    pairs = np.concatenate(pairs)
    codes = np.sort(pairs[:, 1] * u + pairs[:, 0])  # one row per pair, however many keys it shares
    codes = codes[np.r_[True, codes[1:] != codes[:-1]]] if len(codes) else codes
    return codes % u, codes // u, dense_runs
