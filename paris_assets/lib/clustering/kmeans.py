"""Partition DINOv2 features into K clusters, one per expert: the DDM / Paris two-stage k-means.

`hierarchical`: spherical k-means to `fine_k` centroids (trained on a seeded sample when the data is large),
then k-means over those fine centroids, weighted by their sizes, into K coarse centroids; every image goes to
its nearest coarse centroid. `kmeans`: one pass straight to K. Cosine geometry throughout (features are
L2-normalised, centroids re-normalised) with the `faiss` backend (spherical k-means); the `sklearn` backend runs
Euclidean k-means on the unit vectors and normalises its centroids afterwards (close, not identical: its centroid
updates ignore the sphere). Seeded and deterministic. Arrays are read in row blocks, so the
full feature matrix is never copied into memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BLOCK = 65536
MIN_POINTS_PER_CENTROID = 10  # below this, a k-means centroid is fitted to noise
COARSE_RESTARTS = 5  # seeded restarts for the K-way step; the best objective wins


@dataclass
class Clustering:
    labels: np.ndarray  # (N,) int32
    centroids: np.ndarray  # (K, D) float32, unit norm
    distances: np.ndarray  # (N,) float32: cosine distance (1 - cos) to the assigned centroid
    fine_k: int = 0
    notes: list[str] = field(default_factory=list)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def kmeans(x: np.ndarray, k: int, seed: int, iterations: int = 25, backend: str = "faiss",
           weights: np.ndarray | None = None, restarts: int = 1) -> np.ndarray:
    """(k, D) unit-norm centroids of the rows of x (float32, unit norm), optionally weighted; the best of
    `restarts` seeded runs (cheap for the coarse K, where a bad start costs an expert its data)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if backend == "faiss":
        import faiss

        km = faiss.Kmeans(x.shape[1], k, niter=iterations, seed=seed, spherical=True, verbose=False, nredo=restarts,
                          min_points_per_centroid=1, max_points_per_centroid=10**9)
        km.train(x, weights=None if weights is None else np.ascontiguousarray(weights, dtype=np.float32))
        return _normalise(km.centroids)
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=k, random_state=seed, n_init=restarts, max_iter=iterations * 4)
        km.fit(x, sample_weight=weights)
        return _normalise(km.cluster_centers_)
    raise ValueError(f"clustering.backend must be faiss or sklearn, got {backend!r}")


def assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid by cosine for each row, in row blocks: (labels int32, cosine distances float32)."""
    labels = np.empty(len(x), np.int32)
    distances = np.empty(len(x), np.float32)
    c = centroids.astype(np.float32)
    for start in range(0, len(x), BLOCK):
        sims = np.asarray(x[start:start + BLOCK], dtype=np.float32) @ c.T
        best = sims.argmax(axis=1)
        labels[start:start + BLOCK] = best
        distances[start:start + BLOCK] = 1.0 - sims[np.arange(len(best)), best]
    return labels, distances


def _sample(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(x) <= n:
        return np.asarray(x, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))
    return np.asarray(x[rows], dtype=np.float32)


def training_sample(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The seeded sample k-means trains on (every row when there are at most n), float32, unit norm."""
    return _normalise(_sample(x, n, seed))


def fine_stage(train: np.ndarray, k: int, fine_k: int = 1024, seed: int = 0, backend: str = "faiss",
               iterations: int = 25) -> tuple[np.ndarray, list[str]]:
    """The hierarchical method's first stage: (fine_k, D) unit centroids trained on `train` (training_sample),
    and notes. SemDeDup searches inside these fine clusters before the coarse step (cluster(..., fine=...))
    reuses them."""
    notes: list[str] = []
    used_fine = min(fine_k, max(k, len(train) // MIN_POINTS_PER_CENTROID))
    if used_fine < fine_k:
        notes.append(f"fine_k reduced from {fine_k} to {used_fine}: {len(train):,} images give at most "
                     f"{MIN_POINTS_PER_CENTROID} per fine centroid")
    return kmeans(train, used_fine, seed, iterations, backend), notes


def cluster(x: np.ndarray, k: int, method: str = "hierarchical", fine_k: int = 1024, train_sample: int = 262_144,
            seed: int = 0, backend: str = "faiss", iterations: int = 25, fine: np.ndarray | None = None) -> Clustering:
    """Cluster the rows of x (N, D), unit-norm features, possibly a memory map, into k partitions. `fine`: the
    first stage's centroids, already trained (fine_stage) on data that x is a subset of."""
    n = len(x)
    if k < 2:
        raise ValueError(f"clustering.k must be at least 2, got {k}")
    if n < k:
        raise ValueError(f"cannot make {k} clusters from {n} images: lower clustering.k or add data")
    notes: list[str] = []
    train = training_sample(x, train_sample, seed)
    if len(train) < n:
        notes.append(f"k-means trained on a seeded sample of {len(train):,} of {n:,} images")
    if method == "kmeans":
        centroids, used_fine = kmeans(train, k, seed, iterations, backend, restarts=COARSE_RESTARTS), 0
    elif method == "hierarchical":
        if fine is None:
            fine, fine_notes = fine_stage(train, k, fine_k, seed, backend, iterations)
            notes += fine_notes
        used_fine = len(fine)
        fine_labels, _ = assign(train, fine)
        sizes = np.bincount(fine_labels, minlength=used_fine).astype(np.float32)
        occupied = sizes > 0
        if occupied.sum() < k:
            raise ValueError(f"only {int(occupied.sum())} distinct fine clusters for k={k}: lower clustering.k")
        centroids = kmeans(fine[occupied], k, seed, iterations, backend, weights=sizes[occupied],
                           restarts=COARSE_RESTARTS)
    else:
        raise ValueError(f"clustering.method must be hierarchical or kmeans, got {method!r}")
    labels, distances = assign(x, centroids)
    return Clustering(labels, centroids, distances, used_fine, notes)
