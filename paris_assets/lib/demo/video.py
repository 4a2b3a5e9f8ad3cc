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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
from PIL import Image

from ..images.decode import image_phash

THEMES = ("shapes", "pan", "zoom", "flicker", "spin", "particles", "waves", "traffic")

_CAPTIONS = {
    "shapes": ["{a} coloured balls bouncing around", "bright shapes moving across a {a} background",
               "{a} circles and squares sliding past each other"],
    "pan": ["the camera pans across {a} green hills", "a {a} panorama of hills and trees",
            "slow pan over a {a} countryside"],
    "zoom": ["zooming into a {a} ring pattern", "a {a} mandala, the camera moving closer",
             "zoom in on {a} concentric circles"],
    "flicker": ["{a} lamps flickering in a dark room", "a strobe light flashing, {a}",
                "{a} lights blinking on and off at night"],
    "spin": ["a {a} pinwheel spinning", "a rotating {a} wheel with spokes", "{a} colourful fan blades turning"],
    "particles": ["{a} snow falling at night", "snowflakes drifting down, {a}", "{a} particles floating in the dark"],
    "waves": ["{a} ocean waves rolling in", "the sea with {a} waves under a blue sky", "{a} water rippling"],
    "traffic": ["cars driving along a {a} highway at night", "{a} traffic on a road after dark",
                "headlights moving down a {a} street"],
}
_ADJECTIVES = ["beautiful", "quiet", "vivid", "calm", "bright", "moody", "soft", "dramatic", "simple", "wide"]

KEPT = "kept"
VIDEO_DEMO_VERSION = 3  # bump when the generator changes, so cached demo files are redrawn
SIDES = (128, 320)  # clean clips' width and height range, px (even: yuv420p needs it)
SECONDS = (2.0, 3.0)  # clean clips' duration range: above any sensible min_seconds, and quick to make
FPS = (12, 15, 24, 25, 30)
CRF = 23  # x264's default quality
UNRELATED_MIN_DISTANCE = 10  # clean clips' first and middle frames differ by more pHash bits than this
TOO_SHORT_SECONDS = 0.5
TOO_SMALL = (48, 32)  # width, height


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


Frame = Callable[[float], np.ndarray]  # seconds -> (h, w, 3) float32 picture at half resolution


def _shapes(x: np.ndarray, y: np.ndarray, duration: float, rng: np.random.Generator) -> Frame:
    """Balls and squares bouncing off the edges of a pale background."""
    height, width = x.shape
    base = np.empty((height, width, 3), np.float32)
    base[:] = rng.uniform([170, 170, 150], [240, 240, 230])
    k = int(rng.integers(4, 8))
    colours, radii = rng.uniform(0, 220, (k, 3)), rng.uniform(0.08, 0.2, k) * min(width, height)
    starts, speeds = rng.uniform(0, 1, (k, 2)), rng.uniform(0.3, 0.8, (k, 2)) * rng.choice([-1, 1], (k, 2))
    square = rng.random(k) < 0.5

    def frame(t: float) -> np.ndarray:
        img = base.copy()
        for c, rad, s0, sp, sq in zip(colours, radii, starts, speeds, square):
            px, py = np.abs((s0 + sp * t) % 2 - 1) * np.array([width - 2 * rad, height - 2 * rad]) + rad
            box = slice(max(0, int(py - rad)), int(py + rad) + 1), slice(max(0, int(px - rad)), int(px + rad) + 1)
            if sq:
                img[box] = c
            else:
                img[box][(x[box] - px) ** 2 + (y[box] - py) ** 2 < rad * rad] = c
        return img
    return frame


