"""The held-out split from a seeded hash of image_id: independent of the clustering and the row order, stable
as the data grows, the cap honoured and nested, and its distance from stratified reported."""

import hashlib

import numpy as np
import pytest

from paris_assets.lib.outputs.shards import heldout_mask, heldout_scores, heldout_summary

IDS = np.array([hashlib.md5(str(i).encode()).hexdigest()[:16] for i in range(20_000)])


def test_score_is_the_documented_hash():
    expected = int.from_bytes(hashlib.sha256(f"7:{IDS[0]}".encode()).digest()[:8], "big") / 2 ** 64
    assert heldout_scores(IDS[:1], 7)[0] == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("fraction", [0.01, 0.1])
def test_membership_ignores_row_order_and_the_rest_of_the_data(fraction):
    held = heldout_mask(IDS, fraction, 10**9, seed=0)
    assert abs(held.mean() - fraction) < 4 * np.sqrt(fraction / len(IDS))
    order = np.random.default_rng(1).permutation(len(IDS))
    assert np.array_equal(heldout_mask(IDS[order], fraction, 10**9, seed=0), held[order])
    grown = heldout_mask(np.concatenate([IDS, [f"new{i}" for i in range(5000)]]), fraction, 10**9, seed=0)
    assert np.array_equal(grown[:len(IDS)], held)  # rows added: nobody's membership moves
    assert not np.array_equal(heldout_mask(IDS, fraction, 10**9, seed=1), held)  # the seed chooses


def test_cap_keeps_the_smallest_scores_and_growth_only_shrinks_the_set():
    small = heldout_mask(IDS[:10_000], 0.1, 300, seed=0)
    assert small.sum() == 300
    scores = heldout_scores(IDS[:10_000], 0)
    assert scores[small].max() < scores[~small].min()
    big = heldout_mask(IDS, 0.1, 300, seed=0)
    assert big.sum() == 300
    assert not (big[:10_000] & ~small).any()  # no image trained on before is held out now
    assert heldout_mask(IDS, 0.1, 0, seed=0).sum() == 0 and heldout_mask(IDS, 0.0, 10, seed=0).sum() == 0


def test_summary_counts_per_cluster_and_worst_deviation():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 20)
    held = np.zeros(40, bool)
    held[[0, 1, 2, 3, 20]] = True  # 4 of cluster 0, 0 of cluster 1, 1 of cluster 2: overall rate 5/40
    s = heldout_summary(labels, held, 3)
    assert [s["per_cluster"][c]["heldout"] for c in "012"] == [4, 0, 1]
    assert [s["per_cluster"][c]["expected"] for c in "012"] == [1.25, 1.25, 2.5]
    assert s["worst_cluster"] == 0 and s["worst_deviation_images"] == 2.75
    assert s["worst_deviation_share"] == pytest.approx(0.4 - 0.125)


def test_heldout_share_is_close_to_stratified_for_any_clustering():
    held = heldout_mask(IDS, 0.05, 10**9, seed=0)
    for k in (2, 8, 32):
        labels = np.random.default_rng(k).integers(0, k, len(IDS))
        s = heldout_summary(labels, held, k)
        assert sum(c["heldout"] for c in s["per_cluster"].values()) == held.sum()
        size = len(IDS) / k
        assert s["worst_deviation_images"] < 4.5 * np.sqrt(size * 0.05)  # binomial noise, not a bias
