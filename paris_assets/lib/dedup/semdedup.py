"""SemDeDup (Abbas et al. 2023): semantic near duplicates inside each fine k-means cluster.

Two keep rules, both deterministic. Only rows of the same fine cluster are ever compared (the clustering's first
stage, see lib.clustering); two rows are duplicates when their cosine similarity exceeds 1 - eps. Inside a cluster
rows are visited in an order (highest `priority` first when one is given, ties to the lowest row index), and the
first row visited of a group of duplicates is the one kept:

- `paper` (the default): the paper's rule as facebookresearch/SemDeDup runs it (`keep_hard=True`): rows are
  visited farthest from the fine centroid first (lowest cosine), and a row is removed when it is within eps of ANY
  earlier row, kept or removed (the reference takes, per row, the max of the upper triangle of the cluster's
  similarity matrix). So A~B, B~C removes B and C even if C is far from A, and the eps table reads as the paper's.
  Its partner is the first kept row within eps in visiting order; where every earlier row within eps was itself
  removed (such a chain), the first of those.
- `nearest_centroid`: rows are visited closest to the fine centroid first, and a row is removed only when it is
  within eps of a row already kept; removal cannot chain, and every partner is kept.

`semdedup_bruteforce` states both rules plainly, in O(N^2), for tests.

How the work is bounded: rows are sorted by label once (stable argsort), and each cluster's rows are read
from `x` (a memmap or a chunked reader: fancy row reads, rows ascending) as float32, then permuted into
visiting order. The cluster is walked in blocks of b rows; a block is compared with the rows kept so far
(not with every earlier row: 20,000 copies of one placeholder cost 20,000 dot products after the first
block, not 2 * 10^8), then with itself, and the block's rule is settled in visiting order. The paper's rule
needs the earlier removed rows too, but only for the rows no kept row is within eps of: in a cluster of
placeholders there are none, in a cluster of distinct images there are few removed rows. A block holds
b * max(earlier rows, b) <= b * n_c <= SIM_BLOCK similarities (b = SIM_BLOCK // n_c, at least MIN_ROWS), so
the largest temporaries are a few arrays of SIM_BLOCK elements (float32 similarities, boolean masks), plus
the cluster's features and a copy of its earlier rows (kept ones; for the paper's rule the removed ones too, at
the other end of the same buffer): about 8 * n_c * D bytes for the largest cluster. No n_c x n_c
matrix is made for a cluster bigger than sqrt(SIM_BLOCK) rows. (A cluster above SIM_BLOCK / MIN_ROWS = 131,072
rows takes MIN_ROWS * n_c per block instead.)

Clusters are independent, so they are shared among threads (one per core, biggest clusters first), each
running BLAS single-threaded (threadpoolctl, process-wide for the call's duration): most clusters are small,
and two-thread BLAS on small products waited on thread wake-ups here: 15,625 rows took 4.4 s with two-thread
BLAS and 0.4-0.7 s with one, on a machine loaded by other jobs. Memory is then per thread: the bound above
times the number of workers.

Plain float32 matmul (BLAS) rather than faiss IndexFlatIP.range_search: every pair above 0.95 in the
benchmark's biggest cluster (12,303 x 1024), one thread each, took 5.5 s with matmul and 22.5 s with
range_search on this machine (bench_semdedup prints it), and matmul lets one block's similarities be read at
several thresholds.

`eps_table` evaluates several eps in the same pass: each block's similarities are computed once, against the
rows kept under any of the eps, and each eps' rule is settled on them.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
from threadpoolctl import threadpool_limits

SIM_BLOCK = 1 << 23  # similarities per block: 32 MB of float32, and big enough for BLAS to run at full speed
MIN_ROWS = 64  # rows per block at least, so a huge cluster is not walked a handful of rows at a time
ORDER_ROWS = 4096  # rows per float64 block when computing closeness to the centroid
Keep = Literal["paper", "nearest_centroid"]
KEEP_RULES = ("paper", "nearest_centroid")


@dataclass
class SemDedupResult:
    keep: np.ndarray  # (N,) bool
    removed: np.ndarray  # (R,) int64, ascending
    partner: np.ndarray  # (R,) int64: the earlier row of the same fine cluster each removed row duplicates (kept,
    # except in a chain of the paper's rule: see the module docstring)
    similarity: np.ndarray  # (R,) float32: cosine similarity of each removed row to its partner, > 1 - eps


def semdedup(x, fine_labels: np.ndarray, fine_centroids: np.ndarray, eps: float,
             priority: np.ndarray | None = None, workers: int | None = None, keep: Keep = "paper") -> SemDedupResult:
    """Which rows of x (N, D) unit-norm features (float16/float32, array, memmap or chunked reader) to keep
    under the `keep` rule of the module docstring (`paper` or `nearest_centroid`), given each row's fine cluster
    (N,) and the fine centroids (F, D); `priority` (N,) numbers, higher visited first (e.g. resolution),
    overriding closeness. `workers` threads share the clusters (default: the cores this process may use)."""
    keep, partner, sim = _run(x, fine_labels, fine_centroids, [eps], priority, workers, keep)
    removed = np.flatnonzero(~keep[0])
    return SemDedupResult(keep[0], removed.astype(np.int64), partner[0, removed], sim[0, removed])


def eps_table(x, fine_labels: np.ndarray, fine_centroids: np.ndarray, eps_values,
              priority: np.ndarray | None = None, workers: int | None = None,
              keep: Keep = "paper") -> list[tuple[float, int, float]]:
    """(eps, rows removed, fraction of N removed) for each eps, from one pass over the clusters: what
    `semdedup` would remove at each eps under the `keep` rule, to choose eps by the data it costs."""
    eps_values = [float(e) for e in eps_values]
    keep, _, _ = _run(x, fine_labels, fine_centroids, eps_values, priority, workers, keep)
    n = keep.shape[1]
    return [(e, int(n - k.sum()), float(n - k.sum()) / n if n else 0.0) for e, k in zip(eps_values, keep)]


def visiting_order(cosine: np.ndarray, rows: np.ndarray, priority: np.ndarray | None,
                   keep: Keep = "paper") -> np.ndarray:
    """Positions of a cluster's rows in visiting order: highest priority, then the lowest cosine to the
    centroid (`paper`: farthest first) or the highest (`nearest_centroid`), then lowest row index."""
    closeness = cosine if keep == "paper" else -cosine
    keys = (rows, closeness) if priority is None else (rows, closeness, -priority[rows])
    return np.lexsort(keys)


def _check(x, fine_labels, fine_centroids, eps_values, priority,
           keep: Keep = "paper") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if keep not in KEEP_RULES:
        raise ValueError(f"semdedup keep must be one of {KEEP_RULES}, got {keep!r}")
    n = len(x)
    labels = np.asarray(fine_labels)
    centroids = np.asarray(fine_centroids, np.float64)
    if labels.shape != (n,):
        raise ValueError(f"fine_labels has shape {labels.shape}; it needs one label per feature row ({n})")
    if n and (len(x.shape) != 2 or centroids.ndim != 2 or centroids.shape[1] != x.shape[1]):
        raise ValueError(f"features {tuple(x.shape)} and fine centroids {centroids.shape} must be (N, D) and (F, D)")
    if n and (labels.min() < 0 or labels.max() >= len(centroids)):
        raise ValueError(f"fine_labels run {labels.min()}..{labels.max()} but there are {len(centroids)} "
                         "fine centroids: pass the clustering's first-stage labels and centroids together")
    if not all(0 < e < 2 for e in eps_values):
        raise ValueError(f"semdedup eps must be in (0, 2) (duplicates: cosine > 1 - eps), got {eps_values}")
    if priority is not None:
        priority = np.asarray(priority, np.float64)
        if priority.shape != (n,):
            raise ValueError(f"priority has shape {priority.shape}; it needs one value per feature row ({n})")
    return labels.astype(np.int64, copy=False), centroids, priority


def _run(x, fine_labels, fine_centroids, eps_values, priority, workers: int | None = None,
         keep: Keep = "paper") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kept (E, N) bool, partner (E, N) int64 or -1, similarity (E, N) float32) for each eps under the `keep`
    rule; clusters are shared among `workers` threads (default: this process' cores), each with single-threaded
    BLAS."""
    labels, centroids, priority = _check(x, fine_labels, fine_centroids, eps_values, priority, keep)
    rule = _paper if keep == "paper" else _greedy
    n, e = len(labels), len(eps_values)
    kept_all = np.ones((e, n), bool)
    partner = np.full((e, n), -1, np.int64)
    sim = np.zeros((e, n), np.float32)
    thresholds = np.array([1.0 - eps for eps in eps_values], np.float32)
    by_label = np.argsort(labels, kind="stable")  # each cluster's rows ascending: sequential reads from x
    bounds = np.searchsorted(labels[by_label], np.arange(len(centroids) + 1))
    sizes = np.diff(bounds)
    clusters = [int(c) for c in np.argsort(-sizes, kind="stable") if sizes[c] > 1]  # big first: balanced
    reading = threading.Lock()  # a chunked reader's file handles are not shared across threads

    def one_cluster(c: int) -> None:
        rows = by_label[bounds[c]:bounds[c + 1]]
        with reading:
            xc = np.asarray(x[rows], dtype=np.float32)
        cosine = np.concatenate([xc[a:a + ORDER_ROWS].astype(np.float64) @ centroids[c]
                                 for a in range(0, len(xc), ORDER_ROWS)])
        order = visiting_order(cosine, rows, priority, keep)
        xc, rows = xc[order], rows[order]
        kept, near, near_sim = rule(xc, thresholds)
        kept_all[:, rows] = kept
        partner[:, rows] = np.where(near >= 0, rows[np.maximum(near, 0)], -1)
        sim[:, rows] = near_sim

    with threadpool_limits(1), ThreadPoolExecutor(workers or len(os.sched_getaffinity(0))) as pool:
        list(pool.map(one_cluster, clusters))  # list(): re-raises a worker's exception here
    return kept_all, partner, sim


