"""filtered_images over partitions, then the duplicate search across them at the fan-in, at growing N.

Each partition (`--partition-size` source rows) runs filter_raw_folder on its own raw_images folder in a fresh
child process (its peak RSS, workers included, is what one partition's step needs), judging duplicates only within
itself; then fan_in_duplicates judges every partition's kept rows together, in a child of its own. Beside it: the
same filter unpartitioned (one filter_images over all N) at the smaller sizes, and the fan-in alone on 11M
synthetic hash rows.

Inputs are synthetic LAION-shaped JPEGs (longest side 400-1000 px, ~30 kB): seeded variants (window, flip,
uneven lighting, scale, quality) of a few hundred windows of real photographs (bench_photos), plus planted
adversaries: near-identical "image not found" tiles (3 %), byte-exact copies (2 %) and re-encoded, rescaled copies
(4 %) of earlier rows, most of them in other partitions. Row i depends only on (seed, i): the 10k set is a prefix of
the 50k set, which is a prefix of the 200k one; tars are cached under --workdir.

    python -m paris_assets.bench.partitions [--sizes 10000,50000,200000] [--partition-size 10000] [--processes 2]
                                            [--workdir DIR] [--baseline-sizes 10000,50000] [--synthetic 11000000]
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

from ..lib.images.filtering import REJECTED_COLUMNS, fan_in_duplicates, filter_raw_folder
from ..lib.images.units import FilterParams
from ..lib.outputs.tars import TarShardWriter
from ..lib.store.processes import peak_rss_mb

SHARES = {"photo": 0.91, "placeholder": 0.03, "exact_copy": 0.02, "near_copy": 0.04}  # of rows, by kind
FIRST_PLAIN = 20  # the first rows are all photographs, so every copy has an earlier photograph to copy
BASES = 400  # distinct windows of the photographs that every variant starts from
FAN_IN_COLUMNS = ["image_id", "phash", "sha256", "original_width", "original_height"]


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


def in_child(args: list[str]) -> dict:
    """Run this module with `args` in a fresh process; its JSON answer plus the peak RSS of its whole process tree
    (the filter's workers included), sampled every 50 ms."""
    proc = subprocess.Popen([sys.executable, "-m", "paris_assets.bench.partitions", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, done = [0], threading.Event()

    def sample() -> None:
        top = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [top, *top.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass  # a worker exited between listing and reading it
            done.wait(0.05)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    done.set()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"bench child {args[:2]} failed ({proc.returncode}):\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["tree_peak_rss_mb"] = peak[0] / 2**20
    return result


def run_filter(raw: str, out: str, processes: int) -> dict:
    """(in the child) filter_raw_folder on one raw folder; its crops are deleted after (only kept.parquet counts)."""
    started = time.perf_counter()
    stats = filter_raw_folder(raw, out, FilterParams(), processes=processes, log=lambda m: None)
    seconds = time.perf_counter() - started
    shutil.rmtree(Path(out) / "crops")
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime  # what a shared machine cannot take away
    return {"seconds": seconds, "cpu_seconds": cpu, "stats": stats, "peak_rss_mb": peak_rss_mb(),
            "worker_peak_rss_mb": workers.ru_maxrss / 1024}


def run_fan_in(listing: str, dropped_out: str) -> dict:
    """(in the child) read every kept.parquet listed (one path a line), then fan_in_duplicates over them."""
    started = time.perf_counter()
    paths = Path(listing).read_text().split()
    kept = pa.concat_tables([pq.read_table(p, columns=FAN_IN_COLUMNS) for p in paths])
    read = time.perf_counter() - started
    rss_read = peak_rss_mb()
    started, cpu = time.perf_counter(), time.process_time()
    keep, dropped = fan_in_duplicates(kept, FilterParams().phash_max_distance)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if dropped_out:
        dropped.to_parquet(dropped_out, index=False)
    return {"read_seconds": read, "seconds": seconds, "cpu_seconds": cpu, "rows": kept.num_rows, "kept": int(len(keep)),
            "dropped": {k: int(v) for k, v in dropped["reason"].value_counts().items()},
            "rss_after_read_mb": rss_read, "peak_rss_mb": peak_rss_mb()}


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


def bench_size(n: int, samples: pd.DataFrame, partition_size: int, processes: int, run: Path,
               log=functools.partial(print, flush=True)) -> dict:
    """Every partition's filter in turn, then the fan-in over their kept tables."""
    shutil.rmtree(run, ignore_errors=True)
    parts, kept_paths = [], []
    for p, first in enumerate(range(0, n, partition_size)):
        folder = run / f"part-{p:05d}"
        raw = write_raw_folder(folder / "raw", samples.iloc[first:first + partition_size])
        parts.append(in_child(["--run-filter", raw, str(folder / "filtered"), str(processes)]))
        kept_paths.append(str(folder / "filtered" / "kept.parquet"))
        log(f"  N={n:,} partition {p + 1}: {parts[-1]['stats']['images_per_s']:.0f} images/s")
    (run / "kept.txt").write_text("\n".join(kept_paths))
    fan_in = in_child(["--run-fan-in", str(run / "kept.txt"), str(run / "fan_in_dropped.parquet")])
    dropped = [part["stats"]["dropped"] for part in parts]
    return {
        "n": n, "partitions": len(parts), "filter_seconds": sum(part["seconds"] for part in parts),
        "filter_cpu_seconds": sum(part["cpu_seconds"] for part in parts),
        "kept_after_partitions": sum(part["stats"]["kept"] for part in parts),
        "dup_within": sum(d.get("duplicate_exact", 0) + d.get("duplicate_near", 0) for d in dropped),
        "other_rejected": sum(v for d in dropped for k, v in d.items() if not k.startswith("duplicate_")),
        "partition_tree_rss_mb": max(part["tree_peak_rss_mb"] for part in parts),
        "partition_bound_rss_mb": max(part["peak_rss_mb"] + processes * part["worker_peak_rss_mb"] for part in parts),
        "fan_in": fan_in, "run": str(run)}


def bench_unpartitioned(n: int, samples: pd.DataFrame, processes: int, run: Path) -> dict:
    shutil.rmtree(run, ignore_errors=True)
    raw = write_raw_folder(run / "raw", samples.iloc[:n])
    result = in_child(["--run-filter", raw, str(run / "filtered"), str(processes)])
    result["kept_ids"] = set(pd.read_parquet(run / "filtered" / "kept.parquet", columns=["image_id"])["image_id"])
    return result


def final_kept_ids(row: dict) -> set[str]:
    """The ids the partitioned run keeps in the end: every partition's kept rows minus the fan-in's dropped."""
    run = Path(row["run"])
    kept = pd.concat([pd.read_parquet(p, columns=["image_id"]) for p in (run / "kept.txt").read_text().split()])
    return set(kept["image_id"]) - set(pd.read_parquet(run / "fan_in_dropped.parquet")["image_id"])


def report(rows: list[dict], baselines: dict[int, dict], synthetic: dict | None, processes: int) -> str:
    lines = ["| N | partitions | filter s (CPU s) | filter images/s | fan-in read s | fan-in dedup s | peak RSS per partition MB "
             "(sampled tree; driver + workers' peaks) | peak RSS fan-in MB | duplicates dropped within partitions | "
             "across partitions (fan-in) | other rejected | kept | time per image vs smallest N |",
             "|---:" * 13 + "|"]
    first = None
    for r in rows:
        f = r["fan_in"]
        per_image = (r["filter_seconds"] + f["read_seconds"] + f["seconds"]) / r["n"]
        first = first or per_image
        lines.append(f"| {r['n']:,} | {r['partitions']} | {r['filter_seconds']:.0f} ({r['filter_cpu_seconds']:.0f}) | "
                     f"{r['n'] / r['filter_seconds']:.0f} | {f['read_seconds']:.2f} | {f['seconds']:.2f} | "
                     f"{r['partition_tree_rss_mb']:,.0f} ({r['partition_bound_rss_mb']:,.0f}) | "
                     f"{f['peak_rss_mb']:,.0f} | {r['dup_within']:,} | {f['rows'] - f['kept']:,} | "
                     f"{r['other_rejected']:,} | {f['kept']:,} | {per_image / first:.2f} |")
    if baselines:
        lines += ["", f"Unpartitioned baseline (one filter_images over all N, {processes} processes, same inputs):", "",
                  "| N | filter s (CPU s) | images/s | peak RSS MB (sampled tree) | duplicates dropped | kept | "
                  "partitioned time (filter + fan-in) / unpartitioned | kept sets differ by |", "|---:" * 8 + "|"]
        for r in rows:
            if r["n"] not in baselines:
                continue
            b, f = baselines[r["n"]], r["fan_in"]
            d = b["stats"]["dropped"]
            ours = final_kept_ids(r)
            lines.append(f"| {r['n']:,} | {b['seconds']:.0f} ({b['cpu_seconds']:.0f}) | {r['n'] / b['seconds']:.0f} | "
                         f"{b['tree_peak_rss_mb']:,.0f} | {d.get('duplicate_exact', 0) + d.get('duplicate_near', 0):,} | "
                         f"{b['stats']['kept']:,} | "
                         f"{(r['filter_seconds'] + f['read_seconds'] + f['seconds']) / b['seconds']:.2f} | "
                         f"{len(ours ^ b['kept_ids']):,} ids |")
    if synthetic:
        s = synthetic
        lines += ["", f"fan_in_duplicates alone on {s['rows']:,} synthetic rows ({s['planted']:,} planted copies, "
                      f"{s['exact']:,} byte-exact): read {s['read_seconds']:.1f} s, dedup {s['seconds']:.1f} s "
                      f"({s['cpu_seconds']:.1f} CPU s), dropped "
                      f"{s['rows'] - s['kept']:,} ({s['dropped']}), peak RSS {s['peak_rss_mb']:,.0f} MB "
                      f"({s['rss_after_read_mb']:,.0f} MB after the read)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,50000,200000")
    parser.add_argument("--partition-size", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "paris-assets" / "bench-partitions")
    parser.add_argument("--baseline-sizes", default="", help="unpartitioned runs (default: the two smallest sizes)")
    parser.add_argument("--synthetic", type=int, default=11_000_000, help="fan-in rows of synthetic hashes (0: skip)")
    parser.add_argument("--bases", choices=["photos", "textures"], default="photos",
                        help="what the variants are cut from (textures need no photographs)")
    parser.add_argument("--shard-rows", type=int, default=1000, help="images per cached input tar")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-filter", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--run-fan-in", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--build-synthetic", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_filter or args.run_fan_in or args.build_synthetic:
        if args.run_filter:
            result = run_filter(args.run_filter[0], args.run_filter[1], int(args.run_filter[2]))
        elif args.run_fan_in:
            result = run_fan_in(*args.run_fan_in)
        else:
            result = build_synthetic(args.build_synthetic[0], int(args.build_synthetic[1]), args.seed)
        print(json.dumps(result))
        return result
    sizes = sorted(int(s) for s in args.sizes.split(","))
    baseline_sizes = [int(s) for s in args.baseline_sizes.split(",") if s] or sizes[:2]
    inputs = args.workdir / f"inputs-{args.bases}-seed{args.seed}-{args.shard_rows}"
    samples = ensure_inputs(inputs, max(sizes), args.shard_rows, args.seed, args.bases, args.processes)
    command = (f"python -m paris_assets.bench.partitions --sizes {args.sizes} --partition-size {args.partition_size} "
               f"--processes {args.processes} (inputs: {args.bases}, {inputs})")
    rows, baselines, synthetic = [], {}, None
    for n in sizes:  # each size's table is printed as soon as it is measured: a cut-short run still reports
        rows.append(bench_size(n, samples, args.partition_size, args.processes, args.workdir / "runs" / f"{n}"))
        if n in baseline_sizes:
            baselines[n] = bench_unpartitioned(n, samples, args.processes, args.workdir / "runs" / f"{n}-unpartitioned")
        print(f"\n{command}, so far:\n{report(rows, baselines, None, args.processes)}", flush=True)
    if args.synthetic:
        path = args.workdir / f"synthetic-v2-{args.synthetic}-seed{args.seed}.parquet"
        built = in_child(["--build-synthetic", str(path), str(args.synthetic), "--seed", str(args.seed)]) \
            if not path.exists() else None
        (args.workdir / "synthetic.txt").write_text(str(path))
        synthetic = in_child(["--run-fan-in", str(args.workdir / "synthetic.txt"), ""])
        meta = built or json.loads((args.workdir / "synthetic.json").read_text())
        (args.workdir / "synthetic.json").write_text(json.dumps(meta))
        synthetic.update(planted=meta["planted"], exact=meta["exact"])
    print(f"\n{command}\n{report(rows, baselines, synthetic, args.processes)}")
    return {"rows": rows, "baselines": baselines, "synthetic": synthetic, "samples": samples}


if __name__ == "__main__":
    main()
