"""The built-in demo source: a seeded, LAION-shaped data set with what real web data throws at a pipeline.

`make_demo` draws about `n` clean images in eight visibly different themes (each with a caption), then plants
the problems an ingest meets on the web: exact and near duplicates under other URLs, dead URLs, broken files,
odd encodings, decompression bombs, degenerate shapes, bad captions and flagged LAION scores. Every planted row
carries the outcome the pipeline owes it (`expect`), so tests can check that each one is accounted for.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..images.decode import image_phash

THEMES = ("sunset", "ocean", "forest", "city", "checkers", "bubbles", "stars", "desert")

_CAPTIONS = {
    "sunset": ["a {a} sunset over the hills", "{a} evening sky with the sun going down", "the sun setting, {a} light"],
    "ocean": ["{a} ocean waves under a blue sky", "the sea with {a} rolling waves", "{a} blue water and surf"],
    "forest": ["a {a} pine forest", "{a} green woods with tall trees", "trees in a {a} forest"],
    "city": ["a {a} city skyline at night", "{a} skyscrapers with lit windows", "downtown buildings, {a} night"],
    "checkers": ["a {a} checkerboard pattern", "{a} chequered tiles", "a tiled floor with a {a} check"],
    "bubbles": ["{a} colourful bubbles", "soap bubbles floating, {a} colours", "{a} round circles on pastel"],
    "stars": ["a {a} starry night sky with the moon", "{a} stars over a dark sky", "the night sky, {a} and clear"],
    "desert": ["{a} sand dunes in the desert", "a {a} desert landscape", "golden dunes under a {a} sky"],
}
_ADJECTIVES = ["beautiful", "quiet", "vivid", "calm", "bright", "moody", "soft", "dramatic", "simple", "wide"]

# Every outcome a demo row can have: "kept", or the reason filtered_images must give.
KEPT = "kept"
DEMO_VERSION = 2  # bump when the generator changes, so cached demo files are redrawn


@dataclass
class DemoRow:
    name: str  # file name under files/ ('' when the URL points nowhere)
    caption: bytes | None
    theme: str
    expect: str
    url_path: str | None = None  # path on the demo server; None means a refused connection
    punsafe: float = 0.01
    pwatermark: float = 0.05
    aesthetic: float = 5.5
    width: int = 0
    height: int = 0
    duplicate_of: str = ""  # name of the image this one copies (exact or near)


def draw_theme(theme: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """An (H, W, 3) uint8 picture of `theme` with a random layout, so no two share a perceptual hash.

    Drawn at half resolution and upscaled: the demo must be quick to make, and the shapes stay crisp enough.
    """
    full = (width, height)
    width, height = max(8, width // 2), max(8, height // 2)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / width, y / height
    img = np.zeros((height, width, 3), np.float32)

    def blob_mask(cx, cy, r):
        return ((x - cx) ** 2 + (y - cy) ** 2) <= r * r

    if theme == "sunset":
        top, bottom = rng.uniform([120, 20, 60], [200, 80, 140]), rng.uniform([240, 120, 20], [255, 200, 80])
        img[:] = top + (bottom - top) * v[..., None]
        sun = blob_mask(rng.uniform(0.2, 0.8) * width, rng.uniform(0.3, 0.6) * height, rng.uniform(0.06, 0.15) * width)
        img[sun] = [255, 230, 120]
        ridge = height * (rng.uniform(0.55, 0.8) + 0.08 * np.sin(u * rng.uniform(4, 14) + rng.uniform(0, 6)))
        img[y > ridge] = rng.uniform([20, 0, 20], [60, 30, 60])
    elif theme == "ocean":
        img[:] = [60, 140, 220]
        sea = y > height * rng.uniform(0.3, 0.5)
        freq, phase = rng.uniform(8, 20), rng.uniform(0, 6)
        waves = 0.5 + 0.5 * np.sin(v * freq + np.sin(u * rng.uniform(3, 9) + phase) * 2)
        img[sea] = (np.array([10, 60, 140]) + waves[..., None] * np.array([40, 90, 80]))[sea]
    elif theme == "forest":
        img[:] = rng.uniform([110, 170, 110], [160, 210, 160])
        for _ in range(rng.integers(6, 16)):
            cx, base, w, h = rng.uniform(0, width), rng.uniform(0.6, 1.0) * height, rng.uniform(10, 30), rng.uniform(40, 110)
            inside = (y < base) & (y > base - h) & (np.abs(x - cx) < w * (y - (base - h)) / h)
            img[inside] = rng.uniform([0, 50, 0], [40, 110, 30])
    elif theme == "city":
        img[:] = rng.uniform([5, 5, 25], [25, 25, 60])
        left, sparkle = 0.0, rng.random((height, width)) < 0.6
        while left < width:
            w, h = rng.uniform(12, 35), rng.uniform(0.2, 0.8) * height
            block = (x >= left) & (x < left + w) & (y > height - h)
            img[block] = rng.uniform(25, 60)
            lit = block & ((x.astype(int) // 4) % 2 == 0) & ((y.astype(int) // 5) % 2 == 0)
            img[lit & sparkle] = [250, 220, 120]
            left += w + rng.uniform(0, 5)
    elif theme == "checkers":
        c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        cell, angle = rng.uniform(9, 30), rng.uniform(0, np.pi)
        xr, yr = x * np.cos(angle) - y * np.sin(angle), x * np.sin(angle) + y * np.cos(angle)
        odd = ((np.floor(xr / cell) + np.floor(yr / cell)) % 2).astype(bool)
        img[:] = c1
        img[odd] = c2
    elif theme == "bubbles":
        img[:] = rng.uniform(200, 250, 3)
        for _ in range(rng.integers(5, 14)):
            r = rng.uniform(15, 70)
            img[blob_mask(rng.uniform(0, width), rng.uniform(0, height), r / 2)] = rng.uniform(30, 230, 3)
    elif theme == "stars":
        top, bottom = rng.uniform([0, 0, 10], [20, 20, 50]), rng.uniform([30, 20, 70], [90, 60, 140])
        img[:] = top + (bottom - top) * v[..., None]  # twilight towards the horizon
        band = np.abs((u - rng.uniform(0.2, 0.8)) * np.cos(a := rng.uniform(0, np.pi)) + (v - 0.4) * np.sin(a))
        img += (np.clip(1 - band / rng.uniform(0.08, 0.2), 0, 1) * rng.uniform(40, 90))[..., None]  # milky way
        stars = rng.random((height, width)) < 0.004
        img[stars] = 255
        img[blob_mask(rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.5) * height, rng.uniform(9, 22))] = [235, 235, 210]
        img[y > height * (rng.uniform(0.7, 0.85) + 0.08 * np.sin(u * rng.uniform(3, 12) + rng.uniform(0, 6)))] = 0
    elif theme == "desert":
        img[:] = rng.uniform([150, 190, 230], [190, 220, 250])
        for layer in range(3):
            crest = height * (0.45 + 0.15 * layer + 0.07 * np.sin(u * rng.uniform(3, 10) + rng.uniform(0, 6)))
            img[y > crest] = np.array([230, 190, 120]) - 35 * layer + rng.uniform(-10, 10, 3)
    else:
        raise ValueError(f"unknown demo theme {theme!r}; themes: {', '.join(THEMES)}")
    # Uneven light: a random low-frequency field, so that perceptual hashes of one theme stay far apart.
    light = sum(np.cos(2 * np.pi * (u * rng.uniform(-1.5, 1.5) + v * rng.uniform(-1.5, 1.5)) + rng.uniform(0, 6))
                for _ in range(3))
    img *= (1 + 0.12 * light)[..., None]
    img += rng.normal(0, 4, img.shape).astype(np.float32)  # sensor-like grain
    small = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    return np.asarray(small.resize(full, Image.BILINEAR))


def _jpeg(arr: np.ndarray | Image.Image, quality: int = 90, **kw) -> bytes:
    image = Image.fromarray(arr) if isinstance(arr, np.ndarray) else arr
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, **kw)
    return buf.getvalue()


def _png(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **kw)
    return buf.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header that declares width x height pixels, with a tiny compressed body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    body = zlib.compress(row * 64, 9)  # far fewer rows than declared: decoders must refuse on the header alone
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def _caption(theme: str, rng: np.random.Generator) -> str:
    template = _CAPTIONS[theme][rng.integers(len(_CAPTIONS[theme]))]
    return template.format(a=_ADJECTIVES[rng.integers(len(_ADJECTIVES))])


UNRELATED_MIN_DISTANCE = 10  # clean pictures differ by more than this many pHash bits: no accidental duplicates


@dataclass(frozen=True)
class Recipe:
    """A fixed way to make a near copy, as a re-poster would: the copy is planted as made, never re-drawn."""

    kind: str  # "crop" (this share of the width off the left, of the height off the top), "rescale", "requality"
    amount: float

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.amount:g}"


NEAR_COPY_RECIPES = (
    Recipe("crop", 0.01), Recipe("crop", 0.02), Recipe("crop", 0.03),
    Recipe("rescale", 0.5), Recipe("rescale", 0.65), Recipe("rescale", 0.8),
    Recipe("requality", 20), Recipe("requality", 30), Recipe("requality", 40),
)
NEAR_COPY_KINDS = tuple(dict.fromkeys(r.kind for r in NEAR_COPY_RECIPES))


def apply_recipe(image: Image.Image, recipe: Recipe) -> bytes:
    """The near copy's JPEG bytes (quality 90 unless the recipe is the quality)."""
    w, h = image.size
    if recipe.kind == "crop":
        dx, dy = round(w * recipe.amount), round(h * recipe.amount)
        return _jpeg(image.crop((dx, dy, w, h)))  # the centre moves: what a hash of the centre crop missed
    if recipe.kind == "rescale":
        size = (round(w * recipe.amount), round(h * recipe.amount))
        return _jpeg(image.resize(size, Image.BICUBIC, reducing_gap=3.0))
    if recipe.kind == "requality":
        return _jpeg(image, quality=int(recipe.amount))
    raise ValueError(f"unknown recipe kind {recipe.kind!r}")


