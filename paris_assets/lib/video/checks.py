"""The judgements lib/video/decode makes on a file and a decoded clip, and the near-duplicate search across clips.

- Truncation: an mp4/mov's top-level boxes must fit in the file.
- Hard cuts: on the source frames (not the resampled clip, where ordinary motion between samples is several
  times larger and a cut stands out less), from the mean |difference| of consecutive 32x32 grey thumbnails,
  each less its mean. A cut is a difference that exceeds the largest of the CUT_CONTEXT differences
  each side of it by `threshold` grey levels: a jump over its neighbours, so steady fast motion
  (large differences everywhere) is not a cut and a cut between two busy shots still is. Measured here (score
  at the frame): ordinary motion at most 3.6 (tree.avi's held frames; pans, zooms, flicker, frame-doubled
  motion <= 2.1), a one-frame camera flash 0.2, a light switched on (clipping) 11.8; planted cuts between
  synthetic shots 37.6-43.8, between spliced real videos 41.2-68.5, Megamind.avi's own cuts 30.9-43.6.
  Threshold 20. Dissolves and fades are not hard cuts and are not found.
- Stills: mean |difference| of consecutive frames of the resampled clip, on 32x32 grey thumbnails.
- Near duplicates: two clips are duplicates when every keyframe pHash (first, middle, last) is within `radius`
  bits of the other clip's (Chebyshev distance over keyframes <= radius), grouped with lib/dedup/phash's rule.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

from ..dedup import phash as dedup
from ..images.decode import Rejected

CUT_CONTEXT = 3  # differences each side of a candidate that set its baseline
CUT_MAX_CORRELATION = 0.7  # thumbnails either side of a cut correlate below this (find_cuts)
ALL_PAIRS = 1024  # a dense run up to this size is compared all-pairs (<= 0.5M pairs), not searched again
MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"uuid", b"meta", b"moof", b"mfra", b"sidx",
             b"styp", b"pdin", b"prft", b"emsg")


def check_container_bytes(data: bytes) -> None:
    """Raise Rejected('truncated') for an ISO-BMFF file (mp4, mov) whose top-level boxes run past its end: FFmpeg
    would say 'moov atom not found' (moov last) or silently give fewer frames (moov first). Other containers are
    judged while decoding (an error part way, or frames ending well before the declared duration)."""
    if data[4:8] != b"ftyp":
        return
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1 and pos + 16 <= len(data):
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        elif size == 0:  # runs to the end of the file by definition
            return
        if size < 8 or kind not in MP4_BOXES and not kind.isalnum():
            return  # not a box list this understands: FFmpeg decides
        if pos + size > len(data):
            raise Rejected("truncated", f"mp4 box {kind.decode('latin-1')!r} at byte {pos:,} declares {size:,} "
                                        f"bytes, {len(data) - pos:,} present")
        pos += size


def describe_non_video(data: bytes, exc: Exception) -> str:
    """The detail of an `undecodable` row: what the bytes look like when they say so, else FFmpeg's error."""
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return "HTML/XML page, not a video"
    return f"{type(exc).__name__}: {exc}"


