"""SemDeDup (Abbas et al. 2023): semantic near duplicates inside each fine k-means cluster.

The keep rule (`semdedup`), deterministic and bounded so that removal cannot chain:

1. Only rows of the same fine cluster are ever compared (the clustering's first stage, see lib.clustering);
   two rows are duplicates when their cosine similarity exceeds 1 - eps.
2. Inside a cluster rows are visited best first: highest `priority` when one is given, then closest to the
   fine centroid (highest cosine), ties to the lowest row index.
3. A visited row that is not yet removed is kept, and removes every not-yet-removed row of its cluster within
   eps of it. So every removed row names a kept partner within eps of it (the first such kept row in
   visiting order), and A~B, B~C does not remove C through B: C goes only if it is within eps of a kept row.

`semdedup_bruteforce` is the same rule written plainly, in O(N^2), for tests.

How the work is bounded: rows are sorted by label once (stable argsort), and each cluster's rows are read
from `x` (a memmap or a chunked reader: fancy row reads, rows ascending) as float32, then permuted into
visiting order. The cluster is walked in blocks of b rows; a block is compared with the rows kept so far
(not with every earlier row: 20,000 copies of one placeholder cost 20,000 dot products after the first
block, not 2 * 10^8), then with itself, and the block's rule is settled in visiting order. A block holds
b * max(kept so far, b) <= b * n_c <= SIM_BLOCK similarities (b = SIM_BLOCK // n_c, at least MIN_ROWS), so
the largest temporaries are a few arrays of SIM_BLOCK elements (float32 similarities, boolean masks), plus
the cluster's features and its kept rows: about 8 * n_c * D bytes for the largest cluster. No n_c x n_c
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

import numpy as np
from threadpoolctl import threadpool_limits

SIM_BLOCK = 1 << 23  # similarities per block: 32 MB of float32, and big enough for BLAS to run at full speed
MIN_ROWS = 64  # rows per block at least, so a huge cluster is not walked a handful of rows at a time
ORDER_ROWS = 4096  # rows per float64 block when computing closeness to the centroid


@dataclass
class SemDedupResult:
    keep: np.ndarray  # (N,) bool
    removed: np.ndarray  # (R,) int64, ascending
    partner: np.ndarray  # (R,) int64: the kept row that removed each removed row (same fine cluster)
    similarity: np.ndarray  # (R,) float32: cosine similarity of each removed row to its partner, > 1 - eps


def semdedup(x, fine_labels: np.ndarray, fine_centroids: np.ndarray, eps: float,
             priority: np.ndarray | None = None, workers: int | None = None) -> SemDedupResult:
    """Which rows of x (N, D) unit-norm features (float16/float32, array, memmap or chunked reader) to keep
    under the rule of the module docstring, given each row's fine cluster (N,) and the fine centroids
    (F, D); `priority` (N,) numbers, higher visited first (e.g. resolution), overriding closeness.
    `workers` threads share the clusters (default: the cores this process may use)."""
    keep, partner, sim = _run(x, fine_labels, fine_centroids, [eps], priority, workers)
    removed = np.flatnonzero(~keep[0])
    return SemDedupResult(keep[0], removed.astype(np.int64), partner[0, removed], sim[0, removed])


def eps_table(x, fine_labels: np.ndarray, fine_centroids: np.ndarray, eps_values,
              priority: np.ndarray | None = None, workers: int | None = None) -> list[tuple[float, int, float]]:
    """(eps, rows removed, fraction of N removed) for each eps, from one pass over the clusters: what
    `semdedup` would remove at each eps, to choose eps by the data it costs."""
    eps_values = [float(e) for e in eps_values]
    keep, _, _ = _run(x, fine_labels, fine_centroids, eps_values, priority, workers)
    n = keep.shape[1]
    return [(e, int(n - k.sum()), float(n - k.sum()) / n if n else 0.0) for e, k in zip(eps_values, keep)]


def visiting_order(cosine: np.ndarray, rows: np.ndarray, priority: np.ndarray | None) -> np.ndarray:
    """Positions of a cluster's rows in visiting order: highest priority, then highest cosine to the
    centroid, then lowest row index."""
    keys = (rows, -cosine) if priority is None else (rows, -cosine, -priority[rows])
    return np.lexsort(keys)


def _check(x, fine_labels, fine_centroids, eps_values, priority) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def _run(x, fine_labels, fine_centroids, eps_values, priority,
         workers: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keep (E, N) bool, partner (E, N) int64 or -1, similarity (E, N) float32) for each eps; clusters are
    shared among `workers` threads (default: this process' cores), each with single-threaded BLAS."""
    labels, centroids, priority = _check(x, fine_labels, fine_centroids, eps_values, priority)
    n, e = len(labels), len(eps_values)
    keep = np.ones((e, n), bool)
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
        order = visiting_order(cosine, rows, priority)
        xc, rows = xc[order], rows[order]
        kept, near, near_sim = _greedy(xc, thresholds)
        keep[:, rows] = kept
        partner[:, rows] = np.where(near >= 0, rows[np.maximum(near, 0)], -1)
        sim[:, rows] = near_sim

    with threadpool_limits(1), ThreadPoolExecutor(workers or len(os.sched_getaffinity(0))) as pool:
        list(pool.map(one_cluster, clusters))  # list(): re-raises a worker's exception here
    return keep, partner, sim


def _greedy(xv: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rule on one cluster whose rows xv (n, D) float32 are already in visiting order, for each threshold:
    (kept (E, n), partner position or -1 (E, n), similarity to it (E, n))."""
    n, e = len(xv), len(thresholds)
    kept = np.zeros((e, n), bool)
    near = np.full((e, n), -1, np.int64)
    near_sim = np.zeros((e, n), np.float32)
    low = thresholds.min()
    step = min(n, max(MIN_ROWS, SIM_BLOCK // n))
    pool = np.empty((n, xv.shape[1]), np.float32)  # rows kept under some threshold, in visiting order
    pool_pos = np.empty(n, np.int64)
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


def semdedup_bruteforce(x, fine_labels: np.ndarray, fine_centroids: np.ndarray, eps: float,
                        priority: np.ndarray | None = None) -> SemDedupResult:
    """The rule of the module docstring, row by row over every row of each cluster (O(N^2)): for tests."""
    labels, centroids, priority = _check(x, fine_labels, fine_centroids, [eps], priority)
    x32 = np.asarray(x, np.float32)
    n = len(labels)
    keep = np.ones(n, bool)
    partner = np.full(n, -1, np.int64)
    sim = np.zeros(n, np.float32)
    for c in range(len(centroids)):
        rows = np.flatnonzero(labels == c)
        cosine = np.array([np.dot(x32[i].astype(np.float64), centroids[c]) for i in rows])
        order = rows[visiting_order(cosine, rows, priority)]
        removed = np.zeros(n, bool)
        for i in order:
            if removed[i]:
                continue
            for j in order:
                s = np.dot(x32[i], x32[j])
                if j != i and not removed[j] and s > np.float32(1 - eps):
                    removed[j], keep[j], partner[j], sim[j] = True, False, i, s
            removed[i] = True  # visited and kept: nothing later removes it
    gone = np.flatnonzero(~keep)
    return SemDedupResult(keep, gone.astype(np.int64), partner[gone], sim[gone])
