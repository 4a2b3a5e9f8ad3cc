"""Decode one downloaded video into what every later stage sees: an upright (T, S, S, 3) RGB clip at a fixed rate.

The video flavour of lib/images/decode + lib/images/units.process_image. One pass over the packets: every decoded frame gives a
32x32 grey thumbnail (for the cut detector in lib/video/checks); only frames on screen at a sample time are
converted, scaled and cropped, straight from YUV by swscale (no full-resolution RGB frame), so a long or 4K
source never sits in memory whole. Decoding stops once the window and the CUT_CONTEXT frames after it are in
hand, unless a cut inside it sends `scene_cuts: split` on, up to `max_seconds`. Refusals raise
lib/images/decode.Rejected; they are rows, not crashes.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from ..images.decode import Rejected, gray_thumbnail, phash64
from .checks import (
    CUT_CONTEXT,
    check_container_bytes,
    clip_motion,
    describe_non_video,
    find_cuts,
    frame_difference,
    longest_window,
)

END_TOLERANCE = 1e-3  # seconds: a sample time this near a source's end still sees its last frame


@dataclass(frozen=True)
class VideoParams:
    image_size: int = 256  # Paris 2.0 trains and evaluates at 256x256
    fps: float = 8.0  # sample rate of the clip: low enough that 17 frames still span 2 s of motion
    num_frames: int = 17  # 4k+1: the causal VAE keeps frame 0 and packs the rest in fours (17 -> 5 latent frames)
    start_seconds: float | None = None  # where the window starts; None: at the first frame
    min_seconds: float = 2.0  # shorter sources are refused before any pixel is decoded
    min_side: int = 64  # the displayed shorter side, as min_side is for images
    max_pixels: int = 7680 * 4320  # 8K: a larger declared frame is refused before decoding (a bomb, not a video)
    max_seconds: float = 30.0  # how far `split` looks for a cut-free window: bounds time and memory per clip
    static_threshold: float = 0.2  # mean |frame difference|, grey levels on 32x32: stills measure <= 0.04 even
    # re-encoded at CRF 40; the quietest 2 s of vtest.avi (surveillance, walkers) 0.25
    scene_cuts: str = "split"  # split: move the window to the longest cut-free stretch; reject: refuse the clip
    cut_threshold: float = 20.0  # video_checks.cut_scores: motion <= 3.6, a light switched on 11.8, cuts >= 30.9
    phash_max_distance: int = 8  # per keyframe, for video_checks.near_duplicate_groups
    crf: int = 18  # H.264 quality of the stored clip (encode_clip): 38-43 dB at 256x256
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
    by presentation time (the frame on screen at each sample time, so a variable frame rate plays at the right
    speed), centre-cropped after scaling the displayed shorter side to image_size.
    facts: duration, fps (source average), width/height (displayed: rotation and pixel aspect applied),
    rotation (degrees counter-clockwise), codec, pix_fmt, container, frames_decoded, window_start and window_end
    (seconds from the first frame), cuts (seconds), motion, phashes ((3,) uint64: first, middle, last frame).
    """
    if not data:
        raise Rejected("empty_file", "0 bytes")
    check_container_bytes(data)
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError) as exc:
        raise Rejected("undecodable", describe_non_video(data, exc)) from None
    with container:
        if not container.streams.video:
            raise Rejected("undecodable", f"{container.format.name}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = "AUTO", params.threads
        facts = _stream_facts(container, stream)
        _check_declared(facts, stream.frames, params)
        sampler = _Sampler(params, float(stream.sample_aspect_ratio or 1) or 1.0, facts["fps"] or 25.0)
        try:
            for frame in container.decode(stream):
                if sampler.add(frame):
                    break
        except av.error.FFmpegError as exc:
            if not sampler.decoded:
                raise Rejected("undecodable", f"{type(exc).__name__}: {exc}") from None
            if len(sampler.grid) < params.num_frames:
                raise Rejected("truncated", f"decoding failed after {sampler.decoded} frames: {exc}") from None
        sampler.finish()
    return _judge(sampler, facts, params)


def process_video(data: bytes, params: VideoParams) -> tuple[dict, bytes]:
    """(facts, clip as encode_clip mp4 bytes) for one downloaded file, or raise Rejected: the per-clip work of
    filtered_images for video, run in worker processes as checks.process_image is for images. Facts are flat
    and DataFrame-ready: phashes as three 16-digit hex strings (64 bits survive a DataFrame), cuts as text."""
    facts, clip = probe_and_decode(data, params)
    stored = encode_clip(clip, params.fps, params.crf, threads=params.threads)
    first, middle, last = (f"{int(h):016x}" for h in facts.pop("phashes"))
    facts.update(sha256=hashlib.sha256(data).hexdigest(), cuts=",".join(f"{c:g}" for c in facts["cuts"]),
                 phash_first=first, phash_middle=middle, phash_last=last)
    return facts, stored


def _check_declared(facts: dict, frames: int, params: VideoParams) -> None:
    """Refusals the header alone decides."""
    w, h = facts["width"], facts["height"]
    if w * h > params.max_pixels:
        raise Rejected("too_large", f"declares {w}x{h} = {w * h:,} pixels > {params.max_pixels:,}")
    if w and min(w, h) < params.min_side:  # a quarter turn does not change the shorter side
        raise Rejected("too_small", f"{w}x{h}, shorter side < {params.min_side}")
    if frames == 1:
        raise Rejected("one_frame", f"{facts['container']} declares 1 frame")
    if facts["duration"] and facts["duration"] < params.min_seconds and frames > 1:
        raise Rejected("too_short", f"{facts['duration']:.2f} s < min_seconds {params.min_seconds}")


def _judge(sampler: _Sampler, facts: dict, params: VideoParams) -> tuple[dict, np.ndarray]:
    """Refusals that need the decoded frames, then the facts."""
    if sampler.decoded == 0:
        raise Rejected("undecodable", "no frame could be decoded")
    if sampler.decoded == 1:
        raise Rejected("one_frame", "the stream holds a single frame")
    width, height = sampler.display_size
    if min(width, height) < params.min_side:
        raise Rejected("too_small", f"{width}x{height}, shorter side < {params.min_side}")
    end, declared = sampler.times[-1], facts["duration"]
    if len(sampler.grid) < params.num_frames and declared - end > max(1.0, 0.1 * declared):
        raise Rejected("truncated", f"declares {declared:.2f} s, frames end at {end:.2f} s")
    duration = declared or end
    if duration < params.min_seconds:
        raise Rejected("too_short", f"{duration:.2f} s < min_seconds {params.min_seconds}")
    cuts = sampler.cuts()
    window = sampler.window(cuts)
    if window is None and len(sampler.grid) < params.num_frames:
        raise Rejected("too_short", f"{max(0.0, end - sampler.start):.2f} s from {sampler.start:.2f} s gives "
                                    f"{len(sampler.grid)} frames at {params.fps} fps; {params.num_frames} needed")
    if window is None:
        at = ", ".join(f"{sampler.times[i]:.2f}" for i in cuts)
        how = "scene_cuts: reject" if params.scene_cuts == "reject" else f"no cut-free {params.window_seconds:.2f} s"
        raise Rejected("scene_cut", f"hard cut at {at} s (score >= {params.cut_threshold}); {how}")
    clip = np.stack([sampler.crops[j] for j in window])
    motion = clip_motion(clip)
    if motion < params.static_threshold:
        raise Rejected("static", f"mean frame difference {motion:.3f} < {params.static_threshold}")
    keyframes = (0, len(clip) // 2, len(clip) - 1)
    facts.update(
        duration=round(duration, 4), width=width, height=height, rotation=sampler.rotation,
        frames_decoded=sampler.decoded, window_start=round(sampler.start + window[0] / params.fps, 4),
        window_end=round(sampler.start + window[-1] / params.fps, 4),
        cuts=[round(sampler.times[i], 4) for i in cuts], motion=round(motion, 3),
        phashes=np.array([phash64(gray_thumbnail(clip[k][..., ::-1])) for k in keyframes], np.uint64))
    return facts, clip


class _Sampler:
    """Takes decoded frames in order; keeps each one's difference to the last, and crops at the sample times
    start + j / fps (each the frame on screen then: the latest whose time has come)."""

    def __init__(self, params: VideoParams, pixel_aspect: float, rate: float):
        self.params, self.pixel_aspect, self.rate = params, pixel_aspect, rate
        self.start = params.start_seconds or 0.0
        self.limit = self.start + params.max_seconds
        self.decoded = 0
        self.times: list[float] = []  # seconds from the first frame, per decoded frame
        self.diffs: list[float] = [0.0]  # video_checks.frame_difference to the frame before, per decoded frame
        self.grid: list[int] = []  # per sample time: the decoded frame on screen then
        self.crops: dict[int, np.ndarray] = {}  # per sample
        self.rotation, self.display_size = 0, (0, 0)
        self._first = None
        self._pending = None  # the latest frame: on screen until the next one's time
        self._thumb = None
        self.thumbs: list[np.ndarray] = []  # 32x32 grey per decoded frame (1 KB each): cuts are confirmed on them

    def add(self, frame: av.VideoFrame) -> bool:
        """Take one frame; True when no later frame can change the result."""
        t = frame.time if frame.time is not None else self.decoded / self.rate
        if self._first is None:
            self._first = t
            self.rotation = round(frame.rotation or 0) % 360
            w, h = round(frame.width * self.pixel_aspect), frame.height
            self.display_size = (h, w) if self.rotation in (90, 270) else (w, h)
        t -= self._first
        thumb = frame.reformat(width=32, height=32, format="gray", interpolation="AREA").to_ndarray()
        if self._thumb is not None:
            self.diffs.append(frame_difference(self._thumb, thumb))
        self._thumb = thumb
        self.thumbs.append(thumb)
        if self._pending is not None:
            self._sample_until(t)
        self._pending = frame
        self.times.append(t)
        self.decoded += 1
        return self._done(t)

    def cuts(self) -> list[int]:
        """Decoded frames that start a new shot (video_checks.find_cuts on the differences and thumbnails)."""
        return find_cuts(np.asarray(self.diffs), self.params.cut_threshold, self.thumbs)

    def _sample_until(self, t: float) -> None:
        """Give the pending frame every sample time before t: its time on screen."""
        crop = None
        while (g := self.start + len(self.grid) / self.params.fps) < t and g < self.limit - 1e-9:
            crop = crop if crop is not None else self._crop(self._pending)  # one conversion however many samples
            self.crops[len(self.grid)] = crop
            self.grid.append(self.decoded - 1)

    def _crop(self, frame: av.VideoFrame) -> np.ndarray:
        size = self.params.image_size
        w, h = self.display_size
        scale = size / min(w, h)
        dw, dh = max(size, round(w * scale)), max(size, round(h * scale))
        cw, ch = (dh, dw) if self.rotation in (90, 270) else (dw, dh)  # as coded, before the turn
        rgb = frame.reformat(width=cw, height=ch, format="rgb24", interpolation="BICUBIC",
                             src_color_range=frame.color_range or None).to_ndarray()
        rgb = np.rot90(rgb, k=self.rotation // 90)  # both turn counter-clockwise
        top, left = (rgb.shape[0] - size) // 2, (rgb.shape[1] - size) // 2
        return np.ascontiguousarray(rgb[top:top + size, left:left + size])

    def _done(self, t: float) -> bool:
        need = self.params.num_frames
        if len(self.grid) < need or t >= self.limit:
            return t >= self.limit + CUT_CONTEXT / self.params.fps
        last = self.grid[need - 1]
        if self.decoded - 1 < last + CUT_CONTEXT:
            return False
        inside = [c for c in self.cuts() if self.grid[0] < c <= last]
        return not inside or self.params.scene_cuts == "reject"

    def finish(self) -> None:
        """End of stream: the last frame stays on screen for one typical frame interval, its end included (within
        END_TOLERANCE): a 2.0 s source gives a sample at 2.0 s, so 17 frames at 8 fps fit it, whatever the rounding
        of its timestamps."""
        if self._pending is not None:
            gaps = np.diff(self.times)
            end = self.times[-1] + (float(np.median(gaps)) if len(gaps) else 1 / self.rate)
            self._sample_until(end + END_TOLERANCE)
            self._pending = None

    def window(self, cuts: list[int]) -> list[int] | None:
        """Sample indices of the clip: the first num_frames, or with `split` the longest cut-free stretch."""
        need = self.params.num_frames
        if len(self.grid) < need:
            return None
        if not any(self.grid[0] < c <= self.grid[need - 1] for c in cuts):
            return list(range(need))
        return longest_window(self.grid, cuts, need) if self.params.scene_cuts == "split" else None


def _stream_facts(container, stream) -> dict:
    cc = stream.codec_context
    duration = 0.0
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000
    rate = stream.average_rate or stream.guessed_rate
    return {"duration": duration, "fps": round(float(rate), 3) if rate else 0.0, "width": cc.width or 0,
            "height": cc.height or 0, "codec": cc.name, "pix_fmt": cc.pix_fmt or "", "container": container.format.name}


def encode_clip(clip: np.ndarray, fps: float, crf: int = 18, pix_fmt: str = "yuv444p", preset: str = "fast",
                threads: int = 1) -> bytes:
    """(T, S, S, 3) uint8 RGB as an H.264 mp4, BT.709 limited range said in the stream: what filtered_images
    stores: for 33x256x256 clips of Dagster_world.mp4, vtest.avi and tree.avi, 70-206 KB at 38-43 dB against
    6.3 MB as a raw .npy. yuv444p keeps full-resolution colour (1.5-4 dB
    over yuv420p at ~5 % more bytes); browsers will not play High 4:4:4, so previews are their own encode.
    `fast` is within 0.2 dB and 3 % of `medium` at half the time."""
    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
        raise ValueError(f"clip must be (T, H, W, 3) uint8, got {clip.shape} {clip.dtype}")
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = clip.shape[2], clip.shape[1], pix_fmt
        stream.options = {"crf": str(crf), "preset": preset}
        stream.codec_context.thread_count = threads
        stream.codec_context.colorspace, stream.codec_context.color_range = 1, 1  # BT.709, limited
        for image in clip:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
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


def decode_frames(data: bytes, which) -> np.ndarray:
    """Some frames of an encode_clip mp4, uint8 (len, S, S, 3) RGB: `which` is a tuple of frame indices, or
    "keyframes" for the first, middle and last. Decoding stops after the last one wanted."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        if which == "keyframes":
            total = stream.frames or len(decode_clip(data))
            which = (0, total // 2, total - 1)
        wanted, frames = sorted(set(which)), {}
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                frames[i] = frame.to_ndarray(format="rgb24", src_color_range=frame.color_range or None)
            if i >= wanted[-1]:
                break
    missing = [i for i in which if i not in frames]
    if missing:
        raise ValueError(f"the clip has no frame {missing[0]} (it holds {len(frames)} of those asked)")
    return np.stack([frames[i] for i in which])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 arrays, dB."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)
