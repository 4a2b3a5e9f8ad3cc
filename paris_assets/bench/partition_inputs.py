"""The partitions bench's inputs: seeded LAION-shaped JPEG rows with planted adversaries, cached as raw_images tars,
and synthetic fan-in rows (pHash, sha256) at 11M."""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

from ..lib.images.filtering import REJECTED_COLUMNS
from ..lib.outputs.tars import TarShardWriter

SHARES = {"photo": 0.91, "placeholder": 0.03, "exact_copy": 0.02, "near_copy": 0.04}  # of rows, by kind
FIRST_PLAIN = 20  # the first rows are all photographs, so every copy has an earlier photograph to copy
BASES = 400  # distinct windows of the photographs that every variant starts from


def row_kind(seed: int, i: int) -> str:
    u = np.random.default_rng([seed, i, 0]).random()
    if i < FIRST_PLAIN:
        return "photo"
    edges = np.cumsum(list(SHARES.values()))
    return list(SHARES)[int(np.searchsorted(edges, u, side="right"))]


def row_source(seed: int, i: int) -> int:
    """The earlier photograph row that copy row i copies (-1 for the other kinds)."""
    if row_kind(seed, i) not in ("exact_copy", "near_copy"):
        return -1
    rng = np.random.default_rng([seed, i, 1])
    while True:
        j = int(rng.integers(0, i))
        if row_kind(seed, j) == "photo":
            return j


def recipe(seed: int, n: int) -> pd.DataFrame:
    """kind and source row of the first n rows."""
    return pd.DataFrame({"kind": [row_kind(seed, i) for i in range(n)],
                         "source": [row_source(seed, i) for i in range(n)]})


@functools.cache
def bases(kind: str, seed: int) -> tuple[np.ndarray, ...]:
    """BASES distinct BGR images, longest side 800: windows (40-80 % of each side) of the benchmark photographs,
    or smooth random colour fields with noise (`textures`: no photographs needed)."""
    rng = np.random.default_rng([seed, 7])
    out = []
    if kind == "photos":
        from .photos import load_photo, photo_paths

        photos = [np.ascontiguousarray(np.asarray(load_photo(p, 1200))[:, :, ::-1]) for p in photo_paths()]
    for k in range(BASES):
        if kind == "photos":
            photo = photos[k % len(photos)]
            h, w = photo.shape[:2]
            f = rng.uniform(0.4, 0.8)
            ch, cw = int(h * f), int(w * f)
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            window = photo[y:y + ch, x:x + cw]
        else:
            grid = rng.uniform(0, 255, (int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3)).astype(np.float32)
            window = cv2.resize(grid, (400, 300), interpolation=cv2.INTER_CUBIC)
            window = np.clip(window + 8 * rng.standard_normal((300, 400, 3), dtype=np.float32), 0, 255).astype(np.uint8)
        scale = 800 / max(window.shape[:2])
        size = (round(window.shape[1] * scale), round(window.shape[0] * scale))
        out.append(cv2.resize(window, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR))
    return tuple(out)


@functools.cache
def placeholder_tile(design: int) -> np.ndarray:
    """A grey "image not found" tile, 500x375 (one of three designs)."""
    shade = (200, 220, 235)[design % 3]
    image = Image.new("RGB", (500, 375), (shade,) * 3)
    draw = ImageDraw.Draw(image)
    draw.rectangle((175, 90, 325, 190), outline=(shade - 40,) * 3, width=5)
    draw.text((250, 270), ("image not found", "no image available", "photo coming soon")[design % 3],
              fill=(shade - 70,) * 3, font=ImageFont.load_default(28), anchor="mm")
    return np.asarray(image)[:, :, ::-1].copy()


def row_pixels(seed: int, i: int, base_kind: str) -> tuple[np.ndarray, int]:
    """(BGR pixels, JPEG quality) of a photograph or placeholder row."""
    rng = np.random.default_rng([seed, i, 2])
    if row_kind(seed, i) == "placeholder":  # same tile, tiny variations: scale 95-100 %, +-1 level of noise
        tile = placeholder_tile(int(rng.integers(3)))
        scale = rng.uniform(0.95, 1.0)
        tile = cv2.resize(tile, (round(500 * scale), round(375 * scale)), interpolation=cv2.INTER_AREA)
        noise = rng.integers(-1, 2, tile.shape, dtype=np.int16)
        return np.clip(tile + noise, 0, 255).astype(np.uint8), int(rng.integers(75, 91))
    pool = bases(base_kind, seed)
    base = pool[int(rng.integers(len(pool)))]
    h, w = base.shape[:2]
    fy, fx = rng.uniform(0.5, 1.0, 2)
    ch, cw = int(h * fy), int(w * fx)
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    flips = int(rng.integers(8))
    longest = int(400 + 600 * rng.random() ** 1.5)  # 400-1000 px, most of them small, as on the web
    scale = longest / max(ch, cw)
    a = cv2.resize(base[y:y + ch, x:x + cw], (max(1, round(cw * scale)), max(1, round(ch * scale))),
                   interpolation=cv2.INTER_LINEAR)  # INTER_AREA is 3x slower and scales here stay above 1/2
    a = cv2.flip(a, 1) if flips & 1 else a
    a = cv2.flip(a, 0) if flips & 2 else a
    a = cv2.transpose(a) if flips & 4 else a
    # Uneven lighting and a colour cast: they move the low frequencies the pHash reads, so variants of one base
    # spread over the hash space instead of clustering around it.
    grid = (rng.uniform(0.55, 1.45, (3, 3, 1)) * rng.uniform(0.85, 1.15, 3) * 128).astype(np.uint8)
    a = cv2.multiply(a, cv2.resize(grid, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_LINEAR), scale=1 / 128)
    return a, int(rng.integers(55, 86))


