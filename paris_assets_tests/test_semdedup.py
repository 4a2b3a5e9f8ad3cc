"""SemDeDup: under both keep rules the blocked pass keeps exactly the rows the plain O(N^2) statement of the rule
keeps, the paper's rule keeps what a transcription of facebookresearch/SemDeDup keeps, the two rules differ where
they should, no pair crosses fine clusters, and a giant cluster of identical vectors stays bounded."""

import tracemalloc

import numpy as np
import pytest

from paris_assets.lib.dedup import semdedup as sd
from paris_assets.lib.clustering.kmeans import assign


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def clustered(n: int = 1200, d: int = 24, fine: int = 12, seed: int = 0, dtype=np.float32):
    """Rows around `fine` centroids, a quarter of them near copies of another row (some of copies, so that
    chains exist), exact copies among them; labels by nearest centroid, as the clustering assigns them."""
    rng = np.random.default_rng(seed)
    centroids = unit(rng.standard_normal((fine, d)))
    x = unit(centroids[rng.integers(0, fine, n)] + rng.uniform(0.3, 1.0, (n, 1)) * rng.standard_normal((n, d)))
    for j in rng.choice(np.arange(1, n), n // 4, replace=False):
        src = rng.integers(0, j)
        x[j] = unit(x[src:src + 1] + rng.choice([0.0, 0.02, 0.1, 0.3]) * rng.standard_normal((1, d)))[0]
    x = x.astype(dtype)
    labels, _ = assign(x, centroids.astype(np.float32))
    return x, labels, centroids.astype(np.float32)


@pytest.fixture(params=["default", "small"])
def blocks(request, monkeypatch):
    """Default blocks (one per test cluster) and tiny ones, so clusters are walked in many blocks."""
    if request.param == "small":
        monkeypatch.setattr(sd, "SIM_BLOCK", 2000)
        monkeypatch.setattr(sd, "MIN_ROWS", 7)
    return request.param


def reference_semdedup(x, labels: np.ndarray, centroids: np.ndarray, eps: float) -> np.ndarray:
    """(N,) bool, the rows facebookresearch/SemDeDup keeps (keep_hard=True, sim_metric cosine), transcribed from its
    clustering/sort_clusters.py (rank_within_cluster) and semdedup.py (SemDeDupJob.semdedup) with numpy for torch."""
    x = np.asarray(x, np.float32)
    keep = np.ones(len(x), bool)
    for c in range(len(centroids)):
        items = list(np.flatnonzero(labels == c))  # the cluster's rows in dataset order
        if len(items) < 2:
            continue
        centroid = centroids[c].astype(np.float32)
        sim_to_cent = x[items] @ centroid / (np.linalg.norm(x[items], axis=1) * np.linalg.norm(centroid))
        dists = (1 - sim_to_cent).tolist()
        ranked = sorted(zip(items, dists), key=lambda r: r[1], reverse=True)  # keep_hard: farthest first
        reps = x[[i for i, _ in ranked]]
        pair_w_sim_matrix = reps @ reps.T
        np.fill_diagonal(pair_w_sim_matrix, 0.0)
        triu_sim_mat = np.triu(pair_w_sim_matrix, k=1)
        m = triu_sim_mat.max(axis=0)  # per row, its highest similarity to an earlier row
        removed = m > np.float32(1 - eps)  # torch compares a float32 tensor with a Python float in float32
        keep[[i for (i, _), r in zip(ranked, removed) if r]] = False
    return keep


@pytest.mark.parametrize("keep", sd.KEEP_RULES)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("eps", [0.01, 0.1, 0.3])
def test_matches_bruteforce(seed, dtype, eps, keep, blocks):
    x, labels, centroids = clustered(seed=seed, dtype=dtype)
    fast = sd.semdedup(x, labels, centroids, eps, keep=keep)
    slow = sd.semdedup_bruteforce(x, labels, centroids, eps, keep=keep)
    assert 0 < len(fast.removed) < len(x)
    np.testing.assert_array_equal(fast.keep, slow.keep)
    np.testing.assert_array_equal(fast.removed, slow.removed)
    np.testing.assert_array_equal(fast.partner, slow.partner)
    np.testing.assert_allclose(fast.similarity, slow.similarity, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 3, 8])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("eps", [0.01, 0.05, 0.1, 0.3])
def test_paper_rule_keeps_what_the_reference_keeps(seed, dtype, eps, blocks):
    x, labels, centroids = clustered(n=900, seed=seed, dtype=dtype)
    expected = reference_semdedup(x, labels, centroids, eps)
    assert 0 < (~expected).sum() < len(x)
    np.testing.assert_array_equal(sd.semdedup(x, labels, centroids, eps).keep, expected)
    [(_, removed, _)] = sd.eps_table(x, labels, centroids, [eps])
    assert removed == (~expected).sum()