def _whole_hash(arr: np.ndarray) -> int:
    return image_phash(Image.fromarray(arr))


def _hamming_to(codes: np.ndarray, code: np.uint64) -> np.ndarray:
    x = np.bitwise_xor(codes, code)
    return np.unpackbits(x.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def make_demo(out_dir: str | Path, n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Write the demo files under `out_dir/files/` and return one row per source URL (see `DemoRow`).

    The same (n, seed) always gives the same bytes and rows.
    """
    files = Path(out_dir) / "files"
    files.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows: list[DemoRow] = []
    pictures: dict[str, np.ndarray] = {}

    def add(name: str, data: bytes, row: DemoRow) -> None:
        (files / name).write_bytes(data)
        row.url_path = row.url_path or f"/files/{name}"
        rows.append(row)

    hashes = np.zeros(0, np.uint64)
    for i in range(n):
        theme = THEMES[i % len(THEMES)]
        w, h = (int(s) for s in rng.integers(256, 513, 2))
        for _attempt in range(20):  # redraw a picture that happens to look like an earlier one
            arr = draw_theme(theme, w, h, rng)
            code = np.uint64(_whole_hash(arr))
            if not len(hashes) or _hamming_to(hashes, code).min() > UNRELATED_MIN_DISTANCE:
                break
        hashes = np.append(hashes, code)
        name = f"{theme}_{i:05d}.jpg"
        pictures[name] = arr
        add(name, _jpeg(arr), DemoRow(name, _caption(theme, rng).encode(), theme, KEPT, width=w, height=h,
                                      aesthetic=float(np.round(rng.uniform(4.5, 7.5), 3))))

    originals = [r for r in rows if r.expect == KEPT]
    pick = iter(rng.permutation(len(originals)))

    def copy_of() -> tuple[DemoRow, bytes]:
        """The next source image (in a seeded order) and its bytes."""
        src = originals[next(pick)]
        return src, (files / src.name).read_bytes()

    # Exact duplicates under other URLs: the same bytes again.
    for j in range(max(4, n // 200)):
        src, data = copy_of()
        add(f"copy_{j:03d}.jpg", data,
            DemoRow(f"copy_{j:03d}.jpg", src.caption, src.theme, "duplicate_exact", width=src.width,
                    height=src.height, duplicate_of=src.name))
    # Near duplicates by fixed recipes: round j of each kind takes that kind's j-th amount (cycling), so even the
    # smallest demo plants every recipe. Whether each lands within phash_max_distance is for the tests to say.
    for j in range(max(4, n // 200)):
        for kind in NEAR_COPY_KINDS:
            amounts = [r for r in NEAR_COPY_RECIPES if r.kind == kind]
            recipe = amounts[j % len(amounts)]
            src, _ = copy_of()
            name = f"near_{recipe.name}_{j:03d}.jpg"
            add(name, apply_recipe(Image.fromarray(pictures[src.name]), recipe),
                DemoRow(name, src.caption, src.theme, "duplicate_near", duplicate_of=src.name))

    def fresh(theme: str, w: int = 320, h: int = 288) -> np.ndarray:
        return draw_theme(theme, w, h, rng)

    cap = lambda theme: _caption(theme, rng).encode()  # noqa: E731

    # Dead URLs: a 404 from the server and a port where nothing listens.
    for j in range(3):
        rows.append(DemoRow("", cap("city"), "city", "download_failed", url_path=f"/files/missing_{j}.jpg"))
        rows.append(DemoRow("", cap("city"), "city", "download_failed", url_path=None))
    # Broken files.
    good = _jpeg(fresh("forest"))
    for j in range(3):
        add(f"truncated_{j}.jpg", good[: len(good) // (2 + j)], DemoRow(f"truncated_{j}.jpg", cap("forest"), "forest", "truncated"))
    for j in range(2):
        add(f"empty_{j}.jpg", b"", DemoRow(f"empty_{j}.jpg", cap("forest"), "forest", "empty_file"))
    html = b"<!doctype html><html><head><title>Not an image</title></head><body>Sorry, hotlinking is not allowed.</body></html>"
    for j in range(2):
        add(f"page_{j}.jpg", html, DemoRow(f"page_{j}.jpg", cap("ocean"), "ocean", "undecodable"))

    # Valid images in awkward encodings: each must come out upright, with the right colours and bit depth.
    odd: list[tuple[str, bytes, str]] = []
    odd.append(("cmyk.jpg", _jpeg(Image.fromarray(fresh("bubbles")).convert("CMYK")), "bubbles"))
    grad = (np.linspace(0, 65535, 320, dtype=np.float64)[None, :] * np.linspace(0.3, 1, 288)[:, None]).astype(np.uint16)
    odd.append(("gray16.png", _png(Image.fromarray(grad)), "stars"))
    pal = Image.fromarray(fresh("checkers")).convert("P", palette=Image.ADAPTIVE, colors=16)
    odd.append(("palette_transparent.png", _png(pal, transparency=0), "checkers"))
    frames = [Image.fromarray(fresh("bubbles")).convert("P", palette=Image.ADAPTIVE) for _ in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    odd.append(("animated.gif", buf.getvalue(), "bubbles"))
    upright = Image.fromarray(fresh("sunset", 400, 300))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored pixels must be rotated 90 degrees clockwise to display
    odd.append(("exif_rotated.jpg", _jpeg(upright.transpose(Image.Transpose.ROTATE_90), exif=exif), "sunset"))
    rgba = Image.fromarray(fresh("desert")).convert("RGBA")
    alpha = np.full((rgba.height, rgba.width), 255, np.uint8)
    alpha[:, : rgba.width // 3] = 0
    rgba.putalpha(Image.fromarray(alpha))
    odd.append(("rgba.png", _png(rgba), "desert"))
    for name, data, theme in odd:
        add(name, data, DemoRow(name, cap(theme), theme, KEPT))

    # Shapes nobody should train on.
    add("bomb.png", _bomb_png(30000, 30000), DemoRow("bomb.png", cap("stars"), "stars", "decompression_bomb"))
    add("one_pixel.png", _png(Image.new("RGB", (1, 1), (200, 10, 10))), DemoRow("one_pixel.png", cap("bubbles"), "bubbles", "too_small"))
    add("banner.jpg", _jpeg(fresh("desert", 6400, 64)), DemoRow("banner.jpg", cap("desert"), "desert", "too_elongated"))
    add("blank.png", _png(Image.new("RGB", (300, 300), (128, 128, 128))), DemoRow("blank.png", cap("stars"), "stars", "blank"))

    # Bad captions and LAION's own flags on otherwise good images.
    def good_image(_name: str, theme: str) -> bytes:
        return _jpeg(fresh(theme))

    for j in range(3):
        add(f"nocaption_{j}.jpg", good_image(f"nocaption_{j}.jpg", "forest"), DemoRow(f"nocaption_{j}.jpg", None, "forest", "missing_caption"))
    for j, raw in enumerate([b"caf\xe9 in the desert", b"\xff\xfe broken \xc3\x28 text"]):
        add(f"latin1_{j}.jpg", good_image(f"latin1_{j}.jpg", "desert"), DemoRow(f"latin1_{j}.jpg", raw, "desert", "caption_not_utf8"))
    for j in range(3):
        add(f"unsafe_{j}.jpg", good_image(f"unsafe_{j}.jpg", "city"), DemoRow(f"unsafe_{j}.jpg", cap("city"), "city", "nsfw", punsafe=0.98))
    for j in range(2):
        add(f"watermark_{j}.jpg", good_image(f"watermark_{j}.jpg", "ocean"), DemoRow(f"watermark_{j}.jpg", cap("ocean"), "ocean", "watermark", pwatermark=0.97))

    table = pd.DataFrame([r.__dict__ for r in rows])
    table.insert(0, "demo_id", [f"demo-{i:06d}" for i in range(len(table))])
    return table


def url_table(demo: pd.DataFrame, base_url: str, refused_url: str) -> pd.DataFrame:
    """The demo as a LAION-aesthetic style parquet table, with URLs on the running demo server."""
    urls = [base_url + p if isinstance(p, str) else refused_url + f"/{i}.jpg" for i, p in enumerate(demo["url_path"])]
    return pd.DataFrame({
        "URL": urls,
        "TEXT": demo["caption"],  # bytes: most are UTF-8, a few are not, some are missing
        "WIDTH": demo["width"].where(demo["width"] > 0),
        "HEIGHT": demo["height"].where(demo["height"] > 0),
        "similarity": 0.3,
        "punsafe": demo["punsafe"],
        "pwatermark": demo["pwatermark"],
        "AESTHETIC_SCORE": demo["aesthetic"],
        "demo_id": demo["demo_id"],
    })