def row_jpeg(seed: int, i: int, base_kind: str) -> bytes:
    kind = row_kind(seed, i)
    if kind == "exact_copy":
        return row_jpeg(seed, row_source(seed, i), base_kind)
    if kind == "near_copy":  # re-published: rescaled to 70-95 % and re-encoded at another quality
        pixels, _ = row_pixels(seed, row_source(seed, i), base_kind)
        rng = np.random.default_rng([seed, i, 3])
        f = rng.uniform(0.7, 0.95)
        pixels = cv2.resize(pixels, (round(pixels.shape[1] * f), round(pixels.shape[0] * f)),
                            interpolation=cv2.INTER_LINEAR)
        quality = int(rng.integers(40, 91))
    else:
        pixels, quality = row_pixels(seed, i, base_kind)
    return cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def _write_shard(args: tuple) -> str:
    path, first, rows, seed, base_kind = args
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh, TarShardWriter(fh) as writer:
        for i in range(first, first + rows):
            writer.write(f"{i:09d}", {"jpg": row_jpeg(seed, i, base_kind)})
    os.replace(tmp, path)
    return path


def ensure_inputs(folder: Path, n: int, shard_rows: int, seed: int, base_kind: str, processes: int,
                  log=print) -> pd.DataFrame:
    """The samples table of the first n rows, writing whichever tars of `shard_rows` rows are not cached yet."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = -(-n // shard_rows)
    todo = [(str(folder / f"{s:05d}.tar"), s * shard_rows, shard_rows, seed, base_kind) for s in range(shards)
            if not (folder / f"{s:05d}.tar").exists()]
    if todo:
        started = time.perf_counter()
        log(f"writing {len(todo)} tars of {shard_rows} images into {folder} ...")
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            for done, _ in enumerate(pool.imap_unordered(_write_shard, todo, chunksize=1), 1):
                if done % max(1, len(todo) // 10) == 0:
                    log(f"  {done}/{len(todo)} tars, {time.perf_counter() - started:.0f} s")
    i = np.arange(n)
    return pd.DataFrame({
        "image_id": [f"{k:016x}" for k in i], "url": [f"bench://{k}" for k in i], "alt_text": "x",
        "caption_problem": "", "aesthetic": 6.0, "punsafe": 0.0, "pwatermark": 0.0, "similarity": 0.3,
        "status": "success", "error_message": None,
        "shard": [str(folder / f"{s:05d}.tar") for s in i // shard_rows], "key": [f"{k:09d}" for k in i]})


def write_raw_folder(folder: Path, samples: pd.DataFrame) -> str:
    """A raw_images folder (samples.parquet, an empty refused.parquet) whose shards are the cached tars."""
    folder.mkdir(parents=True, exist_ok=True)
    samples.to_parquet(folder / "samples.parquet", index=False)
    pd.DataFrame({c: pd.Series(dtype=object) for c in REJECTED_COLUMNS}).to_parquet(folder / "refused.parquet")
    return str(folder)


def _hex_strings(raw: np.ndarray) -> pa.Array:
    """Rows of bytes as fixed-width lower-case hex strings, built as one Arrow buffer (no Python strings)."""
    lut = np.array([f"{b:02x}".encode() for b in range(256)], dtype="S2").view(np.uint16)
    data = lut[raw].tobytes()
    width = 2 * raw.shape[1]
    offsets = np.arange(0, width * (len(raw) + 1), width, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(len(raw), pa.py_buffer(offsets), pa.py_buffer(data))


def build_synthetic(path: str, n: int, seed: int = 0) -> dict:
    """(in a child) n fan-in rows: random 64-bit pHashes, 5 % planted copies of earlier rows (half byte-exact: same
    pHash and sha256; half 1-3 bits off), random sha256, sizes 300-1500 px."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) << np.uint64(1) | rng.integers(0, 2, n).astype(np.uint64)
    sha = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    planted = np.sort(rng.choice(np.arange(1, n), n // 20, replace=False))
    originals = np.setdiff1d(np.arange(n), planted)  # a copy of a planted row would copy a hash about to change
    source = originals[(rng.random(len(planted)) * np.searchsorted(originals, planted)).astype(np.int64)]
    exact = rng.random(len(planted)) < 0.5
    h[planted] = h[source]
    sha[planted[exact]] = sha[source[exact]]
    for k in range(3):  # the near half: 1-3 bits flipped
        bits = np.uint64(1) << rng.integers(0, 64, len(planted)).astype(np.uint64)
        h[planted] ^= np.where(~exact & ((k == 0) | (rng.random(len(planted)) < 0.5)), bits, np.uint64(0))
    table = pa.table({"image_id": _hex_strings(np.arange(n, dtype=">u8").view(np.uint8).reshape(n, 8)),
                      "phash": _hex_strings(h.astype(">u8").view(np.uint8).reshape(n, 8)),
                      "sha256": _hex_strings(sha),
                      "original_width": rng.integers(300, 1501, n), "original_height": rng.integers(300, 1501, n)})
    pq.write_table(table, path + ".tmp", compression="zstd")
    os.replace(path + ".tmp", path)
    return {"rows": n, "planted": len(planted), "exact": int(exact.sum())}
