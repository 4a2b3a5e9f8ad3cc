"""The video demo's writer: clips encoded deterministically, and DemoWriter, which files each one with its row."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from .video_themes import caption_for, draw_clip

KEPT = "kept"
CRF = 23  # x264's default quality


@dataclass
class VideoDemoRow:
    name: str  # file name under files/ ('' when the URL points nowhere)
    caption: str | None
    theme: str
    expected: str  # "kept" or the reason filtering must give
    url_path: str = ""  # path on the demo server
    width: int = 0  # as stored (before rotation)
    height: int = 0
    fps: float = 0.0  # nominal (average for the variable-rate clip)
    frames: int = 0  # frames encoded (the container declares them; a truncated file decodes fewer)
    seconds: float = 0.0
    codec: str = ""
    pix_fmt: str = ""
    rotation: int = 0  # display-matrix angle, counter-clockwise degrees, as PyAV's VideoFrame.rotation reports
    motion: float = 0.0  # mean |frame difference| of consecutive drawn frames, uint8 levels (0 for a still)
    cut_at: float = math.nan  # seconds where a hard scene cut lands
    duplicate_of: str = ""  # the clip this one re-encodes or copies
    recipe: str = ""  # the fixed recipe that made a planted file


def encode_clip(path: Path, frames: np.ndarray, fps: float, *, codec: str = "libx264", pix_fmt: str = "yuv420p",
                crf: int = CRF, container: str | None = None, rotation: int = 0, pts_ms: list[int] | None = None,
                faststart: bool = True) -> None:
    """Write frames to `path` (deterministically: one encoder thread). `pts_ms` gives each frame's time in ms
    (variable frame rate); `rotation` the display matrix angle (counter-clockwise degrees)."""
    options = {"movflags": "+faststart"} if faststart and path.suffix == ".mp4" else {}
    with av.open(str(path), "w", format=container, options=options) as out:
        rate = Fraction(fps).limit_denominator(1001)
        # ultrafast, with the B-frames it drops put back: web H.264 has them (decode order differs from display
        # order, which a decoder loop must handle), and they cost little; superfast took half as long again
        stream_options = ({"crf": str(crf), "preset": "ultrafast", "x264-params": "bframes=3"}
                          if codec == "libx264" else {})
        stream = out.add_stream(codec, rate=rate, options=stream_options)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.thread_count = 1
        stream.codec_context.gop_size = max(1, round(2 * fps))
        if codec == "mpeg4":
            stream.codec_context.qscale = 4  # mpeg4's default is a low constant bitrate: blocky at these sizes
            stream.codec_context.flags |= av.codec.context.Flags.qscale
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for i, array in enumerate(frames):
            if pix_fmt == "yuv420p":  # OpenCV's BT.601 limited-range conversion, as swscale's within a level, faster
                frame = av.VideoFrame.from_ndarray(cv2.cvtColor(array, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
            else:
                frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def frame_motion(frames: np.ndarray) -> float:
    """Mean |difference| of consecutive frames in uint8 levels, on every 4th pixel (0 for one frame)."""
    if len(frames) < 2:
        return 0.0
    small = frames[:, ::4, ::4].astype(np.int16)
    return float(np.round(np.abs(np.diff(small, axis=0)).mean(), 3))


class DemoWriter:
    """Writes the demo's files under `files` and keeps their rows; captions and fresh clips come from `rng`, so the
    order of the calls is the demo's bytes."""

    def __init__(self, files: Path, rng: np.random.Generator) -> None:
        self.files, self.rng = files, rng
        self.rows: list[VideoDemoRow] = []

    def caption(self, theme: str) -> str:
        return caption_for(theme, self.rng)

    def add(self, row: VideoDemoRow, frames: np.ndarray | None = None, data: bytes | None = None, **encode) -> None:
        """Write `data` as is, or encode `frames` (filling the row's stored facts); then its caption sidecar."""
        path = self.files / row.name
        if data is not None:
            path.write_bytes(data)
        else:
            encode_clip(path, frames, row.fps, codec=row.codec or "libx264", pix_fmt=row.pix_fmt or "yuv420p",
                        rotation=row.rotation, **encode)
            row.codec, row.pix_fmt = row.codec or "h264", row.pix_fmt or "yuv420p"
            row.height, row.width = frames.shape[1:3]
            row.frames = row.frames or len(frames)
            row.seconds = row.seconds or round(len(frames) / row.fps, 3)
            row.motion = frame_motion(frames)
        if row.caption is not None:
            path.with_suffix(".txt").write_text(row.caption)
        row.url_path = f"/files/{row.name}"
        self.rows.append(row)

    def fresh(self, theme: str, w: int = 192, h: int = 144, fps: float = 24.0, seconds: float = 2.0) -> np.ndarray:
        """A new clip of `theme`, drawn from the writer's generator."""
        return draw_clip(theme, w, h, np.arange(max(1, round(seconds * fps))) / fps, self.rng)
