"""Near-duplicate grouping against n, on three kinds of 64-bit hashes, before (all pairs, then transitive
components) and after (lib.dedup.group_near_duplicates), each run in its own subprocess with a time limit.

- uniform: random hashes, the best case for multi-index hashing (every bucket small);
- one value xG: uniform, but G of them within 1 bit of one value (a placeholder image copied G times);
- real pHash: pHashes of real images (the pipeline's, of the whole image) resampled to n, see `real_like`.

    python -m paris_assets.bench.dedup [--sizes 10000,100000,1000000] [--groups 5000,20000] [--photos DIR]
                                       [--pool FILE.npz] [--before-limit 60] [--kinds uniform,group,real]
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..lib.dedup import phash as dedup
from ..lib.demo.images import THEMES, draw_theme
from ..lib.images.decode import image_phash
from ..lib.images.units import FilterParams
from ..lib.store.processes import peak_rss_mb

RADIUS = FilterParams().phash_max_distance  # the setting's default
MEMORY_CAP = 6 << 30  # bytes of address space per timed run
PLACEHOLDER_TEXTS = ("image not available", "no image", "photo coming soon", "image unavailable", "404",
                     "no photo available", "this image has been removed", "picture not found", "loading...",
                     "image coming soon")
WORDS = ("sale", "new", "free", "shipping", "best", "quality", "summer", "collection", "happy", "birthday",
         "love", "you", "quote", "of", "the", "day", "menu", "open", "closed", "price", "only", "today",
         "thank", "welcome", "home", "family", "coffee", "time", "keep", "calm", "and", "carry", "on", "size",
         "chart", "instructions", "warning", "note", "chapter", "one", "two", "page", "contact", "us")
FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
         "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
         "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf")


def _font(rng: np.random.Generator, size: int) -> ImageFont.ImageFont:
    return _load_font(FONTS[rng.integers(len(FONTS))], size)


@functools.cache
def _load_font(path: str, size: int) -> ImageFont.ImageFont:
    return ImageFont.truetype(path, size) if Path(path).exists() else ImageFont.load_default(size)


def _sizes(rng: np.random.Generator) -> tuple[int, int]:
    w = int(rng.integers(160, 640))
    return w, int(w * rng.uniform(0.6, 1.6))


def placeholder(design: int, rng: np.random.Generator) -> Image.Image:
    """One of a site's "image not available" tiles (a grey field, an outlined box, one line of text; the
    design fixes text, shade and size), as re-published: scaled to 30-100% and JPEG re-encoded."""
    drawn = np.random.default_rng(design)
    w, h = _sizes(drawn)
    shade = int(drawn.choice([200, 220, 235]))
    image = Image.new("RGB", (w, h), (shade,) * 3)
    draw = ImageDraw.Draw(image)
    draw.rectangle((w * 0.35, h * 0.25, w * 0.65, h * 0.5), outline=(shade - 40,) * 3, width=max(1, w // 100))
    draw.text((w / 2, h * 0.7), PLACEHOLDER_TEXTS[design % len(PLACEHOLDER_TEXTS)], fill=(shade - 70,) * 3,
              font=_font(drawn, max(8, w // 18)), anchor="mm")
    scale = rng.uniform(0.3, 1.0)
    return _reencoded(image.resize((max(8, int(w * scale)), max(8, int(h * scale)))), int(rng.integers(40, 95)))


def near_blank(rng: np.random.Generator) -> Image.Image:
    """A flat tone with a faint gradient (5-15 levels, one of four directions) and noise: it passes the blank
    check (std above blank_std) yet says almost nothing."""
    w, h = _sizes(rng)
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    ramp = (x, y, 1 - x, 1 - y)[rng.integers(4)] * rng.uniform(5, 15)
    tone = rng.uniform(30, 240) + ramp + rng.normal(0, 1, (h, w))
    return _reencoded(Image.fromarray(np.clip(tone, 0, 255).astype(np.uint8)).convert("RGB"), 85)


def _reencoded(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def text_on_white(rng: np.random.Generator) -> Image.Image:
    """Black words on white, two to eight words on one to three lines (quotes, banners, price tags)."""
    w, h = _sizes(rng)
    image = Image.new("RGB", (w, h), (255, 255, 255))
    words = " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), rng.integers(2, 9)))
    draw = ImageDraw.Draw(image)
    draw.multiline_text((w / 2, h / 2), textwrap.fill(words, 18), fill=(0, 0, 0), anchor="mm", align="center",
                        font=_font(rng, int(w / rng.uniform(9, 16))))
    return image


def photo_variants(path: Path, rng: np.random.Generator) -> list[int]:
    """pHashes of a photo and of three re-published copies: halved, re-encoded at quality 40, cropped 5%."""
    with Image.open(path) as im:
        im.draft("RGB", (1024, 1024))
        image = im.convert("RGB")
    w, h = image.size
    copies = [image, image.resize((max(1, w // 2), max(1, h // 2))), _reencoded(image, 40),
              image.crop((w * 0.05, h * 0.05, w, h))]
    return [image_phash(c) for c in copies]


def real_phash_pool(photos: Path | None, seed: int = 0, placeholders: int = 1000, blanks: int = 1000,
                    texts: int = 2000, scenes: int = 1000) -> dict[str, np.ndarray]:
    """Real pHashes by kind: placeholder tiles (40 designs), near-blank images, text on white, the demo's
    drawn scenes, and the photographs (with their re-published copies) of every image file under `photos`."""
    rng = np.random.default_rng(seed)
    pool = {
        "placeholder": [image_phash(placeholder(i % 40, rng)) for i in range(placeholders)],
        "blank": [image_phash(near_blank(rng)) for _ in range(blanks)],
        "text": [image_phash(text_on_white(rng)) for _ in range(texts)],
        "scene": [image_phash(Image.fromarray(draw_theme(THEMES[i % len(THEMES)], 160, 160, rng)))
                  for i in range(scenes)],
        "photo": [],
    }
    if photos is not None:
        for path in sorted(p for p in photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")):
            try:
                pool["photo"] += photo_variants(path, rng)
            except (OSError, ValueError, Image.DecompressionBombError):
                continue  # svg-like or damaged files in doc folders: not photographs
    return {k: np.array(v, np.uint64) for k, v in pool.items()}


def flip_bits(hashes: np.ndarray, low: int, high: int, rng: np.random.Generator) -> np.ndarray:
    """Each hash with between `low` and `high` random bits flipped (a bit may be drawn twice)."""
    out = hashes.copy()
    count = rng.integers(low, high + 1, len(out))
    for j in range(high):
        bit = np.uint64(1) << rng.integers(0, 64, len(out)).astype(np.uint64)
        out ^= np.where(j < count, bit, np.uint64(0))
    return out


def real_like(n: int, pool: dict[str, np.ndarray], seed: int = 0) -> np.ndarray:
    """n hashes resampled from real pHashes: 3% placeholder tiles, 2% near-blank images and 10% text on white
    (0-2 flipped bits: thousands of near-identical hashes), 15% near copies of photos and scenes (0-3 bits), 70%
    distinct photos and scenes (8-16 bits flipped from a real one: new hashes that keep the pool's skewed bits)."""
    rng = np.random.default_rng(seed)
    pictures = np.concatenate([pool["photo"], pool["scene"]])
    parts = [(pool["placeholder"], 0.03, 0, 2), (pool["blank"], 0.02, 0, 2), (pool["text"], 0.10, 0, 2),
             (pictures, 0.15, 0, 3)]
    out = [flip_bits(rng.choice(src, round(n * share)), lo, hi, rng) for src, share, lo, hi in parts]
    out.append(flip_bits(rng.choice(pictures, n - sum(len(o) for o in out)), 8, 16, rng))
    return np.concatenate(out)[rng.permutation(n)]


def uniform(n: int, group: int = 0, seed: int = 0) -> np.ndarray:
    """n uniform random hashes; the first `group` within 1 bit of one value."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    hashes |= rng.integers(0, 2, n).astype(np.uint64)
    hashes[:group] = flip_bits(np.full(group, hashes[0]), 0, 1, rng)
    return hashes[rng.permutation(n)]


def transitive_groups_before(hashes: np.ndarray, radius: int) -> np.ndarray:
    """The grouping before issue #10, as it was: every pair within radius (multi-index hashing, stable sorts,
    a scattered gather per candidate), then connected components (union-find)."""
    h = np.asarray(hashes, np.uint64)
    found = [np.empty((0, 2), np.int64)]
    for mask in dedup.key_masks(len(h), radius):
        keys = h & mask
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        k = np.nonzero(sorted_keys[1:] == sorted_keys[:-1])[0]
        step = 1
        while len(k):
            a, b = order[k], order[k + step]
            near = np.bitwise_count(h[a] ^ h[b]) <= radius
            found.append(np.stack([np.minimum(a, b)[near], np.maximum(a, b)[near]], axis=1))
            k = k[k + step + 1 < len(h)]
            k = k[sorted_keys[k + step + 1] == sorted_keys[k]]
            step += 1
    pairs = np.unique(np.concatenate(found), axis=0)
    parent = np.arange(len(h))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(len(h))])


def run_one(algorithm: str, path: str) -> dict:
    """Time one grouping of the hashes saved at `path` (in a fresh process, for its peak RSS), with its address
    space capped at MEMORY_CAP so that all pairs of a dense group fail here rather than squeeze a shared machine."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    hashes = np.load(path)
    rss_before = peak_rss_mb()
    started, cpu = time.perf_counter(), time.process_time()
    stats = {}
    try:
        if algorithm == "before":
            groups = len(np.unique(transitive_groups_before(hashes, RADIUS)))
        else:
            groups = len(np.unique(dedup.group_near_duplicates(hashes, RADIUS, stats=stats)))
    except MemoryError:
        return {"seconds": None, "stopped": f"out of memory after {time.perf_counter() - started:.0f} s "
                                            f"({MEMORY_CAP / 2**30:.0f} GB cap)"}
    return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu, "groups": groups,
            "stats": stats, "rss_before_mb": rss_before, "peak_rss_mb": peak_rss_mb()}


