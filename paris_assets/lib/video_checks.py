"""The judgements lib/video makes on a decoded clip, and the near-duplicate search across clips.

- Hard cuts: on the source frames (not the resampled clip, where ordinary motion between samples is 3-4x
  larger and a cut stands out less), from the mean |difference| of consecutive 32x32 grey thumbnails. A cut
  is a difference that exceeds the larger of the medians of the CUT_CONTEXT differences before it and after
  it by `threshold` grey levels: a level jump over its neighbours, so steady fast motion (a pan: large
  differences everywhere) is not a cut and a cut between two busy shots still is.
- Stills: mean |difference| of consecutive frames of the resampled clip, on 32x32 grey thumbnails.
- Near duplicates: two clips are duplicates when every keyframe pHash (first, middle, last) is within `radius`
  bits of the other clip's (Chebyshev distance over keyframes <= radius), grouped with lib/dedup's rule.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import dedup

CUT_CONTEXT = 3  # differences each side of a candidate that set its baseline


def find_cuts(diffs: np.ndarray, threshold: float) -> list[int]:
    """Frame indices i where a hard cut falls between frame i-1 and frame i.

    diffs[i] is the mean |grey difference| between frames i-1 and i (diffs[0] = 0). A cut needs
    diffs[i] - max(median(diffs before, up to CUT_CONTEXT), median(diffs after)) >= threshold.
    """
    d = np.asarray(diffs, np.float64)
    cuts = []
    for i in np.flatnonzero(d >= threshold).tolist():
        if i == 0:
            continue
        before, after = d[max(1, i - CUT_CONTEXT):i], d[i + 1:i + 1 + CUT_CONTEXT]
        base = max(np.median(before) if len(before) else 0.0, np.median(after) if len(after) else 0.0)
        if d[i] - base >= threshold:
            cuts.append(i)
    return cuts


def longest_window(grid: list[int], cuts: list[int], need: int) -> list[int] | None:
    """The `need` consecutive samples centred in the longest cut-free stretch, or None when none is long enough.

    grid[j] is the source frame shown at sample j; a cut at frame c starts a new shot at c."""
    shot = np.searchsorted(np.asarray(sorted(cuts), np.int64), np.asarray(grid, np.int64), side="right")
    starts = np.flatnonzero(np.r_[True, shot[1:] != shot[:-1]])
    lengths = np.diff(np.r_[starts, len(shot)])
    best = int(np.argmax(lengths))  # the earliest of equally long stretches
    if lengths[best] < need:
        return None
    first = int(starts[best] + (lengths[best] - need) // 2)
    return list(range(first, first + need))


def clip_motion(clip: np.ndarray) -> float:
    """Mean |difference| of consecutive frames, grey levels on 32x32 thumbnails of (T, S, S, 3) RGB."""
    thumbs = np.stack([cv2.cvtColor(cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
                       for f in clip]).astype(np.int16)
    return float(np.abs(np.diff(thumbs, axis=0)).mean()) if len(thumbs) > 1 else 0.0


def near_duplicate_groups(phashes: np.ndarray, radius: int, priority: np.ndarray | None = None) -> np.ndarray:
    """Representative of each clip's group: rep[i] == i for kept clips (dedup's rule on the keyframe distance).

    phashes: (N, K) uint64, K keyframes per clip. Distance = the largest per-keyframe Hamming distance. Clips are
    visited best first (dedup.priority_order); an unclaimed clip leads and claims every unclaimed clip within
    radius. Identical rows collapse first (thousands of placeholder copies cost one row). Candidates come from
    lib/dedup's multi-index on the first keyframe (two clips within radius agree exactly on some block set of
    it); each leader looks up its own runs, keeps the unclaimed, and verifies every keyframe. Work: a sort per
    key mask, then per leader a binary search per mask and the members of its runs; claimed rows drop out of
    later comparisons.
    """
    h = np.asarray(phashes, np.uint64)
    if h.ndim != 2:
        raise ValueError(f"phashes must be (N, keyframes) uint64, got shape {h.shape}")
    n = len(h)
    if n == 0:
        return np.empty(0, np.int64)
    order = dedup.priority_order(n, priority)
    rows, first_pos, inverse = np.unique(h[order], axis=0, return_index=True, return_inverse=True)
    by_rank = np.argsort(first_pos, kind="stable")  # distinct rows in visiting order
    values, best_item = rows[by_rank], order[first_pos[by_rank]]
    rank_of_row = np.empty(len(rows), np.int64)
    rank_of_row[by_rank] = np.arange(len(rows))
    item_rank = np.empty(n, np.int64)
    item_rank[order] = rank_of_row[inverse.ravel()]
    leader = _leaders(values, radius)
    return best_item[leader[item_rank]]


def _leaders(values: np.ndarray, radius: int) -> np.ndarray:
    u = len(values)
    leader = np.full(u, -1, np.int64)
    tables = []
    for mask in dedup.key_masks(u, radius) if u > 1 else []:
        keys = values[:, 0] & mask
        idx = np.argsort(keys, kind="stable")
        tables.append((mask, keys[idx], idx))
    for r in range(u):
        if leader[r] >= 0:
            continue
        leader[r] = r
        found = []
        for mask, sorted_keys, idx in tables:
            key = values[r, 0] & mask
            lo, hi = np.searchsorted(sorted_keys, key, "left"), np.searchsorted(sorted_keys, key, "right")
            if hi - lo > 1:
                found.append(idx[lo:hi])
        if not found:
            continue
        cand = np.unique(np.concatenate(found))
        cand = cand[leader[cand] < 0]
        near = np.bitwise_count(values[cand] ^ values[r]).max(axis=1) <= radius
        leader[cand[near]] = r
    return leader


def near_duplicate_groups_bruteforce(phashes: np.ndarray, radius: int,
                                     priority: np.ndarray | None = None) -> np.ndarray:
    """The same rule, clip by clip over all clips (O(N * groups)): for tests."""
    h = np.asarray(phashes, np.uint64)
    rep = np.full(len(h), -1, np.int64)
    for i in dedup.priority_order(len(h), priority):
        if rep[i] < 0:
            rep[(rep < 0) & (np.bitwise_count(h ^ h[i]).max(axis=1) <= radius)] = i
    return rep
