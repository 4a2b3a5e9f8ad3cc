"""Near-duplicate search: the multi-hash index finds exactly the pairs all-pairs search finds."""

import numpy as np
import pandas as pd
import pytest

from paris_assets.lib import dedup
from paris_assets.lib.filtering import find_duplicates


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


def test_components_and_representatives():
    groups = dedup.connected_components(6, np.array([[0, 3], [3, 5], [1, 2]]))
    assert groups.tolist() == [0, 1, 1, 0, 4, 0]
    rep = dedup.pick_representatives(groups, np.array([1, 5, 5, 9, 1, 9]))
    assert rep.tolist() == [3, 1, 1, 3, 4, 3]  # largest wins, ties to the earliest


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