def timed(algorithm: str, hashes: np.ndarray, limit: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "hashes.npy")
        np.save(path, hashes)
        try:
            done = subprocess.run([sys.executable, "-m", "paris_assets.bench.dedup", "--run", algorithm, path],
                                  capture_output=True, text=True, timeout=limit, check=False)
        except subprocess.TimeoutExpired:
            return {"seconds": None, "stopped": f"> {limit:.0f} s (stopped)"}
    if done.returncode < 0:  # the kernel's OOM killer sends SIGKILL
        return {"seconds": None, "stopped": f"killed by signal {-done.returncode} (out of memory)"}
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def same_as_plain_rule(hashes: np.ndarray, sample: int = 3000, seed: int = 0) -> bool:
    """The fast grouping equals the O(n^2) statement of the rule on a random sample of the hashes."""
    part = np.random.default_rng(seed).choice(hashes, min(sample, len(hashes)), replace=False)
    return bool((dedup.group_near_duplicates(part, RADIUS) ==
                 dedup.group_near_duplicates_bruteforce(part, RADIUS)).all())


def bench_dedup(sizes: list[int], photos: Path | None, before_limit: float, groups: tuple[int, ...],
                pool_file: Path | None = None, kinds: tuple[str, ...] = ("uniform", "group", "real"),
                log=print) -> list[dict]:
    started = time.perf_counter()
    if pool_file is not None and pool_file.exists():
        pool = dict(np.load(pool_file))
    else:
        pool = real_phash_pool(photos)
        if pool_file is not None:
            np.savez(pool_file, **pool)
    log(f"real pHash pool: {', '.join(f'{len(v):,} {k}' for k, v in pool.items())} "
        f"({time.perf_counter() - started:.0f} s)")
    cases = [(f"uniform, n={n:,}", uniform(n)) for n in sizes if "uniform" in kinds]
    cases += [(f"uniform, n={max(sizes):,}, {g:,} within 1 bit of one value", uniform(max(sizes), g))
              for g in groups if "group" in kinds]
    cases += [(f"real pHash, n={n:,}", real_like(n, pool)) for n in sizes if "real" in kinds]
    rows = []
    for name, hashes in cases:
        after = timed("after", hashes, 600)
        before = timed("before", hashes, before_limit)
        row = {"case": name, "after": after, "before": before, "same_as_plain_rule": same_as_plain_rule(hashes)}
        rows.append(row)
        log(format_row(row))
    return rows


