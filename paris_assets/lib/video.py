"""Decode one downloaded video into what every later stage sees: an upright (T, S, S, 3) RGB clip at a fixed rate.

The video flavour of lib/images + lib/checks.process_image. One pass over the packets: every decoded frame gives a
32x32 grey thumbnail (for the cut detector, lib/video_checks); only the frames on screen at the sample times
are converted, scaled and cropped, straight from YUV by swscale, so a long or 4K source never sits in memory
whole. Decoding stops as soon as the window (and the few frames the cut detector needs after it) is in hand,
unless a cut in it sends `scene_cuts: split` looking further, up to `max_seconds`. Refusals raise
lib/images.Rejected; they are rows, not crashes.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass

import av
import numpy as np

from .images import Rejected, gray_thumbnail, phash64
from .video_checks import CUT_CONTEXT, clip_motion, find_cuts, longest_window

MP4_BRANDS = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"uuid", b"meta", b"moof", b"mfra", b"sidx",
              b"styp", b"pdin", b"prft", b"emsg")


@dataclass(frozen=True)
class VideoParams:
    image_size: int = 256  # Paris 2.0 trains and evaluates at 256x256
    fps: float = 8.0  # sample rate of the clip; low enough that 17 frames still show motion
    num_frames: int = 17  # 4k+1: the causal VAE keeps frame 0 and packs the rest in fours (17 -> 5 latent frames)
    start_seconds: float | None = None  # where the window starts; None: at the first frame
    min_seconds: float = 2.0  # shorter sources are refused before any pixel is decoded
    min_side: int = 64  # the displayed shorter side, as min_side is for images
    max_seconds: float = 30.0  # how far `split` looks for a cut-free window: bounds time and memory per clip
    static_threshold: float = 0.2  # mean |frame difference|, grey levels on 32x32: stills measure <= 0.04 even
    # re-encoded at CRF 40; the quietest 2 s of vtest.avi (surveillance, walkers) 0.25
    scene_cuts: str = "split"  # split: move the window to the longest cut-free stretch; reject: refuse the clip
    cut_threshold: float = 12.0  # a cut's frame difference over its neighbours' (see video_checks.find_cuts)
    phash_max_distance: int = 8  # per keyframe, for near_duplicate_groups
    crf: int = 18  # H.264 quality of the stored clip (encode_clip): ~45 dB, see the README measurement
    threads: int = 1  # decoder threads; the process pool is the parallelism

    def __post_init__(self):
        if self.num_frames < 1 or self.num_frames % 4 != 1:
            raise ValueError(f"num_frames must be 4k+1 (1, 5, 9, 17, 33, ...) for the causal VAE, got {self.num_frames}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.scene_cuts not in ("split", "reject"):
            raise ValueError(f"scene_cuts must be split or reject, got {self.scene_cuts!r}")
        if self.image_size < 8 or self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 (the VAE downsamples by 8), got {self.image_size}")
        if self.max_seconds < self.window_seconds:
            raise ValueError(f"max_seconds {self.max_seconds} is shorter than the window "
                             f"({self.num_frames} frames at {self.fps} fps = {self.window_seconds:.2f} s)")

    @property
    def window_seconds(self) -> float:
        """From the first sample time to the last."""
        return (self.num_frames - 1) / self.fps


def probe_and_decode(data: bytes, params: VideoParams) -> tuple[dict, np.ndarray]:
    """(facts, clip) for one downloaded file, or raise Rejected.

    clip: (num_frames, image_size, image_size, 3) uint8 RGB, upright (display matrix applied), sampled at `fps`
    by presentation time (the frame on screen at each sample time, so variable frame rates come out at the
    right speed), centre-cropped after scaling the shorter side to image_size.
    facts: duration, fps (source average), width/height as displayed, rotation, codec, pix_fmt, frames_decoded,
    window_start/window_end (seconds from the first frame), cuts (seconds), motion, phashes (3 uint64: first,
    middle and last frame of the window).
    """
    if not data:
        raise Rejected("empty_file", "0 bytes")
    _check_mp4_boxes(data)
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError) as exc:
        raise Rejected("undecodable", _describe_non_video(data, exc)) from None
    with container:
        if not container.streams.video:
            raise Rejected("undecodable", f"{container.format.name}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = "AUTO", params.threads
        facts = _stream_facts(container, stream)
        if facts["width"] and min(facts["width"], facts["height"]) < params.min_side:
            raise Rejected("too_small", f"{facts['width']}x{facts['height']}, shorter side < {params.min_side}")
        if stream.frames == 1:
            raise Rejected("one_frame", f"{container.format.name} declares 1 frame")
        declared = facts["duration"]
        if declared and declared < params.min_seconds and stream.frames > 1:
            raise Rejected("too_short", f"{declared:.2f} s < min_seconds {params.min_seconds}")
        sampler = _Sampler(params)
        try:
            for frame in container.decode(stream):
                if sampler.add(frame):
                    break
        except av.error.FFmpegError as exc:
            if not sampler.decoded:
                raise Rejected("undecodable", f"{type(exc).__name__}: {exc}") from None
            if not sampler.complete():
                raise Rejected("truncated", f"decoding failed after {sampler.decoded} frames: {exc}") from None
        sampler.finish()
    return _judge(sampler, facts, params)


def _judge(sampler: _Sampler, facts: dict, params: VideoParams) -> tuple[dict, np.ndarray]:
    if sampler.decoded == 0:
        raise Rejected("undecodable", "no frame could be decoded")
    if sampler.decoded == 1:
        raise Rejected("one_frame", "the stream holds a single frame")
    width, height = sampler.display_size
    if min(width, height) < params.min_side:
        raise Rejected("too_small", f"{width}x{height}, shorter side < {params.min_side}")
    end = sampler.end_time
    duration = facts["duration"] or end
    if duration < params.min_seconds:
        raise Rejected("too_short", f"{duration:.2f} s < min_seconds {params.min_seconds}")
    cuts = find_cuts(np.asarray(sampler.diffs), params.cut_threshold)
    start = sampler.grid_start
    window = sampler.window(cuts)
    if window is None:
        if len(sampler.grid) < params.num_frames:
            raise Rejected("too_short", f"{end - start:.2f} s from {start:.2f} s holds {len(sampler.grid)} frames "
                                        f"at {params.fps} fps; {params.num_frames} needed")
        at = [f"{sampler.times[i]:.2f}" for i in cuts]
        raise Rejected("scene_cut", f"hard cut at {', '.join(at)} s (threshold {params.cut_threshold}) "
                                    f"and no cut-free {params.window_seconds:.2f} s stretch"
                                    f"{' (scene_cuts: reject)' if params.scene_cuts == 'reject' else ''}")
    clip = np.stack([sampler.crops[j] for j in window])
    motion = clip_motion(clip)
    if motion < params.static_threshold:
        raise Rejected("static", f"mean frame difference {motion:.2f} < {params.static_threshold}")
    keyframes = (0, len(clip) // 2, len(clip) - 1)
    facts.update(
        width=width, height=height, rotation=sampler.rotation, frames_decoded=sampler.decoded,
        window_start=round(sampler.grid_times[window[0]], 4), window_end=round(sampler.grid_times[window[-1]], 4),
        cuts=[round(sampler.times[i], 4) for i in cuts], motion=round(motion, 3),
        phashes=np.array([phash64(gray_thumbnail(clip[k][..., ::-1])) for k in keyframes], np.uint64))
    facts["duration"] = round(duration, 4)
    return facts, clip


class _Sampler:
    """Takes decoded frames one at a time; keeps a grey thumbnail of each and a crop of those at sample times."""

    def __init__(self, params: VideoParams):
        self.params = params
        self.decoded = 0
        self.times: list[float] = []  # seconds from the first frame, per decoded frame
        self.diffs: list[float] = [0.0]  # mean |grey difference| to the previous frame, per decoded frame
        self.grid: list[int] = []  # per sample time: the decoded frame on screen then
        self.grid_times: list[float] = []
        self.crops: dict[int, np.ndarray] = {}  # per sample index
        self.rotation = 0
        self.display_size = (0, 0)
        self._first = None
        self._pending = None  # (frame, index): the latest frame, on screen until the next one's time
        self._thumb = None
        self._cut_seen = False
        self.grid_start = 0.0

    def add(self, frame: av.VideoFrame) -> bool:
        """Take one frame; True when no later frame can change the result."""
        t = frame.time if frame.time is not None else self.decoded / 25.0
        if self._first is None:
            self._first = t
            self.rotation = int(round(frame.rotation or 0)) % 360
            w, h = frame.width, frame.height
            self.display_size = (h, w) if self.rotation in (90, 270) else (w, h)
            self.grid_start = self.params.start_seconds or 0.0
        t -= self._first
        thumb = frame.reformat(width=32, height=32, format="gray", interpolation="AREA").to_ndarray().astype(np.int16)
        if self._thumb is not None:
            self.diffs.append(float(np.abs(thumb - self._thumb).mean()))
        self._thumb = thumb
        if self._pending is not None:
            self._sample_until(t)
        self._pending = (frame, self.decoded)
        self.times.append(t)
        self.decoded += 1
        return self._done(t)

    @property
    def end_time(self) -> float:
        return self.times[-1] if self.times else 0.0

    def _limit(self) -> float:
        return self.grid_start + self.params.max_seconds

    def _sample_until(self, t: float) -> None:
        """Give the pending frame every sample time before t (its time on screen)."""
        frame, index = self._pending
        crop = None
        fps = self.params.fps
        while True:
            g = self.grid_start + len(self.grid) / fps
            if g >= t or g >= self._limit() - 1e-9:
                break
            crop = crop if crop is not None else self._crop(frame)  # one conversion however many samples
            self.crops[len(self.grid)] = crop
            self.grid.append(index)
            self.grid_times.append(g)

    def _crop(self, frame: av.VideoFrame) -> np.ndarray:
        size = self.params.image_size
        w, h = self.display_size
        scale = size / min(w, h)
        dw, dh = max(size, round(w * scale)), max(size, round(h * scale))
        cw, ch = (dh, dw) if self.rotation in (90, 270) else (dw, dh)  # scaled, as coded (before turning)
        rgb = frame.reformat(width=cw, height=ch, format="rgb24", interpolation="BICUBIC",
                             src_color_range=frame.color_range or None).to_ndarray()
        rgb = np.rot90(rgb, k=self.rotation // 90)  # rotation is counter-clockwise, as np.rot90 turns
        top, left = (rgb.shape[0] - size) // 2, (rgb.shape[1] - size) // 2
        return np.ascontiguousarray(rgb[top:top + size, left:left + size])

    def _done(self, t: float) -> bool:
        """Stop once the window is sampled and CUT_CONTEXT frames past it are seen, unless a cut in it sends
        `split` on to max_seconds."""
        need = self.params.num_frames
        if len(self.grid) < need or t >= self._limit():
            return t >= self._limit() + CUT_CONTEXT / self.params.fps and len(self.grid) > 0
        window_end = self.grid[need - 1]
        if self.decoded - 1 < window_end + CUT_CONTEXT:
            return False
        cuts = find_cuts(np.asarray(self.diffs), self.params.cut_threshold)
        inside = [c for c in cuts if self.grid[0] < c <= window_end]
        return not inside or self.params.scene_cuts == "reject"

    def complete(self) -> bool:
        return len(self.grid) >= self.params.num_frames

    def finish(self) -> None:
        """End of stream: the last frame stays on screen for one frame interval."""
        if self._pending is None:
            return
        gaps = np.diff(self.times)
        step = float(np.median(gaps)) if len(gaps) else 1 / self.params.fps
        self._sample_until(self.times[-1] + step)
        self._pending = None

    def window(self, cuts: list[int]) -> list[int] | None:
        """Sample indices of the clip: the first num_frames, or with `split` the longest cut-free stretch."""
        need = self.params.num_frames
        if len(self.grid) < need:
            return None
        first = list(range(need))
        if not any(self.grid[0] < c <= self.grid[need - 1] for c in cuts):
            return first
        if self.params.scene_cuts == "reject":
            return None
        return longest_window(self.grid, cuts, need)


def _stream_facts(container, stream) -> dict:
    cc = stream.codec_context
    duration = 0.0
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000
    rate = stream.average_rate or stream.guessed_rate
    return {"duration": duration, "fps": round(float(rate), 3) if rate else 0.0, "width": cc.width,
            "height": cc.height, "codec": cc.name, "pix_fmt": cc.pix_fmt or "", "container": container.format.name}


def _check_mp4_boxes(data: bytes) -> None:
    """An ISO-BMFF file (mp4, mov) whose top-level boxes run past its end was cut short: refuse it as truncated
    before FFmpeg turns it into 'moov atom not found' (moov last) or silently fewer frames (moov first)."""
    if data[4:8] != b"ftyp":
        return
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1 and pos + 16 <= len(data):
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        elif size == 0:  # runs to the end of the file by definition
            return
        if size < 8 or kind not in MP4_BRANDS and not kind.isalnum():
            return  # not a box list we understand: leave the verdict to FFmpeg
        if pos + size > len(data):
            raise Rejected("truncated", f"mp4 box {kind.decode('latin-1')!r} at {pos} declares {size:,} bytes, "
                                        f"{len(data) - pos:,} present")
        pos += size


def _describe_non_video(data: bytes, exc: Exception) -> str:
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return "HTML/XML page, not a video"
    return f"{type(exc).__name__}: {exc}"


def encode_clip(clip: np.ndarray, fps: float, crf: int = 18, pix_fmt: str = "yuv444p") -> bytes:
    """(T, S, S, 3) uint8 RGB as an H.264 mp4 (libx264, `crf`, every frame kept, no B-frame reordering surprises
    for decode_clip). yuv444p keeps full-resolution colour (High 4:4:4; browsers will not play it: previews
    are a separate yuv420p encode)."""
    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
        raise ValueError(f"clip must be (T, H, W, 3) uint8, got {clip.shape} {clip.dtype}")
    buf = io.BytesIO()
    rate = _rate(fps)
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = clip.shape[2], clip.shape[1], pix_fmt
        stream.options = {"crf": str(crf), "preset": "medium"}
        stream.codec_context.color_range = 2 if pix_fmt.startswith("yuvj") else 1
        stream.codec_context.colorspace = 1  # BT.709, said explicitly so every reader converts the same way
        for image in clip:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.colorspace, frame.color_range = 1, 1
            for packet in stream.encode(frame.reformat(format=pix_fmt, dst_colorspace=1, dst_color_range=1)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def decode_clip(data: bytes) -> np.ndarray:
    """Every frame of an encode_clip mp4 as (T, S, S, 3) uint8 RGB: what the latents stage reads."""
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24", src_color_range=f.color_range or None)
                         for f in container.decode(video=0)])


def _rate(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001) if not float(fps).is_integer() else int(fps)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)
