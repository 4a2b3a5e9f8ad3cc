"""The video demo's planted files: near copies and an exact copy, broken files, clips nobody should train on and
awkward encodings, each from a fixed recipe with the fate filtering owes it (lib/demo/video.py lists them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from .video_themes import draw_clip
from .video_writer import CRF, KEPT, DemoWriter, VideoDemoRow

TOO_SHORT_SECONDS = 0.5
TOO_SMALL = (48, 32)  # width, height


@dataclass(frozen=True)
class Recipe:
    """A fixed way to re-encode a clip as a re-poster would: "crf" (quality), "rescale" (size), "fps" (keep every
    `amount`-th frame)."""

    kind: str
    amount: float

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.amount:g}"


NEAR_COPY_RECIPES = (Recipe("crf", 32), Recipe("crf", 40), Recipe("rescale", 0.75), Recipe("rescale", 0.6),
                     Recipe("fps", 2))


def plant_copies(out: DemoWriter, sources: list[int], rounds: int,
                 redraw: Callable[[VideoDemoRow], np.ndarray]) -> None:
    """Near-duplicate re-encodes of the clean clips at `sources` by fixed recipes (every recipe in every round),
    and one exact copy; `redraw` gives a clean clip's frames again."""
    add = out.add
    copied = iter(out.rows[i] for i in sources)
    for j in range(rounds):
        for recipe in NEAR_COPY_RECIPES:
            src = next(copied)
            frames, fps, crf = redraw(src), src.fps, CRF
            if recipe.kind == "crf":
                crf = int(recipe.amount)
            elif recipe.kind == "rescale":
                size = (2 * round(src.width * recipe.amount / 2), 2 * round(src.height * recipe.amount / 2))
                frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
            elif recipe.kind == "fps":
                frames, fps = frames[:: int(recipe.amount)], fps / recipe.amount
            add(VideoDemoRow(f"near_{recipe.name}_{j:02d}.mp4", src.caption, src.theme, "duplicate_near", fps=fps,
                             duplicate_of=src.name, recipe=recipe.name), frames, crf=crf)
    src = next(copied)
    add(VideoDemoRow("copy_00.mp4", src.caption, src.theme, "duplicate_exact", fps=src.fps, width=src.width,
                     height=src.height, frames=src.frames, seconds=src.seconds, codec=src.codec, pix_fmt=src.pix_fmt,
                     motion=src.motion, duplicate_of=src.name, recipe="same_bytes"),
        data=(out.files / src.name).read_bytes())


