"""Cross pHash search: every training hash within `radius` bits of a protected hash, with its nearest one
(lib/dedup/protected.py reads the protected set; this finds its copies among N training and P protected hashes).

Equal hashes collapse first (one sort of the training hashes, O(N log N)), so thousands of identical
placeholders cost one value. Then multi-index hashing as in lib/dedup/phash: the 64 bits are split into m blocks and
two hashes within `radius` bits agree on at least s = m - radius of them, so for each of the C(m, s) choices of
s blocks a training value is compared only with the protected values whose masked bits equal its own. Those are
found through a bucket table over the protected side (masked key -> multiplicative hash -> one of ~8P buckets):
O(1) per look-up, and a bucket collision only adds a comparison, never loses a pair. Work per choice is
O(U_t + U_p + candidates), candidates ~ U_t * U_p * (2^-key_bits + 1/8P) for spread hashes; at radius 6 (m = 8,
s = 2, 28 choices) about one candidate per training value per choice. 11M random hashes against 50k: 9 blocks,
3 matching, 84 choices, 1.1e8 comparisons, 28 s on a loaded 2-core machine (the 28-choice plan: 3.0e8
comparisons, 38 s). Memory is O(U_t) plus at most CHUNK_WORK candidates at a time. A dense corner of the hash
space on both sides (many distinct values sharing a key) costs their product in time, never in memory. When
comparing every pair of distinct values, O(U_t * U_p), is expected to be cheaper (a small set, a radius of 12
and more, where C(m, s) explodes), that is done instead, in blocks of CHUNK_WORK pairs.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

HASH_BITS = 64
CHUNK_WORK = 4_000_000  # pHash candidates compared at once: ~100 MB of temporary arrays
TRAIN_BLOCK = 1 << 20  # training values looked up at once
PAIR_COST = 0.1  # a brute-force comparison (xor, popcount, min over a block) against a look-up, measured ~1:10


def phash_matches(train_phash: np.ndarray, protected_phash: np.ndarray, radius: int, method: str = "auto",
                  stats: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train_rows, protected_rows, distance): every training row within `radius` bits of some protected hash,
    ascending, with its nearest protected row (ties to the lowest row) and their Hamming distance; (M,) int64
    each. Method and cost in the module docstring; `method` "auto" takes multi-index hashing unless comparing
    every pair of distinct values is cheaper (a small set, or a radius near 16 and beyond), "multi_index" or
    "bruteforce" force one. `stats`, when given, receives the work done: the method, unique values on each
    side, keys searched, hashes compared."""
    train = np.asarray(train_phash, np.uint64).ravel()
    protected = np.asarray(protected_phash, np.uint64).ravel()
    if not 0 <= radius < HASH_BITS:
        raise ValueError(f"radius must be in [0, {HASH_BITS}), got {radius}")
    if method not in ("auto", "multi_index", "bruteforce"):
        raise ValueError(f"method must be auto, multi_index or bruteforce, got {method!r}")
    empty = np.empty(0, np.int64)
    if not len(train) or not len(protected):
        return empty, empty, empty
    values, inverse = np.unique(train, return_inverse=True)
    targets, first_row = np.unique(protected, return_index=True)
    m, s, bucket_bits, cost = cross_plan(len(values), len(targets), radius)
    if method == "auto":
        method = "bruteforce" if len(values) * len(targets) * PAIR_COST <= cost else "multi_index"
    n = len(protected)
    none = np.int64((HASH_BITS + 1) * n)
    best = np.full(len(values), none, np.int64)  # distance * n + protected row: the min is the nearest, lowest row
    compared, keys = 0, 0
    if method == "bruteforce":
        step = max(1, CHUNK_WORK // len(targets))
        for lo in range(0, len(values), step):
            code = np.bitwise_count(values[lo:lo + step, None] ^ targets[None, :]).astype(np.int64) * n + first_row
            best[lo:lo + step] = np.where(code < (radius + 1) * n, code, none).min(axis=1)
        compared = len(values) * len(targets)
    else:
        for mask in block_masks(m, s):
            table = _BucketTable(targets, mask, bucket_bits)
            for lo in range(0, len(values), TRAIN_BLOCK):
                compared += table.compare(values, lo, min(lo + TRAIN_BLOCK, len(values)), radius, first_row, n, best)
        keys = math.comb(m, s)
    if stats is not None:
        stats.update(method=method, train_unique=len(values), protected_unique=len(targets), keys=keys,
                     compared=compared)
    rows = np.flatnonzero(best[inverse] < none)
    code = best[inverse[rows]]
    return rows.astype(np.int64), code % n, code // n


def cross_plan(n_train: int, n_protected: int, radius: int) -> tuple[int, int, int, float]:
    """(blocks m, blocks that must match s, bucket bits, expected cost) for the least expected work: C(m, s)
    keys, each a look-up per training value (cost 1) plus the candidates sharing a key or a bucket with it
    (cost 4 each; PAIR_COST is a brute-force comparison in the same unit)."""
    bucket_bits = min(26, max(4, math.ceil(math.log2(max(n_protected, 1))) + 3))
    best = None
    for s in range(1, 6):
        m = radius + s
        if m > HASH_BITS:
            break
        key_bits = HASH_BITS * s / m
        per_value = 1 + 4 * n_protected * (2.0 ** -key_bits + 2.0 ** -bucket_bits)
        cost = math.comb(m, s) * (n_train * per_value + n_protected)
        if best is None or cost < best[0]:
            best = (cost, m, s)
    return best[1], best[2], bucket_bits, best[0]


def block_masks(m: int, s: int) -> list[np.uint64]:
    """One 64-bit mask per choice of s of m near-equal blocks of bits (lib/dedup/phash.key_masks' blocks)."""
    edges = np.linspace(0, HASH_BITS, m + 1).round().astype(int).tolist()
    blocks = [((1 << (hi - lo)) - 1) << lo for lo, hi in itertools.pairwise(edges)]
    return [np.uint64(sum(combo)) for combo in itertools.combinations(blocks, s)]


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the top bits of key * golden spread any key set


class _BucketTable:
    """The protected values grouped by bucket of their masked key: bucket b holds
    targets[order[start[b]:start[b] + count[b]]]. Equal masked keys share a bucket."""

    def __init__(self, targets: np.ndarray, mask: np.uint64, bits: int):
        self.targets, self.mask, self.shift = targets, mask, np.uint64(HASH_BITS - bits)
        bucket = self.bucket(targets)
        self.order = np.argsort(bucket, kind="stable")
        self.count = np.bincount(bucket, minlength=1 << bits).astype(np.int32)  # int32: half the cache lines
        self.start = (np.cumsum(self.count, dtype=np.int64) - self.count).astype(np.int32)

    def bucket(self, hashes: np.ndarray) -> np.ndarray:
        key = np.bitwise_and(hashes, self.mask)
        np.multiply(key, _GOLDEN, out=key)  # wraps modulo 2^64, as Fibonacci hashing wants
        return np.right_shift(key, self.shift, out=key).view(np.int64)

    def compare(self, values: np.ndarray, lo: int, hi: int, radius: int, first_row: np.ndarray, n_rows: int,
                best: np.ndarray) -> int:
        """Compare values[lo:hi] with the protected values of their buckets, lowering `best` (distance * n_rows
        + protected row) where within radius; returns the number of comparisons."""
        bucket = self.bucket(values[lo:hi])
        count = self.count[bucket]
        busy = np.flatnonzero(count)  # most values share no bucket with a protected one: only these go on
        first, count = self.start[bucket[busy]].astype(np.int64), count[busy].astype(np.int64)
        ends = np.cumsum(count)
        done, at = 0, 0
        while at < len(busy):  # pieces of at most CHUNK_WORK comparisons (one value's bucket at least)
            stop = max(at + 1, int(np.searchsorted(ends, done + CHUNK_WORK, side="right")))
            c = count[at:stop]
            which = np.repeat(busy[at:stop] + lo, c)
            offset = np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)
            target = self.order[np.repeat(first[at:stop], c) + offset]
            distance = np.bitwise_count(values[which] ^ self.targets[target]).astype(np.int64)
            near = distance <= radius
            np.minimum.at(best, which[near], distance[near] * n_rows + first_row[target[near]])
            done, at = int(ends[stop - 1]), stop
        return int(ends[-1]) if len(ends) else 0


def phash_matches_bruteforce(train_phash: np.ndarray, protected_phash: np.ndarray, radius: int,
                             block: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """phash_matches by comparing every pair, O(N * P): for tests."""
    train = np.asarray(train_phash, np.uint64)
    protected = np.asarray(protected_phash, np.uint64)
    out = [], [], []
    for lo in range(0, len(train), block):
        distance = np.bitwise_count(train[lo:lo + block, None] ^ protected[None, :])
        nearest = distance.argmin(axis=1)  # first minimum: the lowest row
        d = distance[np.arange(len(nearest)), nearest]
        near = np.flatnonzero(d <= radius)
        for part, values in zip(out, (near + lo, nearest[near], d[near])):
            part.append(values.astype(np.int64))
    return tuple(np.concatenate(p) if p else np.empty(0, np.int64) for p in out)