def frame_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |difference| of two grey thumbnails, each less its own mean: a light switched on or an exposure
    change moves every pixel alike and is not a cut; a new shot moves them differently."""
    a, b = a.astype(np.float32), b.astype(np.float32)
    return float(np.abs((a - a.mean()) - (b - b.mean())).mean())


def cut_scores(diffs: np.ndarray) -> np.ndarray:
    """Per frame i: diffs[i] less the largest of the CUT_CONTEXT differences each side of it (fewer at the ends).
    diffs[i] is frame_difference(frame i-1, frame i); diffs[0] = 0 (no frame before). The largest, not a median:
    content with every other frame repeated (15 fps shown at 30, telecine) alternates 0 and large differences."""
    d = np.asarray(diffs, np.float64)
    padded = np.r_[np.zeros(CUT_CONTEXT), d, np.zeros(CUT_CONTEXT)]
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * CUT_CONTEXT + 1)
    base = np.maximum(windows[:, :CUT_CONTEXT].max(axis=1), windows[:, CUT_CONTEXT + 1:].max(axis=1))
    scores = d - base
    scores[:1] = 0.0
    return scores


def find_cuts(diffs: np.ndarray, threshold: float, thumbs: list[np.ndarray] | None = None,
              max_correlation: float = CUT_MAX_CORRELATION) -> list[int]:
    """Frame indices i where a hard cut falls between frame i-1 and frame i: cut_scores >= threshold and, given
    the frames' grey thumbnails, a new picture: their correlation below `max_correlation`. A strobe or a lamp
    dimmed to a third jumps as far as a cut does (frame_difference removes an offset, not a gain), but it is the
    same picture: correlation ignores gain and offset (measured: strobes 0.967-0.990, the demo's planted cut 0.08,
    Megamind.avi's cuts 0.095-0.216, its cut from black at frame 1 none: a flat frame)."""
    candidates = np.flatnonzero(cut_scores(diffs) >= threshold).tolist()
    if thumbs is None:
        return candidates
    return [i for i in candidates if correlation(thumbs[i - 1], thumbs[i]) < max_correlation]


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two thumbnails' pixels; for a flat frame (black, one colour): 1.0 beside another flat
    one, 0.0 beside a picture (a cut from black is a cut)."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a @ a) * (b @ b))
    if norm > 0:
        return float(a @ b / norm)
    return 1.0 if not a.any() and not b.any() else 0.0


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
    """Representative of each clip's group: rep[i] == i for kept clips (lib/dedup/phash's rule on the keyframe distance).

    phashes: (N, K) uint64, K keyframes per clip. Distance = the largest per-keyframe Hamming distance. Clips are
    visited best first (dedup.priority_order); an unclaimed clip leads and claims every unclaimed clip within
    radius; so a clip belongs to the first leader near it, and leads when no earlier leader is near it.

    Identical rows collapse first (thousands of copies of a placeholder cost one row). Pairs within radius come
    from lib/dedup/phash's multi-index on the first keyframe (two rows within radius agree exactly on some block set
    of it): small runs of equal keys are expanded into pairs, checked on every keyframe; a dense run (rows that
    share blocks of the first keyframe, as clips opening on the same title card do) is compared all-pairs up to
    ALL_PAIRS rows, and searched the same way on the next keyframe when larger; only a larger dense run on the
    last keyframe too is compared all-pairs (N distinct clips sharing blocks of all three keyframes cost N^2/2). The leaders then follow
    from the pairs with dedup's own rule (dedup._first_leaders).
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
    pairs = _near_pairs(values, radius, np.arange(len(values)), 0)
    a, b = pairs[:, 0], pairs[:, 1]
    leads = dedup._first_leaders(len(values), a, b)
    leader = np.arange(len(values))
    by_leader = leads[a] & ~leads[b]
    first = np.full(len(values), len(values), np.int64)
    np.minimum.at(first, b[by_leader], a[by_leader])  # the earliest leader near each follower
    leader[~leads] = first[~leads]
    return best_item[leader[item_rank]]


def _near_pairs(values: np.ndarray, radius: int, rows: np.ndarray, key: int) -> np.ndarray:
    """(M, 2) pairs (lower, higher) of `rows` within radius on every keyframe, via runs of keyframe `key`."""
    found = [np.empty((0, 2), np.int64)]
    if len(rows) > 1:
        sub = values[rows, key]
        for mask in dedup.key_masks(len(rows), radius):
            keys = sub & mask
            order = np.argsort(keys)
            starts, lengths = dedup._runs(keys[order])
            dense = lengths > dedup.DENSE_RUN
            found.append(rows[dedup._pairs_in_runs(sub, order, starts, lengths, radius, ~dense)])
            for st, ln in zip(starts[dense].tolist(), lengths[dense].tolist()):
                members = rows[np.sort(order[st:st + ln])]
                recurse = ln > ALL_PAIRS and key + 1 < values.shape[1]
                found.append(_near_pairs(values, radius, members, key + 1) if recurse else _all_pairs(members))
    pairs = np.sort(np.concatenate(found), axis=1)
    codes = np.unique(pairs[:, 0] * len(values) + pairs[:, 1])  # one row per pair, however many runs found it
    pairs = np.stack([codes // len(values), codes % len(values)], axis=1)
    return pairs[np.bitwise_count(values[pairs[:, 0]] ^ values[pairs[:, 1]]).max(axis=1) <= radius]


def _all_pairs(members: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(len(members), 1)
    return np.stack([members[i], members[j]], axis=1)


def near_duplicate_groups_bruteforce(phashes: np.ndarray, radius: int,
                                     priority: np.ndarray | None = None) -> np.ndarray:
    """The same rule, clip by clip over all clips (O(N * groups)): for tests."""
    h = np.asarray(phashes, np.uint64)
    rep = np.full(len(h), -1, np.int64)
    for i in dedup.priority_order(len(h), priority):
        if rep[i] < 0:
            rep[(rep < 0) & (np.bitwise_count(h ^ h[i]).max(axis=1) <= radius)] = i
    return rep