def plant_broken(out: DemoWriter) -> None:
    """Files no decoder can read, and a URL with nothing behind it."""
    add, caption, fresh = out.add, out.caption, out.fresh
    # Broken files: cut in the middle (moov up front: the header promises frames that are missing; moov at the
    # end: nothing to index), zero bytes, and a hotlink-refusal page under a .mp4 name.
    add(VideoDemoRow("truncated_0.mp4", caption("pan"), "pan", "truncated", fps=24.0, recipe="faststart_half"),
        fresh("pan"))
    data = (out.files / "truncated_0.mp4").read_bytes()
    (out.files / "truncated_0.mp4").write_bytes(data[: len(data) // 2])
    add(VideoDemoRow("truncated_1.mp4", caption("waves"), "waves", "truncated", fps=24.0, recipe="moov_last_0.6"),
        fresh("waves"), faststart=False)
    data = (out.files / "truncated_1.mp4").read_bytes()
    (out.files / "truncated_1.mp4").write_bytes(data[: int(len(data) * 0.6)])
    add(VideoDemoRow("empty_0.mp4", caption("shapes"), "shapes", "empty_file", recipe="zero_bytes"), data=b"")
    page = (b"<!doctype html><html><head><title>Access denied</title></head>"
            b"<body>Sorry, hotlinking videos is not allowed.</body></html>")
    add(VideoDemoRow("page_0.mp4", caption("zoom"), "zoom", "undecodable", recipe="html_as_video_mp4"), data=page)
    # Nothing at this URL: the server answers 404.
    out.rows.append(VideoDemoRow("", caption("traffic"), "traffic", "download_failed", url_path="/files/missing_0.mp4",
                                 recipe="http_404"))


def plant_unfit(out: DemoWriter) -> None:
    """Clips nobody should train on: a still, a scene cut, one frame, too short, too small."""
    add, caption, fresh = out.add, out.caption, out.fresh
    still = fresh("pan", seconds=0.05)  # one frame of a textured scene ...
    add(VideoDemoRow("static_0.mp4", caption("pan"), "pan", "static", fps=24.0, recipe="one_picture_2s"),
        np.repeat(still, 48, axis=0))  # ... held for 2 s
    a, b = fresh("spin", seconds=1.5), fresh("traffic", seconds=1.5)
    add(VideoDemoRow("cut_0.mp4", caption("spin"), "spin", "scene_cut", fps=24.0, cut_at=1.5,
                     recipe="spin_then_traffic"), np.concatenate([a, b]))
    add(VideoDemoRow("one_frame_0.mp4", caption("zoom"), "zoom", "one_frame", fps=24.0, recipe="1_frame"),
        fresh("zoom", seconds=0.04))
    add(VideoDemoRow("short_0.mp4", caption("shapes"), "shapes", "too_short", fps=24.0,
                     recipe=f"{TOO_SHORT_SECONDS:g}s"),
        fresh("shapes", seconds=TOO_SHORT_SECONDS))
    add(VideoDemoRow("tiny_0.mp4", caption("particles"), "particles", "too_small", fps=24.0,
                     recipe=f"{TOO_SMALL[0]}x{TOO_SMALL[1]}"), fresh("particles", *TOO_SMALL))


def plant_awkward(out: DemoWriter) -> None:
    """Valid clips in awkward encodings: each must come out upright, at the right rate, in the right colours; and
    one without a caption."""
    add, caption, fresh = out.add, out.caption, out.fresh
    add(VideoDemoRow("odd_mpeg4.avi", caption("spin"), "spin", KEPT, fps=25.0, codec="mpeg4", recipe="mpeg4_avi"),
        fresh("spin", fps=25.0), container="avi")
    add(VideoDemoRow("odd_yuv444p.mp4", caption("flicker"), "flicker", KEPT, fps=24.0, pix_fmt="yuv444p",
                     recipe="h264_yuv444p"), fresh("flicker"))
    add(VideoDemoRow("odd_10bit.mp4", caption("waves"), "waves", KEPT, fps=24.0, pix_fmt="yuv420p10le",
                     recipe="h264_yuv420p10le"), fresh("waves"))
    portrait = fresh("particles", w=144, h=256)
    portrait[:, : 256 // 8] = 250  # a bright band along the upright top, so a test can tell which way is up
    add(VideoDemoRow("rotated_0.mp4", caption("particles"), "particles", KEPT, fps=24.0, rotation=-90,
                     recipe="portrait_stored_landscape_rotate_-90"), np.rot90(portrait, k=1, axes=(1, 2)))
    count = 60
    gaps = np.resize([33, 33, 66, 100, 33, 50], count - 1)  # ms between frames: a phone's uneven capture
    pts = np.concatenate([[0], np.cumsum(gaps)]).astype(int).tolist()
    seconds = (pts[-1] + 33) / 1000
    add(VideoDemoRow("vfr_0.mp4", caption("traffic"), "traffic", KEPT, fps=round(count / seconds, 3), seconds=seconds,
                     recipe="pts_gaps_33_33_66_100_33_50ms"),
        draw_clip("traffic", 192, 144, np.array(pts) / 1000, out.rng), pts_ms=pts)
    add(VideoDemoRow("nocaption_0.mp4", None, "waves", "missing_caption", fps=24.0, recipe="no_caption"),
        fresh("waves"))