def _cluster_buffers(xv: np.ndarray, e: int) -> tuple[np.ndarray, ...]:
    """What both rules fill for one cluster of n rows under e thresholds: kept (e, n) bool, partner position
    (e, n) int64 (-1: none), its similarity (e, n) float32, and a pool (n, D) float32 of earlier rows with their
    positions (n,) int64."""
    n = len(xv)
    return (np.zeros((e, n), bool), np.full((e, n), -1, np.int64), np.zeros((e, n), np.float32),
            np.empty((n, xv.shape[1]), np.float32), np.empty(n, np.int64))


def _greedy(xv: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nearest_centroid rule on one cluster whose rows xv (n, D) float32 are already in visiting order, for
    each threshold: (kept (E, n), partner position or -1 (E, n), similarity to it (E, n))."""
    n, e = len(xv), len(thresholds)
    kept, near, near_sim, pool, pool_pos = _cluster_buffers(xv, e)  # pool: rows kept so far, in visiting order
    low, step = thresholds.min(), min(n, max(MIN_ROWS, SIM_BLOCK // n))
    pooled = 0
    for a in range(0, n, step):
        xb = xv[a:a + step]
        m = len(xb)
        alive = np.ones((e, m), bool)
        if pooled:  # against the rows kept so far: a row's partner is the first kept row within eps
            s = xb @ pool[:pooled].T
            cand = np.flatnonzero(s.max(axis=1) > low)
            if len(cand):
                s = s[cand]
                for k, t in enumerate(thresholds):
                    hit = (s > t) & kept[k, pool_pos[:pooled]]
                    first = hit.argmax(axis=1)
                    has = hit[np.arange(len(cand)), first]
                    rows_k = cand[has]
                    alive[k, rows_k] = False
                    near[k, a + rows_k] = pool_pos[first[has]]
                    near_sim[k, a + rows_k] = s[has, first[has]]
            del s
        live = np.flatnonzero(alive.any(axis=0))  # rows still undecided under some threshold
        if len(live) > 1:  # within the block, in visiting order
            xl = xb[live]
            s = xl @ xl.T
            later = np.arange(len(live))[None, :] > np.arange(len(live))[:, None]
            sources = np.flatnonzero(((s > low) & later).any(axis=1))
            for k, t in enumerate(thresholds):
                al = alive[k]
                for i in sources.tolist():
                    if not al[live[i]]:
                        continue
                    mask = (s[i] > t) & later[i] & al[live]
                    hit = live[mask]
                    al[hit] = False
                    near[k, a + hit] = a + live[i]
                    near_sim[k, a + hit] = s[i, mask]
            del s, later
        kept[:, a:a + m] = alive
        new = np.flatnonzero(alive.any(axis=0))
        pool[pooled:pooled + len(new)] = xb[new]
        pool_pos[pooled:pooled + len(new)] = a + new
        pooled += len(new)
    return kept, near, near_sim


def _paper(xv: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paper's rule on one cluster whose rows xv (n, D) float32 are already in visiting order, for each
    threshold: (kept (E, n), partner position or -1 (E, n), similarity to it (E, n)). A block of rows meets the
    earlier rows kept under some threshold (the front of `pool`, in visiting order), then, only for its rows that
    no kept row is within eps of, the earlier rows removed under every threshold (the back of `pool`, newest
    first), then itself."""
    n, e = len(xv), len(thresholds)
    kept, near, near_sim, pool, pool_pos = _cluster_buffers(xv, e)
    low, step = thresholds.min(), min(n, max(MIN_ROWS, SIM_BLOCK // n))
    front = back = 0  # rows kept under some threshold at pool[:front]; removed under every one at pool[n - back:]
    for a in range(0, n, step):
        xb = xv[a:a + step]
        m = len(xb)
        # per threshold and row, the first earlier-block row within eps that is kept (k_) or removed (r_); n: none
        k_pos, k_sim = np.full((e, m), n, np.int64), np.zeros((e, m), np.float32)
        r_pos, r_sim = np.full((e, m), n, np.int64), np.zeros((e, m), np.float32)
        if front:
            s = xb @ pool[:front].T
            cand = np.flatnonzero(s.max(axis=1) > low)
            s = s[cand]
            for k, t in enumerate(thresholds):
                close, status = s > t, kept[k, pool_pos[:front]]
                for found_pos, found_sim, hit in ((k_pos, k_sim, close & status), (r_pos, r_sim, close & ~status)):
                    first = hit.argmax(axis=1)
                    has = np.flatnonzero(hit[np.arange(len(cand)), first])
                    found_pos[k, cand[has]] = pool_pos[first[has]]
                    found_sim[k, cand[has]] = s[has, first[has]]
            del s
        need = np.flatnonzero((k_pos == n).any(axis=0))
        if back and len(need):
            s = xb[need] @ pool[n - back:].T
            pos = pool_pos[n - back:]
            for k, t in enumerate(thresholds):
                hit = (s > t)[:, ::-1]  # reversed, the back is oldest first: the first hit is the earliest row
                first = hit.argmax(axis=1)
                has = np.flatnonzero(hit[np.arange(len(need)), first])
                col = back - 1 - first[has]
                better = pos[col] < r_pos[k, need[has]]
                r_pos[k, need[has][better]] = pos[col[better]]
                r_sim[k, need[has][better]] = s[has[better], col[better]]
            del s
        # this block's earlier rows, for those rows only: the others have a kept row within eps under every
        # threshold and are removed already (a block of placeholder copies costs no m x m product)
        kept_here = np.zeros((e, m), bool)
        if len(need):
            s = xb[need] @ xb.T
            earlier = np.arange(m)[None, :] < need[:, None]
            for k, t in enumerate(thresholds):
                within = (s > t) & earlier
                kept_here[k, need] = (k_pos[k, need] == n) & (r_pos[k, need] == n) & ~within.any(axis=1)
                # the partner, the first in visiting order of: an earlier block's kept rows (found above), this
                # block's kept rows, an earlier block's removed rows (found above), this block's removed rows
                part, part_sim = k_pos[k, need], k_sim[k, need]
                gone = ~kept_here[k, need]
                for rows in (within & kept_here[k][None, :], None, within):
                    todo = gone & (part == n)
                    if rows is None:
                        take = todo & (r_pos[k, need] < n)
                        part[take], part_sim[take] = r_pos[k, need[take]], r_sim[k, need[take]]
                    else:
                        first = rows.argmax(axis=1)
                        take = todo & rows[np.arange(len(need)), first]
                        part[take], part_sim[take] = a + first[take], s[take, first[take]]
                k_pos[k, need], k_sim[k, need] = part, part_sim
            del s, earlier
        kept[:, a:a + m] = kept_here
        near[:, a:a + m] = np.where(kept_here, -1, k_pos)
        near_sim[:, a:a + m] = np.where(kept_here, 0, k_sim)
        some = kept[:, a:a + m].any(axis=0)
        new, old = np.flatnonzero(some), np.flatnonzero(~some)[::-1]
        pool[front:front + len(new)], pool_pos[front:front + len(new)] = xb[new], a + new
        front += len(new)
        pool[n - back - len(old):n - back], pool_pos[n - back - len(old):n - back] = xb[old], a + old
        back += len(old)
    return kept, near, near_sim


def semdedup_bruteforce(x, fine_labels: np.ndarray, fine_centroids: np.ndarray, eps: float,
                        priority: np.ndarray | None = None, keep: Keep = "paper") -> SemDedupResult:
    """The `keep` rule of the module docstring, row by row over every row of each cluster (O(N^2)): for tests."""
    labels, centroids, priority = _check(x, fine_labels, fine_centroids, [eps], priority, keep)
    x32 = np.asarray(x, np.float32)
    t = np.float32(1 - eps)
    n = len(labels)
    kept = np.ones(n, bool)
    partner = np.full(n, -1, np.int64)
    sim = np.zeros(n, np.float32)
    for c in range(len(centroids)):
        rows = np.flatnonzero(labels == c)
        cosine = np.array([np.dot(x32[i].astype(np.float64), centroids[c]) for i in rows])
        order = rows[visiting_order(cosine, rows, priority, keep)]
        for p, i in enumerate(order):
            earlier = order[:p]
            if keep == "nearest_centroid":
                earlier = earlier[kept[earlier]]  # only kept rows remove
            sims = np.array([np.dot(x32[j], x32[i]) for j in earlier], np.float32)
            hits = earlier[sims > t]
            if len(hits):
                kept_hits = hits[kept[hits]]  # the first kept row within eps, else (a chain) the first row
                partner[i] = kept_hits[0] if len(kept_hits) else hits[0]
                kept[i], sim[i] = False, sims[list(earlier).index(partner[i])]
    gone = np.flatnonzero(~kept)
    return SemDedupResult(kept, gone.astype(np.int64), partner[gone], sim[gone])
