"""Near-duplicate search: the multi-hash index finds exactly the pairs all-pairs search finds, and the bounded
grouping gives the same groups as its plain O(n^2) statement."""

import numpy as np
import pandas as pd
import pytest

from paris_assets.lib.dedup import phash as dedup
from paris_assets.lib.images.filtering import find_duplicates


def planted(n: int, radius: int, pairs: int, seed: int = 0) -> tuple[np.ndarray, set]:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2) + rng.integers(0, 2, n).astype(np.uint64)
    truth = set()
    for k in range(pairs):
        i, j = 2 * k, 2 * k + 1
        flips = rng.choice(64, size=rng.integers(0, radius + 1), replace=False)
        mask = np.uint64(sum(1 << int(b) for b in flips))
        hashes[j] = hashes[i] ^ mask
        truth.add((i, j))
    return hashes, truth


@pytest.mark.parametrize("radius", [0, 1, 4, 7, 8, 12])
def test_multi_index_search_matches_bruteforce(radius):
    hashes, truth = planted(3000, radius, 200, seed=radius)
    fast = {tuple(p) for p in dedup.near_pairs(hashes, radius).tolist()}
    slow = {tuple(p) for p in dedup.near_pairs_bruteforce(hashes, radius).tolist()}
    assert fast == slow
    assert truth <= fast


@pytest.mark.parametrize("n", [10, 10_000, 1_000_000])
@pytest.mark.parametrize("radius", [0, 4, 10])
def test_search_plan_is_exact_by_pigeonhole(n, radius):
    m, s = dedup.search_plan(n, radius)
    assert m - radius >= s >= 1 and m <= 64


def test_large_groups_of_identical_hashes():
    hashes = np.array([7] * 50 + [2**40] * 3, dtype=np.uint64)
    pairs = dedup.near_pairs(hashes, 2)
    assert len(pairs) == 50 * 49 // 2 + 3


def around(center: int, count: int, max_flips: int, rng: np.random.Generator) -> np.ndarray:
    """`count` hashes each within `max_flips` bits of `center` (a dense group, like near-blank images)."""
    out = np.full(count, center, np.uint64)
    flips = rng.integers(0, max_flips + 1, count)
    for j in range(max_flips):
        bit = np.uint64(1) << rng.integers(0, 64, count).astype(np.uint64)
        out ^= np.where(j < flips, bit, np.uint64(0))
    return out


def mixed_hashes(n: int, radius: int, seed: int) -> np.ndarray:
    """Random hashes, dense groups around a few centres, and chains of hashes radius bits apart."""
    rng = np.random.default_rng(seed)
    spread = rng.integers(0, 2**63, n // 3, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    dense = np.concatenate([around(int(c), n // 9, 2 * radius + 1, rng)
                            for c in rng.integers(0, 2**63, 3, dtype=np.int64)])
    chain = [int(rng.integers(0, 2**63))]
    for _ in range(n - len(spread) - len(dense) - 1):
        bits = rng.choice(64, size=max(radius, 1), replace=False)
        chain.append(chain[-1] ^ sum(1 << int(b) for b in bits))
    hashes = np.concatenate([spread, dense, np.array(chain, np.uint64)])
    return hashes[rng.permutation(len(hashes))]


@pytest.mark.parametrize(("dense_run", "chunk_work"), [(1, 2_000_000), (8, 2_000_000), (48, 2_000_000), (8, 50)])
@pytest.mark.parametrize("radius", [0, 1, 3, 4, 6])
@pytest.mark.parametrize("with_priority", [False, True])
def test_grouping_matches_the_plain_rule(dense_run, chunk_work, radius, with_priority, monkeypatch):
    """dense_run 1 scans every run per leader; 48 lists pairs in most runs; chunk_work 50 cuts chunks to a few
    values: every answer is the plain rule's."""
    monkeypatch.setattr(dedup, "DENSE_RUN", dense_run)
    monkeypatch.setattr(dedup, "CHUNK_WORK", chunk_work)
    hashes = mixed_hashes(900, radius, seed=radius)
    priority = np.random.default_rng(radius).integers(0, 5, len(hashes)) if with_priority else None
    fast = dedup.group_near_duplicates(hashes, radius, priority)
    assert fast.tolist() == dedup.group_near_duplicates_bruteforce(hashes, radius, priority).tolist()
    assert (dedup.hamming(hashes, hashes[fast]) <= radius).all()
    assert (fast[fast] == fast).all()  # a representative represents itself


