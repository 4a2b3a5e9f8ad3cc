"""Duplicate search over a whole data set: exact (content hash) and near (pHash Hamming distance).

Near pairs come from faiss' multi-hash binary index, which splits each 64-bit hash into substrings and only
compares hashes that share one exactly (or within a few flipped bits): sub-quadratic, and exact by the
pigeonhole principle for the radius it is built for. Groups are connected components of the near-pair graph;
each keeps one deterministic representative.
"""

from __future__ import annotations

import numpy as np

HASH_BITS = 64


def phash_to_bytes(hashes: np.ndarray) -> np.ndarray:
    """(N,) uint64 hashes -> (N, 8) uint8 codes in faiss' binary layout (big-endian bytes)."""
    return np.ascontiguousarray(hashes.astype(">u8")).view(np.uint8).reshape(-1, 8)


def multihash_params(radius: int) -> tuple[int, int, int]:
    """(nhash, bits per hash, nflip) for which every pair within `radius` shares a substring within nflip bits."""
    if radius <= 7:
        nhash = radius + 1
        return nhash, min(HASH_BITS // nhash, 16), 0
    nhash, bits = 8, 8
    nflip = -(-(radius + 1) // nhash) - 1  # ceil((r+1)/8) - 1
    return nhash, bits, nflip


def near_pairs(hashes: np.ndarray, radius: int) -> np.ndarray:
    """All pairs (i, j), i < j, with Hamming(hashes[i], hashes[j]) <= radius, as an (M, 2) int64 array."""
    import faiss

    n = len(hashes)
    if n < 2:
        return np.empty((0, 2), np.int64)
    codes = phash_to_bytes(np.asarray(hashes, dtype=np.uint64))
    nhash, bits, nflip = multihash_params(radius)
    index = faiss.IndexBinaryMultiHash(HASH_BITS, nhash, bits)
    index.nflip = nflip
    index.add(codes)
    pairs = []
    step = 65536  # bounded memory for the result buffers
    for start in range(0, n, step):
        lims, _dist, ids = index.range_search(codes[start:start + step], radius + 1)  # faiss: distance < radius
        counts = np.diff(lims).astype(np.int64)
        rows = np.repeat(np.arange(start, start + len(counts), dtype=np.int64), counts)
        ids = ids.astype(np.int64)
        keep = ids > rows
        pairs.append(np.stack([rows[keep], ids[keep]], axis=1))
    return np.unique(np.concatenate(pairs), axis=0) if pairs else np.empty((0, 2), np.int64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x = np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))
    return np.unpackbits(x.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


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


def connected_components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Component id (the smallest member index) for each of n nodes, given undirected edges."""
    parent = np.arange(n)

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(n)])


def pick_representatives(groups: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """Index of the kept member for each item's group: the one with the highest priority (ties: lowest index).

    `priority` is any sortable key per item (e.g. original pixel count), so the choice is deterministic.
    """
    order = np.lexsort((np.arange(len(groups)), -np.asarray(priority, dtype=np.float64), groups))
    sorted_groups = groups[order]
    first = np.ones(len(order), bool)
    first[1:] = sorted_groups[1:] != sorted_groups[:-1]
    best_of_group = dict(zip(sorted_groups[first].tolist(), order[first].tolist()))
    return np.array([best_of_group[g] for g in groups.tolist()], dtype=np.int64)
