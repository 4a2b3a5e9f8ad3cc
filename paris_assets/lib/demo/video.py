"""The video demo source: a seeded set of short captioned clips, with what real web video throws at a pipeline.

`make_video_demo` draws `n` clean clips (2-3 s, 128-320 px, 12-30 fps, H.264 in faststart mp4) in eight motion
themes that also look different on their first frame (the frame the Paris 2.0 router's DINOv2 feature reads),
then plants bad inputs, each from a fixed recipe, with the fate filtering owes it in `expected`: truncated and
zero-byte files, an HTML page named .mp4 (lib/ingest/http_server sends it as video/mp4), a still clip, a hard scene
cut, a 1-frame clip, a too-short and a too-small clip, odd codecs and pixel formats, a portrait clip stored
landscape with a rotation, variable frame rate, near-duplicate re-encodes and an exact copy.

The fates assume filter settings between the planted and the clean values: `min_seconds` in (0.5, 2.0],
a minimum side in (32, 128] px, a static threshold on the mean decoded frame difference between the still's
(about 0.1 uint8 levels: x264's noise on identical frames) and the clean clips' (1 and up), and scene cuts
rejected (with splitting, `cut_at` says where the two halves meet). Each row has one fate; where two apply
(the 1-frame clip is also still) it is the first of: undecodable/truncated/empty_file, one_frame, too_short, too_small,
static, scene_cut, duplicate. The flicker theme is a trap for cut detection on frame differences alone: its
strobe jumps as far as a cut does, but its picture (pHash) stays the same, so it is kept.

Every file is encoded with one encoder thread: x264's default (threads=0) picks the thread count from the
machine's cores, and its bytes depend on the thread count, so the same seed would give other bytes elsewhere.

The themes are drawn in video_themes.py, the files written by video_writer.py, the bad inputs planted by
video_planted.py; this module draws the clean clips and puts the demo together.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..images.decode import image_phash
from .video_planted import (
    NEAR_COPY_RECIPES,
    TOO_SHORT_SECONDS,
    TOO_SMALL,
    Recipe,
    plant_awkward,
    plant_broken,
    plant_copies,
    plant_unfit,
)
from .video_themes import _ADJECTIVES, _CAPTIONS, _DRAW, THEMES, Frame, draw_clip
from .video_writer import CRF, KEPT, DemoWriter, VideoDemoRow, encode_clip, frame_motion

# the names this module offered before the themes, the writer and the planted files had their own modules
__all__ = ["CRF", "FPS", "KEPT", "NEAR_COPY_RECIPES", "SECONDS", "SIDES", "THEMES", "TOO_SHORT_SECONDS", "TOO_SMALL",
           "UNRELATED_MIN_DISTANCE", "VIDEO_DEMO_VERSION", "_ADJECTIVES", "_CAPTIONS", "_DRAW", "DemoWriter", "Frame",
           "Recipe", "VideoDemoRow", "draw_clip", "encode_clip", "frame_motion", "make_video_demo",
           "video_folder_rows", "video_url_table"]

VIDEO_DEMO_VERSION = 3  # bump when the generator changes, so cached demo files are redrawn
SIDES = (128, 320)  # clean clips' width and height range, px (even: yuv420p needs it)
SECONDS = (2.0, 3.0)  # clean clips' duration range: above any sensible min_seconds, and quick to make
FPS = (12, 15, 24, 25, 30)
UNRELATED_MIN_DISTANCE = 10  # clean clips' first and middle frames differ by more pHash bits than this


def _keyframe_hashes(frames: np.ndarray) -> np.ndarray:
    return np.array([image_phash(Image.fromarray(frames[i])) for i in (0, len(frames) // 2)], np.uint64)


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits differing between rows of `a` (M, 2) and `b` (2,), averaged over the two keyframes."""
    x = np.bitwise_xor(a, b).astype(">u8")
    return np.unpackbits(x.view(np.uint8).reshape(len(a), -1), axis=1).sum(axis=1) / a.shape[1]


def make_video_demo(out_dir: str | Path, n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Write the clips under `out_dir/files/` (each captioned clip with a `<stem>.txt` sidecar beside it) and
    return one row per source URL (see `VideoDemoRow`). The same (n, seed) gives the same bytes and rows."""
    rounds = max(1, n // 100)  # of near copies, every recipe once per round
    if n < rounds * len(NEAR_COPY_RECIPES) + 1:
        raise ValueError(f"video demo: n={n} clean clips cannot source the {len(NEAR_COPY_RECIPES) + 1} planted "
                         f"copies; use n >= {len(NEAR_COPY_RECIPES) + 1}")
    files = Path(out_dir) / "files"
    files.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = DemoWriter(files, rng)

    # The clips that near copies re-encode, chosen up front and drawn large enough that a rescaled copy is still
    # a clean size: a copy must be rejected as a duplicate, not as too small.
    sources = rng.permutation(n)[: rounds * len(NEAR_COPY_RECIPES) + 1].tolist()
    smallest = min([r.amount for r in NEAR_COPY_RECIPES if r.kind == "rescale"], default=1.0)

    def shape(large: bool) -> tuple[int, int, float, int]:
        low = math.ceil(SIDES[0] / smallest / 2) if large else SIDES[0] // 2
        w, h = (2 * int(s) for s in rng.integers(low, SIDES[1] // 2 + 1, 2))
        fps = float(rng.choice(FPS))
        return w, h, fps, round(rng.uniform(*SECONDS) * fps)

    drawn_from: dict[str, dict] = {}  # each clean clip's generator state, to redraw it for a re-encode
    hashes = np.zeros((0, 2), np.uint64)
    for i in range(n):
        theme = THEMES[i % len(THEMES)]
        w, h, fps, count = shape(large=i in sources)
        for _attempt in range(20):  # redraw a clip that happens to look like an earlier one
            state = rng.bit_generator.state
            frames = draw_clip(theme, w, h, np.arange(count) / fps, rng)
            code = _keyframe_hashes(frames)
            if not len(hashes) or _hamming(hashes, code).min() > UNRELATED_MIN_DISTANCE:
                break
        hashes = np.vstack([hashes, code])
        name = f"{theme}_{i:04d}.mp4"
        out.add(VideoDemoRow(name, out.caption(theme), theme, KEPT, fps=fps), frames)
        drawn_from[name] = state

    def redraw(src: VideoDemoRow) -> np.ndarray:
        again = np.random.default_rng()
        again.bit_generator.state = drawn_from[src.name]
        return draw_clip(src.theme, src.width, src.height, np.arange(src.frames) / src.fps, again)

    plant_copies(out, sources, rounds, redraw)
    plant_broken(out)
    plant_unfit(out)
    plant_awkward(out)

    table = pd.DataFrame([r.__dict__ for r in out.rows])
    table.insert(0, "demo_id", [f"vdemo-{i:05d}" for i in range(len(table))])
    return table


def video_url_table(table: pd.DataFrame, base_url: str) -> pd.DataFrame:
    """The demo as the URL list a video ingest reads (url, caption; demo_id to join the expected fates back)."""
    return pd.DataFrame({"url": base_url + table["url_path"], "caption": table["caption"],
                         "demo_id": table["demo_id"]})


def video_folder_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows the `folder` source kind sees when pointed at `files/`: every clip on disk (each `<stem>.mp4` with
    its `<stem>.txt` caption; the uncaptioned clip without one). The 404 row has no file, so it is not there."""
    return table[table["name"] != ""].reset_index(drop=True)