@pytest.mark.parametrize("eps,chains", [(0.02, 0), (0.3, 3)])
def test_paper_partners_are_within_eps_and_kept_unless_a_chain(eps, chains, blocks):
    x, labels, centroids = clustered(seed=3)
    r = sd.semdedup(x, labels, centroids, eps)
    assert (labels[r.partner] == labels[r.removed]).all() and not r.keep[r.removed].any()
    sims = np.einsum("ij,ij->i", x[r.removed], x[r.partner])
    np.testing.assert_allclose(sims, r.similarity, atol=1e-5)
    assert (r.similarity > 1 - eps).all()
    chained = r.removed[~r.keep[r.partner]]  # partner removed too: then no kept row may be within eps
    assert len(chained) == chains
    for i in chained:
        same = np.flatnonzero((labels == labels[i]) & r.keep)
        assert (x[same] @ x[i] <= np.float32(1 - eps)).all()


@pytest.mark.parametrize("eps", [0.02, 0.3])
def test_nearest_centroid_partners_are_kept_within_eps_and_in_the_same_cluster(eps, blocks):
    x, labels, centroids = clustered(seed=3)
    r = sd.semdedup(x, labels, centroids, eps, keep="nearest_centroid")
    assert r.keep[r.partner].all() and not r.keep[r.removed].any()
    assert (labels[r.partner] == labels[r.removed]).all()
    sims = np.einsum("ij,ij->i", x[r.removed], x[r.partner])
    np.testing.assert_allclose(sims, r.similarity, atol=1e-5)
    assert (r.similarity > 1 - eps).all()
    assert r.keep.sum() + len(r.removed) == len(x)


def angles(*degrees: float) -> np.ndarray:
    return np.array([[np.cos(np.radians(d)), np.sin(np.radians(d))] for d in degrees], np.float32)


@pytest.mark.parametrize("keep,kept,partner", [("paper", [False, False, True], [1, 2]),
                                               ("nearest_centroid", [True, False, True], [0])])
def test_the_two_rules_on_a_chain(keep, kept, partner):
    """A, B, C at 0, 10 and 20 degrees, the centroid at -30 (A closest), eps 0.03 (duplicates: closer than
    14 degrees): A~B and B~C but not A~C. The paper visits C, B, A: C is kept, B goes for C, A goes for B (any
    earlier row removes, kept or not). nearest_centroid visits A, B, C: A is kept, B goes for A, and C stays,
    since only kept rows remove."""
    x, centroid = angles(0, 10, 20), angles(-30)
    r = sd.semdedup(x, np.zeros(3, int), centroid, 0.03, keep=keep)
    assert r.keep.tolist() == kept and r.partner.tolist() == partner
    np.testing.assert_allclose(r.similarity, np.cos(np.radians(10)), rtol=1e-6)
    assert sd.eps_table(x, np.zeros(3, int), centroid, [0.03], keep=keep)[0][1] == kept.count(False)
    slow = sd.semdedup_bruteforce(x, np.zeros(3, int), centroid, 0.03, keep=keep)
    assert slow.keep.tolist() == kept and slow.partner.tolist() == partner
    if keep == "paper":
        assert reference_semdedup(x, np.zeros(3, int), centroid, 0.03).tolist() == kept


@pytest.mark.parametrize("keep,kept", [("paper", [False, True]), ("nearest_centroid", [True, False])])
def test_the_two_rules_keep_the_other_image_of_a_pair(keep, kept):
    """A pair within eps: the paper keeps the one farther from the centroid (the "hard" example)."""
    r = sd.semdedup(angles(0, 5), np.zeros(2, int), angles(-30), 0.03, keep=keep)
    assert r.keep.tolist() == kept


@pytest.mark.parametrize("keep", sd.KEEP_RULES)
def test_never_pairs_across_fine_clusters(keep):
    """Identical rows given different fine labels are all kept: the clusters are never compared."""
    rng = np.random.default_rng(0)
    v = unit(rng.standard_normal((1, 16)))
    x = np.repeat(v, 6, axis=0).astype(np.float32)
    centroids = np.repeat(v, 3, axis=0)
    r = sd.semdedup(x, np.array([0, 1, 2, 0, 1, 2]), centroids, 0.1, keep=keep)
    assert r.keep.tolist() == [True, True, True, False, False, False]
    assert r.partner.tolist() == [0, 1, 2]


