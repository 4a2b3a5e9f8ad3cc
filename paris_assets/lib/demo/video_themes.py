"""The video demo's eight motion themes: their captions, and each drawn frame by frame from a seeded generator."""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

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


def caption_for(theme: str, rng: np.random.Generator) -> str:
    """One of the theme's captions with a random adjective (two draws from `rng`)."""
    template = _CAPTIONS[theme][rng.integers(len(_CAPTIONS[theme]))]
    return template.format(a=_ADJECTIVES[rng.integers(len(_ADJECTIVES))])


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
