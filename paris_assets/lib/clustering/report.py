"""What explains a clustering: the exact silhouette, Davies-Bouldin on a stratified sample, per-cluster facts,
grids and terms.

Silhouette is quadratic in general, but under cosine distance on unit vectors it is linear: the mean distance
from a point to a cluster is 1 - x.S/n with S the cluster's sum. So it is exact over every row, streamed, even at
11M. Sizes and mean intra-cluster cosine similarity are exact too (for unit vectors, the sum of pairwise
similarities in a cluster is |S|^2 - n). Davies-Bouldin runs on a seeded, cluster-stratified sample.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

BLOCK = 65536
STOPWORDS = set("""a an the of and or with in on at to for from by over under into onto is are was were be this that
these those it its as up down out off near some very photo picture image view""".split())


def stratified_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted row indices: each cluster in proportion to its size (at least 2 rows where it has them)."""
    n = len(labels)
    if n <= size:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    picked = []
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        take = min(len(members), max(2, int(round(size * len(members) / n))))
        picked.append(rng.choice(members, take, replace=False))
    return np.sort(np.concatenate(picked))


def cluster_sums(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(K, D) float64 sum of each cluster's rows, streamed in blocks (one-hot products, not np.add.at)."""
    sums = np.zeros((k, x.shape[1]), np.float64)
    for start in range(0, len(labels), BLOCK):
        block = np.asarray(x[start:start + BLOCK], dtype=np.float32)
        onehot = np.zeros((k, len(block)), np.float32)
        onehot[labels[start:start + BLOCK], np.arange(len(block))] = 1.0
        sums += onehot @ block
    return sums


def cosine_silhouette(x: np.ndarray, labels: np.ndarray, k: int, sums: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Exact per-point silhouette under cosine distance, for unit-norm rows, in O(N K D) instead of O(N^2 D).

    For unit vectors 1 - cos(x, y) = 1 - x.y, so the mean distance from x to a cluster is 1 - x.S_c / n_c
    (S_c the cluster's sum; x's own cluster excludes x itself). Singleton clusters score 0, as in sklearn.
    """
    out = np.empty(len(labels), np.float64)
    sums32 = sums.astype(np.float32)
    for start in range(0, len(labels), BLOCK):
        block = np.asarray(x[start:start + BLOCK], dtype=np.float32)
        lab = labels[start:start + BLOCK]
        dots = (block @ sums32.T).astype(np.float64)  # (B, K)
        own_n = sizes[lab].astype(np.float64)
        self_dot = np.einsum("ij,ij->i", block, block).astype(np.float64)
        a = 1.0 - (dots[np.arange(len(lab)), lab] - self_dot) / np.maximum(own_n - 1, 1)
        mean_to = 1.0 - dots / np.maximum(sizes, 1)[None, :]
        mean_to[np.arange(len(lab)), lab] = np.inf
        mean_to[:, sizes == 0] = np.inf
        b = mean_to.min(axis=1)
        s = (b - a) / np.maximum(np.maximum(a, b), 1e-12)
        out[start:start + BLOCK] = np.where(own_n > 1, s, 0.0)
    return out


def quality(x: np.ndarray, labels: np.ndarray, k: int, sample_size: int, seed: int) -> dict:
    """Silhouette (cosine, exact over every row: linear time for unit vectors), per cluster too; sizes,
    fractions and mean intra-cluster cosine similarity over every row; Davies-Bouldin on a seeded
    cluster-stratified sample of at most `sample_size` rows."""
    from sklearn.metrics import davies_bouldin_score

    n = len(labels)
    sizes = np.bincount(labels, minlength=k)
    sums = cluster_sums(x, labels, k)
    pair_sums = (sums ** 2).sum(axis=1) - sizes
    intra = np.where(sizes > 1, pair_sums / np.maximum(sizes * (sizes - 1), 1), np.nan)
    present = int((sizes > 0).sum())
    if present >= 2:
        per_point = cosine_silhouette(x, labels, k, sums, sizes)
        silhouette = float(per_point.mean())
        per_cluster = [float(per_point[labels == c].mean()) if sizes[c] else None for c in range(k)]
        rows = stratified_sample(labels, sample_size, seed)
        distinct = len(np.unique(labels[rows]))
        davies_bouldin = float(davies_bouldin_score(np.asarray(x[rows], dtype=np.float32), labels[rows])) \
            if 1 < distinct < len(rows) else float("nan")
    else:
        silhouette, per_cluster, davies_bouldin, rows = float("nan"), [None] * k, float("nan"), np.arange(0)
    return {
        "n": int(n), "k": int(k), "sample_size": int(len(rows)),
        "silhouette": silhouette, "davies_bouldin": davies_bouldin,
        "sizes": sizes.tolist(), "fractions": (sizes / max(n, 1)).round(6).tolist(),
        "largest_fraction": float(sizes.max() / max(n, 1)), "empty_clusters": int((sizes == 0).sum()),
        "intra_cosine": [None if np.isnan(v) else round(float(v), 6) for v in intra],
        "silhouette_per_cluster": [None if v is None else round(v, 6) for v in per_cluster],
    }


def top_terms(captions: list[str], labels: np.ndarray, k: int, n_terms: int = 8) -> list[list[str]]:
    """The most frequent caption words per cluster, stopwords left out: what a person names the cluster by."""
    counters = [Counter() for _ in range(k)]
    for text, label in zip(captions, labels):
        counters[label].update(w for w in re.findall(r"[a-z][a-z'-]+", str(text).lower()) if w not in STOPWORDS)
    return [[w for w, _ in c.most_common(n_terms)] for c in counters]


def typical_members(labels: np.ndarray, distances: np.ndarray, k: int, per_cluster: int = 25) -> list[np.ndarray]:
    """Row indices of the members closest to each centroid (the most typical first)."""
    out = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        out.append(members[np.argsort(distances[members], kind="stable")[:per_cluster]])
    return out


def grid_png(images: list[np.ndarray], side: int = 5, thumb: int = 64) -> bytes:
    """A side x side grid of thumbnails (blank cells where the cluster has fewer members), as PNG bytes."""
    canvas = Image.new("RGB", (side * thumb, side * thumb), (240, 240, 240))
    for i, image in enumerate(images[: side * side]):
        canvas.paste(Image.fromarray(image).resize((thumb, thumb)), ((i % side) * thumb, (i // side) * thumb))
    buf = io.BytesIO()
    canvas.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def projection_2d(x: np.ndarray, rows: np.ndarray, seed: int) -> np.ndarray:
    """A 2-D PCA projection of the sampled rows, for the scatter plot."""
    from sklearn.decomposition import PCA

    sample = np.asarray(x[rows], dtype=np.float32)
    if len(sample) < 3:
        return np.zeros((len(sample), 2), np.float32)
    return PCA(n_components=2, random_state=seed).fit_transform(sample).astype(np.float32)


def write_html(path: Path, metrics: dict, terms: list[list[str]], points: np.ndarray, point_labels: np.ndarray) -> None:
    """report.html: cluster sizes and a 2-D projection coloured by cluster (plotly, self-contained, offline)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    k = metrics["k"]
    names = [f"{c}: {', '.join(terms[c][:3])}" for c in range(k)]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("images per cluster", "DINOv2 features, 2-D PCA of a sample"))
    fig.add_trace(go.Bar(x=[str(c) for c in range(k)], y=metrics["sizes"], hovertext=names, showlegend=False), 1, 1)
    for c in range(k):
        members = point_labels == c
        fig.add_trace(go.Scattergl(x=points[members, 0], y=points[members, 1], mode="markers", name=names[c],
                                   marker={"size": 4}), 1, 2)
    fig.update_layout(title=f"K={k}: silhouette {metrics['silhouette']:.3f}, Davies-Bouldin "
                            f"{metrics['davies_bouldin']:.2f}, {metrics['n']:,} images", height=520)
    fig.write_html(path, include_plotlyjs=True, full_html=True)


def write_json(path: Path, report: dict) -> None:
    path.write_text(json.dumps(report, indent=1, sort_keys=True, default=float))


def make_report(x: np.ndarray, labels: np.ndarray, distances: np.ndarray, k: int, captions: list[str],
                load_images, out_dir: Path, sample_size: int, seed: int) -> dict:
    """Write report.json, report.html and grids/cluster_<k>.png into out_dir; returns the report.

    `load_images(rows)` returns uint8 (H, W, 3) crops of the given kept rows."""
    report = quality(x, labels, k, sample_size, seed)
    report["top_terms"] = top_terms(captions, labels, k)
    (out_dir / "grids").mkdir(parents=True, exist_ok=True)
    for c, rows in enumerate(typical_members(labels, distances, k)):
        (out_dir / "grids" / f"cluster_{c}.png").write_bytes(grid_png(load_images(rows) if len(rows) else []))
    rows = stratified_sample(labels, min(sample_size, 5000), seed)
    write_html(out_dir / "report.html", report, report["top_terms"], projection_2d(x, rows, seed), labels[rows])
    write_json(out_dir / "report.json", report)
    return report