@pytest.mark.parametrize("keep", sd.KEEP_RULES)
def test_deterministic_and_same_from_a_memmap(tmp_path, keep):
    x, labels, centroids = clustered(seed=4, dtype=np.float16)
    np.save(tmp_path / "x.npy", x)
    a = sd.semdedup(x, labels, centroids, 0.1, keep=keep)
    b = sd.semdedup(np.load(tmp_path / "x.npy", mmap_mode="r"), labels, centroids, 0.1, keep=keep)
    for f in ("keep", "removed", "partner", "similarity"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


@pytest.mark.parametrize("keep", sd.KEEP_RULES)
def test_giant_cluster_of_identical_rows_keeps_one_within_bounded_memory(monkeypatch, keep):
    """6,000 copies of one placeholder in one fine cluster (plus others): one copy is kept, the lowest row,
    and no step allocates anything like the 6,000 x 6,000 similarity matrix (144 MB)."""
    monkeypatch.setattr(sd, "SIM_BLOCK", 1 << 16)
    x, labels, centroids = clustered(n=600, d=16, fine=4, seed=5)
    placeholder = unit(np.ones((1, 16)))
    x = np.concatenate([x, np.repeat(placeholder, 6000, axis=0)]).astype(np.float32)
    labels = np.concatenate([labels, np.full(6000, 4)])
    centroids = np.concatenate([centroids, placeholder]).astype(np.float32)
    tracemalloc.start()
    r = sd.semdedup(x, labels, centroids, 0.05, keep=keep)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    giant = np.arange(600, 6600)
    assert r.keep[giant].sum() == 1 and r.keep[600]
    assert (r.partner[np.isin(r.removed, giant)] == 600).all()
    assert peak < 8 << 20, peak


@pytest.mark.parametrize("keep", sd.KEEP_RULES)
@pytest.mark.parametrize("seed", [0, 6])
def test_eps_table_agrees_with_separate_runs(seed, keep, blocks):
    x, labels, centroids = clustered(seed=seed, dtype=np.float16)
    eps_values = [0.01, 0.05, 0.1, 0.2, 0.4]
    table = sd.eps_table(x, labels, centroids, eps_values, keep=keep)
    for (e, removed, fraction), eps in zip(table, eps_values):
        alone = sd.semdedup(x, labels, centroids, eps, keep=keep)
        assert (e, removed) == (eps, len(alone.removed))
        assert fraction == pytest.approx(removed / len(x))
    assert [t[1] for t in table] == sorted(t[1] for t in table)  # on this data a larger eps removes more


@pytest.mark.parametrize("keep", sd.KEEP_RULES)
def test_priority_comes_before_closeness(keep):
    rng = np.random.default_rng(7)
    c = unit(rng.standard_normal((1, 8)))
    near = unit(c + 0.01 * rng.standard_normal((2, 8)))
    x = near.astype(np.float32)
    first = int(np.argmax(x @ c[0])) if keep == "nearest_centroid" else int(np.argmin(x @ c[0]))
    r = sd.semdedup(x, np.zeros(2, int), c, 0.1, keep=keep)
    assert r.keep.tolist() == [i == first for i in range(2)]
    r = sd.semdedup(x, np.zeros(2, int), c, 0.1, priority=np.array([1.0, 1.0]) + np.eye(2)[1 - first], keep=keep)
    assert r.keep.tolist() == [i != first for i in range(2)]


def test_empty_input_and_a_cluster_of_one():
    r = sd.semdedup(np.empty((0, 8), np.float16), np.empty(0, int), np.eye(8), 0.1)
    assert r.keep.shape == (0,) and r.removed.dtype == np.int64 and len(r.partner) == 0
    assert sd.eps_table(np.empty((0, 8), np.float16), np.empty(0, int), np.eye(8), [0.1]) == [(0.1, 0, 0.0)]
    x = np.eye(8, dtype=np.float32)[:3]
    r = sd.semdedup(x, np.array([0, 1, 2]), np.eye(8), 0.5)
    assert r.keep.all() and len(r.removed) == 0


def test_mismatched_inputs_raise():
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="fine_labels"):
        sd.semdedup(x, np.zeros(3, int), np.eye(4), 0.1)
    with pytest.raises(ValueError, match="fine centroids"):
        sd.semdedup(x, np.array([0, 1, 2, 5]), np.eye(4), 0.1)
    with pytest.raises(ValueError, match="eps"):
        sd.semdedup(x, np.zeros(4, int), np.eye(4), 0.0)
    with pytest.raises(ValueError, match=r"keep must be one of \('paper', 'nearest_centroid'\), got 'hard'"):
        sd.semdedup(x, np.zeros(4, int), np.eye(4), 0.1, keep="hard")


def test_bench_main_runs_at_a_tiny_size(tmp_path, capsys):
    from paris_assets.bench import semdedup as bench_semdedup

    bench_semdedup.main(["--sizes", "2000,4000", "--dim", "32", "--fine", "16", "--placeholders", "300",
                         "--baseline-sizes", "2000", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "4,000" in out and "extrapolated" in out