def _pan(x: np.ndarray, y: np.ndarray, duration: float, rng: np.random.Generator) -> Frame:
    """A camera panning sideways over layered green hills with trees, drawn once as a wide panorama."""
    height, width = x.shape
    speed = rng.uniform(0.15, 0.3) * width  # px per second
    wide = width + int(speed * duration) + 2
    yy, xx = np.mgrid[0:height, 0:wide].astype(np.float32)
    pano = np.empty((height, wide, 3), np.float32)
    pano[:] = rng.uniform([120, 170, 220], [170, 210, 250]) - 40 * (yy / height)[..., None]
    for layer in range(3):
        crest = height * (0.4 + 0.17 * layer + 0.08 * np.sin(xx / width * rng.uniform(4, 9) + rng.uniform(0, 6)))
        pano[yy > crest] = np.array([70, 150, 60]) - 22 * layer + rng.uniform(-15, 15, 3)
    for _ in range(int(rng.integers(8, 20)) * wide // width):
        cx, foot, w, h = rng.uniform(0, wide), rng.uniform(0.55, 1.0) * height, rng.uniform(4, 10), rng.uniform(15, 45)
        tree = (yy < foot) & (yy > foot - h) & (np.abs(xx - cx) < w * (yy - (foot - h)) / h)
        pano[tree] = rng.uniform([10, 50, 10], [40, 100, 40])
    pano += rng.normal(0, 6, pano.shape[:2])[..., None]  # texture that moves with the scene
    leftwards = rng.uniform(0, 1) < 0.5

    def frame(t: float) -> np.ndarray:
        at = speed * (t if leftwards else duration - t)
        off, frac = int(at), np.float32(at % 1)  # sub-pixel steps: a slow pan must move on every frame
        return (1 - frac) * pano[:, off:off + width] + frac * pano[:, off + 1:off + 1 + width]
    return frame


def _zoom(x: np.ndarray, y: np.ndarray, duration: float, rng: np.random.Generator) -> Frame:
    """Zooming into a ring-and-petal mandala: the angle term is fixed, only the radius scales."""
    height, width = x.shape
    cx, cy = rng.uniform(0.35, 0.65) * width, rng.uniform(0.35, 0.65) * height
    freq, petals, rate = rng.uniform(0.15, 0.35), int(rng.integers(3, 9)), rng.uniform(0.25, 0.5)
    c1, c2 = rng.uniform([150, 40, 120], [250, 120, 220]), rng.uniform([230, 130, 20], [255, 200, 90])
    radius = np.hypot(x - cx, y - cy) * (freq * np.pi / 2)
    angle = 1.5 * np.cos(petals * np.arctan2(y - cy, x - cx)) + rng.uniform(0, 6)

    def frame(t: float) -> np.ndarray:
        w = 0.5 + 0.5 * np.cos(radius * math.exp(-rate * t) + angle)
        return (c1 + (c2 - c1) * w[..., None]).astype(np.float32)
    return frame


def _flicker(x: np.ndarray, y: np.ndarray, duration: float, rng: np.random.Generator) -> Frame:
    """Warm lamps in a dark room, strobing between full and a third of their light."""
    height, width = x.shape
    base = rng.uniform([5, 5, 20], [20, 20, 50]).astype(np.float32) * (1 - 0.5 * y / height)[..., None]
    for _ in range(int(rng.integers(2, 5))):
        lx, ly, reach = rng.uniform(0, width), rng.uniform(0, height * 0.7), rng.uniform(0.1, 0.25) * min(width, height)
        d = ((x - lx) ** 2 + (y - ly) ** 2) / reach ** 2
        base += np.exp(-d)[..., None] * rng.uniform([200, 160, 40], [255, 230, 140]).astype(np.float32)
    # each phase lasts over 1/8 s, so sampling at 8 fps (Paris 2.0's rate) sees the strobe, never only one phase
    hz, duty = rng.uniform(1.5, 3.0), rng.uniform(0.4, 0.6)
    dim = base * 0.3
    return lambda t: base if (t * hz) % 1 < duty else dim


def _spin(x: np.ndarray, y: np.ndarray, duration: float, rng: np.random.Generator) -> Frame:
    """A two-colour pinwheel turning on a dark ground."""
    height, width = x.shape
    cx, cy = rng.uniform(0.4, 0.6) * width, rng.uniform(0.4, 0.6) * height
    spokes, omega = int(rng.integers(3, 9)), rng.uniform(1.0, 3.0) * rng.choice([-1, 1])
    c1, c2, bg = (rng.uniform(lo, hi, 3).astype(np.float32) for lo, hi in ((0, 255), (0, 255), (20, 90)))
    turns = np.arctan2(y - cy, x - cx) * (spokes / np.pi)
    inside = (np.hypot(x - cx, y - cy) < rng.uniform(0.35, 0.48) * min(width, height))[..., None]

    def frame(t: float) -> np.ndarray:
        blade = (np.floor(turns + omega * t * spokes / np.pi) % 2 == 1)[..., None]
        return np.where(inside, np.where(blade, c1, c2), bg)
    return frame


def _particles(x: np.ndarray, y: np.ndarray, duration: float, rng: np.random.Generator) -> Frame:
    """Snow drifting down and swaying in front of a night sky."""
    height, width = x.shape
    base = np.empty((height, width, 3), np.float32)
    base[:] = rng.uniform([5, 10, 30], [25, 30, 70]) + rng.uniform(20, 50) * (y / height)[..., None]
    k = int(rng.integers(60, 160))
    px, py = rng.uniform(0, width, k), rng.uniform(0, height, k)
    fall, sway, big = rng.uniform(0.1, 0.35, k) * height, rng.uniform(0.5, 2.0, k), rng.random(k) < 0.5

    def frame(t: float) -> np.ndarray:
        img = base.copy()
        qx = ((px + 8 * np.sin(sway * t * 2 + px)) % width).astype(int)
        qy = ((py + fall * t) % height).astype(int)
        img[qy, qx] = 235
        img[np.minimum(qy[big] + 1, height - 1), np.minimum(qx[big] + 1, width - 1)] = 235
        return img
    return frame


def _waves(x: np.ndarray, y: np.ndarray, duration: float, rng: np.random.Generator) -> Frame:
    """Sea waves rolling under a blue sky, wave length shrinking towards the horizon."""
    height = x.shape[0]
    horizon = rng.uniform(0.25, 0.45) * height
    sky = rng.uniform([90, 150, 210], [140, 190, 250]).astype(np.float32)
    k_wave, omega, tilt = rng.uniform(0.08, 0.2), rng.uniform(2.5, 4.5), rng.uniform(-0.3, 0.3)
    depth = np.clip((y - horizon) / (height - horizon), 0.05, 1)
    along, across = x * (1 + tilt * y / height) * k_wave / depth, y * k_wave * 0.7 / depth
    sea = (y > horizon)[..., None]
    dark, swing = np.array([10, 60, 130], np.float32), np.array([60, 110, 100], np.float32)

    def frame(t: float) -> np.ndarray:
        w = np.sin(along - omega * t) * np.sin(across + 0.5 * omega * t)
        return np.where(sea, dark + (0.5 + 0.5 * w[..., None]) * swing, sky)
    return frame


def _traffic(x: np.ndarray, y: np.ndarray, duration: float, rng: np.random.Generator) -> Frame:
    """Cars with headlights driving both ways along a road at night."""
    height, width = x.shape
    base = np.empty((height, width, 3), np.float32)
    base[:] = rng.uniform([5, 5, 15], [20, 20, 40])
    lanes = int(rng.integers(2, 4))
    tops = np.linspace(0.35, 0.9, lanes + 1) * height
    lane_h = tops[1] - tops[0]
    for top in tops[:-1]:
        base[int(top) + 2:int(top + lane_h) - 2] = rng.uniform(35, 60)
    cars = [(int(tops[lane] + lane_h * 0.25), rng.uniform(0, width),
             rng.uniform(0.3, 0.7) * width * (1 if lane % 2 else -1),
             rng.uniform(0.1, 0.2) * width, rng.uniform(60, 255, 3))
            for lane in range(lanes) for _ in range(int(rng.integers(2, 5)))]

    def frame(t: float) -> np.ndarray:
        img = base.copy()
        for top, x0, vel, length, colour in cars:
            left = int((x0 + vel * t) % (width + length) - length)
            rows = slice(top, top + int(lane_h * 0.5))
            img[rows, max(0, left):max(0, left + int(length))] = colour
            lamp = left + int(length) - 2 if vel > 0 else left
            img[rows, max(0, lamp):max(0, lamp + 2)] = [255, 250, 200]
        return img
    return frame


_DRAW: dict[str, Callable[..., Frame]] = {
    "shapes": _shapes, "pan": _pan, "zoom": _zoom, "flicker": _flicker, "spin": _spin, "particles": _particles,
    "waves": _waves, "traffic": _traffic,
}


def draw_clip(theme: str, width: int, height: int, times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(len(times), height, width, 3) uint8 frames of `theme` with a random layout, drawn at `times` (seconds).

    Drawn at half resolution and upscaled, as the image demo does: drawing, not encoding, would otherwise be most
    of the demo's time, and the motion stays smooth enough.
    """
    if theme not in _DRAW:
        raise ValueError(f"unknown video demo theme {theme!r}; themes: {', '.join(THEMES)}")
    times = np.asarray(times, np.float64)
    small = (max(8, width // 2), max(8, height // 2))
    y, x = np.mgrid[0:small[1], 0:small[0]].astype(np.float32)
    frame = _DRAW[theme](x, y, float(times[-1]), rng)
    u, v = x / small[0], y / small[1]
    # Uneven light: a random low-frequency field, so that first frames of one theme stay far apart in pHash.
    waves = (np.cos(2 * np.pi * (u * rng.uniform(-1.5, 1.5) + v * rng.uniform(-1.5, 1.5)) + rng.uniform(0, 6))
             for _ in range(2))
    light = (1 + 0.12 * sum(waves))[..., None].astype(np.float32)
    out = np.empty((len(times), height, width, 3), np.uint8)
    for i, t in enumerate(times):
        picture = np.clip(frame(float(t)) * light, 0, 255).astype(np.uint8)
        out[i] = cv2.resize(picture, (width, height), interpolation=cv2.INTER_LINEAR)
    return out


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
    rows: list[VideoDemoRow] = []

    def caption(theme: str) -> str:
        template = _CAPTIONS[theme][rng.integers(len(_CAPTIONS[theme]))]
        return template.format(a=_ADJECTIVES[rng.integers(len(_ADJECTIVES))])

    def add(row: VideoDemoRow, frames: np.ndarray | None = None, data: bytes | None = None, **encode) -> None:
        path = files / row.name
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
        rows.append(row)

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
        add(VideoDemoRow(name, caption(theme), theme, KEPT, fps=fps), frames)
        drawn_from[name] = state

    def redraw(src: VideoDemoRow) -> np.ndarray:
        again = np.random.default_rng()
        again.bit_generator.state = drawn_from[src.name]
        return draw_clip(src.theme, src.width, src.height, np.arange(src.frames) / src.fps, again)

    # Near-duplicate re-encodes by fixed recipes (every recipe in every round), and one exact copy.
    copied = iter(rows[i] for i in sources)
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
        data=(files / src.name).read_bytes())

    def fresh(theme: str, w: int = 192, h: int = 144, fps: float = 24.0, seconds: float = 2.0) -> np.ndarray:
        return draw_clip(theme, w, h, np.arange(max(1, round(seconds * fps))) / fps, rng)

    # Broken files: cut in the middle (moov up front: the header promises frames that are missing; moov at the
    # end: nothing to index), zero bytes, and a hotlink-refusal page under a .mp4 name.
    add(VideoDemoRow("truncated_0.mp4", caption("pan"), "pan", "truncated", fps=24.0, recipe="faststart_half"),
        fresh("pan"))
    data = (files / "truncated_0.mp4").read_bytes()
    (files / "truncated_0.mp4").write_bytes(data[: len(data) // 2])
    add(VideoDemoRow("truncated_1.mp4", caption("waves"), "waves", "truncated", fps=24.0, recipe="moov_last_0.6"),
        fresh("waves"), faststart=False)
    data = (files / "truncated_1.mp4").read_bytes()
    (files / "truncated_1.mp4").write_bytes(data[: int(len(data) * 0.6)])
    add(VideoDemoRow("empty_0.mp4", caption("shapes"), "shapes", "empty_file", recipe="zero_bytes"), data=b"")
    page = (b"<!doctype html><html><head><title>Access denied</title></head>"
            b"<body>Sorry, hotlinking videos is not allowed.</body></html>")
    add(VideoDemoRow("page_0.mp4", caption("zoom"), "zoom", "undecodable", recipe="html_as_video_mp4"), data=page)
    # Nothing at this URL: the server answers 404.
    rows.append(VideoDemoRow("", caption("traffic"), "traffic", "download_failed", url_path="/files/missing_0.mp4",
                             recipe="http_404"))

    # Clips nobody should train on.
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

    # Valid clips in awkward encodings: each must come out upright, at the right rate, in the right colours.
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
        draw_clip("traffic", 192, 144, np.array(pts) / 1000, rng), pts_ms=pts)
    add(VideoDemoRow("nocaption_0.mp4", None, "waves", "missing_caption", fps=24.0, recipe="no_caption"),
        fresh("waves"))

    table = pd.DataFrame([r.__dict__ for r in rows])
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
