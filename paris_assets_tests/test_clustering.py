"""Clustering on features with known groups, and the report's numbers against direct computation."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, silhouette_score

from paris_assets.lib.clustering.report import quality, stratified_sample, top_terms, typical_members
from paris_assets.lib.clustering.kmeans import cluster


def blobs(n=2000, k=6, d=48, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    x = rng.standard_normal((k, d))[truth] + spread * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), truth


@pytest.mark.parametrize("method", ["hierarchical", "kmeans"])
@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_known_groups_are_recovered_deterministically(method, backend):
    x, truth = blobs()
    a = cluster(x, 6, method=method, backend=backend, seed=3)
    b = cluster(x, 6, method=method, backend=backend, seed=3)
    assert adjusted_rand_score(truth, a.labels) > 0.99
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.centroids, b.centroids)
    assert a.centroids.shape == (6, 48) and a.labels.dtype == np.int32
    np.testing.assert_allclose(np.linalg.norm(a.centroids, axis=1), 1, atol=1e-5)
    cos = (x * a.centroids[a.labels]).sum(axis=1)
    np.testing.assert_allclose(a.distances, 1 - cos, atol=1e-5)


def test_memory_mapped_input_and_small_data_notes(tmp_path):
    x, _ = blobs(n=300)
    np.save(tmp_path / "x.npy", x)
    result = cluster(np.load(tmp_path / "x.npy", mmap_mode="r"), 4, fine_k=1024, train_sample=200, seed=0)
    assert result.fine_k == 20 and len(result.labels) == 300
    assert any("fine_k reduced from 1024 to 20" in n for n in result.notes)
    assert any("seeded sample of 200" in n for n in result.notes)


def test_impossible_k_is_a_clear_error():
    x, _ = blobs(n=5)
    with pytest.raises(ValueError, match="cannot make 8 clusters from 5 images"):
        cluster(x, 8)


def test_quality_numbers_match_direct_computation():
    x, truth = blobs(n=600, k=4)
    labels = truth.astype(np.int32)
    q = quality(x, labels, 4, sample_size=10_000, seed=0)
    assert q["silhouette"] == pytest.approx(silhouette_score(x, labels, metric="cosine"), abs=1e-5)
    for c in range(4):
        members = x[labels == c]
        sims = members @ members.T
        n = len(members)
        assert q["intra_cosine"][c] == pytest.approx((sims.sum() - np.trace(sims)) / (n * (n - 1)), abs=1e-4)
    assert sum(q["sizes"]) == 600 and q["empty_clusters"] == 0
    q_with_empty = quality(x, labels, 5, sample_size=10_000, seed=0)
    assert q_with_empty["empty_clusters"] == 1 and q_with_empty["sizes"][4] == 0


def test_stratified_sample_is_bounded_and_keeps_every_cluster():
    labels = np.array([0] * 9000 + [1] * 900 + [2] * 100)
    rows = stratified_sample(labels, 500, seed=0)
    assert len(rows) <= 510 and set(labels[rows]) == {0, 1, 2}
    assert np.array_equal(rows, stratified_sample(labels, 500, seed=0))


def test_terms_and_typical_members():
    labels = np.array([0, 0, 1, 1])
    terms = top_terms(["red cars on a road", "red cars parked", "chocolate cakes", "a cake with chocolate"], labels, 2)
    assert terms[0][:2] == ["red", "cars"] and terms[1][0] == "chocolate"
    rows = typical_members(labels, np.array([0.5, 0.1, 0.3, 0.2]), 2, per_cluster=1)
    assert [r.tolist() for r in rows] == [[1], [3]]