def format_row(row: dict) -> str:
    a, b = row["after"], row["before"]
    work = "" if a["seconds"] is None else (
        f" ({a['stats']['unique']:,} unique, {a['stats']['pairs_listed']:,} pairs listed, "
        f"{a['stats']['dense_runs']:,} dense runs, {a['stats']['distances']:,} distances)")
    return (f"{row['case']:<58} after {_timing(a)}{work} | before {_timing(b)} | plain rule on 3,000: "
            f"{'same' if row['same_as_plain_rule'] else 'DIFFERENT'}")


def _timing(run: dict) -> str:
    if run["seconds"] is None:
        return run["stopped"]
    return (f"{run['seconds']:.1f} s ({run['cpu_seconds']:.1f} s CPU), {run['groups']:,} groups, peak RSS "
            f"{run['peak_rss_mb']:,.0f} MB ({run['rss_before_mb']:,.0f} MB before grouping)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--groups", default="5000,20000", help="sizes of the one-value group in the 1M case")
    parser.add_argument("--kinds", default="uniform,group,real", help="which hash sets to time")
    parser.add_argument("--photos", type=Path, default=None, help="a folder of real images to take pHashes from")
    parser.add_argument("--pool", type=Path, default=None,
                        help="an .npz of the real pHash pool: read if it exists, else written (drawing takes minutes)")
    parser.add_argument("--before-limit", type=float, default=60.0, help="seconds the old grouping may take")
    parser.add_argument("--run", nargs=2, metavar=("ALGORITHM", "HASHES_NPY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        print(json.dumps(run_one(*args.run)))
        return 0
    bench_dedup([int(s) for s in args.sizes.split(",")], args.photos, args.before_limit,
                tuple(int(g) for g in args.groups.split(",") if g), args.pool, tuple(args.kinds.split(",")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