def test_a_chain_does_not_join_beyond_the_representative():
    """A~B and B~C with A far from C: A leads {A, B}; C, not within radius of A, leads its own group."""
    a, b, c = 0, 0b1111, 0b11111111
    rep = dedup.group_near_duplicates(np.array([a, b, c], np.uint64), 4)
    assert rep.tolist() == [0, 0, 2]
    # with C first in priority it leads {C, B}, and A is left to lead itself
    rep = dedup.group_near_duplicates(np.array([a, b, c], np.uint64), 4, priority=np.array([1, 1, 2]))
    assert rep.tolist() == [0, 2, 2]


def test_chained_near_copies_stay_in_the_rejected_table_within_radius():
    facts = pd.DataFrame({
        "image_id": list("abc"), "sha256": list("xyz"),
        "phash": [f"{h:016x}" for h in (0, 0b1111, 0b11111111)],
        "original_width": [300, 200, 100], "original_height": [300, 200, 100],
    })
    reason, detail = find_duplicates(facts, radius=4)
    assert reason.tolist() == ["", "duplicate_near", ""]
    assert detail[1] == "of a (pHash distance 4)"


def test_equal_hashes_collapse_to_one_value():
    hashes = np.array([7] * 20_000 + [2**40] * 3 + [2**40 + 1], dtype=np.uint64)
    stats = {}
    rep = dedup.group_near_duplicates(hashes, 2, stats=stats)
    assert stats["unique"] == 3 and stats["groups"] == 2
    assert set(rep[:20_000].tolist()) == {0} and set(rep[20_000:].tolist()) == {20_000}


def test_a_dense_group_is_not_expanded_into_all_its_pairs():
    """3,000 distinct hashes within 3 bits of one value hold ~950k pairs within radius 4; the grouping
    computes a few tens of thousands of distances."""
    rng = np.random.default_rng(3)
    hashes = np.concatenate([around(0x0123456789ABCDEF, 3000, 3, rng),
                             rng.integers(0, 2**63, 5000, dtype=np.int64).astype(np.uint64)])
    stats = {}
    rep = dedup.group_near_duplicates(hashes, 4, stats=stats)
    all_pairs = len(dedup.near_pairs_bruteforce(hashes, 4))
    assert all_pairs > 500_000
    assert stats["pairs_listed"] + stats["distances"] < all_pairs / 10
    assert rep.tolist() == dedup.group_near_duplicates_bruteforce(hashes, 4).tolist()


def test_representative_is_the_best_of_its_group():
    facts = pd.DataFrame({"image_id": list("abcd"), "sha256": list("wxyz"),
                          "phash": [f"{h:016x}" for h in (1, 3, 0xFFFF << 40, 7)],
                          "original_width": [10, 40, 10, 40], "original_height": [10, 40, 10, 40]})
    reason, detail = find_duplicates(facts, radius=2)
    # b (largest, earliest of the two largest) leads; a and d are within 2 bits of it
    assert reason.tolist() == ["duplicate_near", "", "", "duplicate_near"]
    assert detail[0] == "of b (pHash distance 1)" and detail[3] == "of b (pHash distance 1)"


def test_find_duplicates_reasons():
    facts = pd.DataFrame({
        "image_id": list("abcde"),
        "sha256": ["x", "x", "y", "z", "w"],
        "phash": [f"{h:016x}" for h in (0, 0, 1, 0x00000000FFFFFFFF, 0xFFFFFFFF00000000)],
        "original_width": [100, 100, 200, 50, 50],
        "original_height": [100, 100, 200, 50, 50],
    })
    reason, detail = find_duplicates(facts, radius=4)
    # a, b, c form one group; c is the largest, so it is kept; a and b are near copies of c
    assert reason.tolist() == ["duplicate_near", "duplicate_near", "", "", ""]
    assert detail[0].startswith("of c")


def test_exact_copies_keep_the_first():
    facts = pd.DataFrame({"image_id": ["a", "b"], "sha256": ["x", "x"], "phash": ["0000000000000005"] * 2,
                          "original_width": [10, 10], "original_height": [10, 10]})
    reason, _ = find_duplicates(facts, radius=0)
    assert reason.tolist() == ["", "duplicate_exact"]


def test_sixty_four_bit_hashes_survive_rejected_rows():
    """A rejected image has no pHash; the column must still carry exact 64-bit values for the others."""
    facts = pd.DataFrame({"image_id": ["a", "b", "c"], "sha256": ["x", "y", "z"],
                          "phash": ["f123456789abcdef", "f123456789abcdee", "0123456789abcdef"],
                          "original_width": [10, 20, 10], "original_height": [10, 20, 10]})
    reason, detail = find_duplicates(facts, radius=1)
    assert reason.tolist() == ["duplicate_near", "", ""] and "distance 1" in detail[0]
