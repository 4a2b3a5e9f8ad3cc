"""`make bench`: throughput per stage, each beside a baseline measured in the same run (timings here are noisy;
ratios are what to compare). Never a pass/fail on time.

    python -m paris_assets.bench [--images 2000] [--hashes 1000000] [--processes 2]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from ..lib.dedup import phash as dedup
from ..lib.images.filtering import FilterParams, filter_images
from ..lib.outputs.tars import TarShardWriter, iter_samples


def write_raw_shards(folder: Path, blobs: list[bytes], per_shard: int = 250) -> pd.DataFrame:
    """The blobs in raw_images-style tars, and the samples table that lists them."""
    rows = []
    for first in range(0, len(blobs), per_shard):
        shard = folder / f"{first // per_shard:05d}.tar"
        with open(shard, "wb") as fh, TarShardWriter(fh) as writer:
            for i in range(first, min(first + per_shard, len(blobs))):
                key = f"{i:09d}"
                writer.write(key, {"jpg": blobs[i]})
                rows.append({"image_id": f"{i:016x}", "url": f"bench://{i}", "alt_text": "x", "caption_problem": "",
                             "aesthetic": 6.0, "punsafe": 0.0, "pwatermark": 0.0, "similarity": 0.3,
                             "status": "success", "error_message": None, "shard": str(shard), "key": key})
    return pd.DataFrame(rows)


def naive_filter(data: bytes) -> tuple:
    """The seed pipeline's way: full decode, imagehash pHash of the whole image, ImageOps.fit, numpy std,
    JPEG encode, one image at a time."""
    import imagehash

    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    phash = str(imagehash.phash(image))
    crop = ImageOps.fit(image, (256, 256), Image.LANCZOS)
    blank = np.asarray(crop).astype(np.float64).std() < 2
    out = io.BytesIO()
    crop.save(out, "JPEG", quality=95)
    return phash, blank


def naive_shard(shard: str) -> int:
    """naive_filter over every sample of one raw tar, read by the worker itself as filter_images' workers do."""
    with open(shard, "rb") as fh:
        return sum(1 for _key, fields in iter_samples(fh) if naive_filter(fields["jpg"]))


def bench_filter(n: int, processes: int) -> dict:
    """filter_images on LAION-like JPEGs made from real photographs, beside the naive filter on the same tars with
    the same number of processes."""
    from .photos import laion_like, load_photo, photo_paths

    photos = [load_photo(p) for p in photo_paths()]
    blobs = laion_like(photos, n)
    megapixels = np.mean([np.prod(Image.open(io.BytesIO(b)).size) for b in blobs]) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "raw").mkdir()
        samples = write_raw_shards(tmp / "raw", blobs)
        cpu = _cpu_seconds()
        stats = filter_images(samples, str(tmp / "out"), FilterParams(), processes=processes, log=lambda m: None)
        cpu = _cpu_seconds() - cpu
        started, naive_cpu = time.perf_counter(), _cpu_seconds()
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            pool.map(naive_shard, samples["shard"].unique().tolist(), chunksize=1)
        naive_rate, naive_cpu = n / (time.perf_counter() - started), _cpu_seconds() - naive_cpu
    steps = filter_breakdown(blobs[:500])
    split = ", ".join(f"{name} {ms:.2f}" for name, ms in steps.items())
    return {"stage": f"filtered_images ({n} LAION-like photos, {processes} proc)", "rate": stats["images_per_s"],
            "unit": "images/s", "baseline": f"naive PIL+imagehash, {processes} proc: {naive_rate:.0f}/s",
            "ratio": stats["images_per_s"] / naive_rate, "target": ">= 500 images/s",
            "note": f"mean {megapixels:.2f} MP, {len(photos)} photographs; kept {stats['kept']}/{n}; per CPU-second "
                    f"(what a shared machine cannot take away): {n / cpu:.0f} vs naive {n / naive_cpu:.0f} images; "
                    f"CPU ms per image in one process: {split} (sum {sum(steps.values()):.2f})"}


def filter_breakdown(blobs: list[bytes], params: FilterParams = FilterParams()) -> dict[str, float]:
    """CPU milliseconds per image of each step of process_image (the same calls, timed one by one), in this one
    process with OpenCV on one thread as in the workers: where the filter's time goes."""
    import cv2

    from ..lib.images import decode as images

    cv2.setNumThreads(1)
    steps = {"decode": 0.0, "crop": 0.0, "blank": 0.0, "phash": 0.0, "sha256": 0.0, "encode": 0.0}
    timed = 0
    for data in blobs:
        t0 = time.process_time()
        try:
            decoded = images.decode_image(data, params.max_image_pixels, params.min_side, params.max_aspect,
                                          draft_size=params.image_size)
        except images.Rejected:
            continue  # a refused file does none of the later steps: the split is of images that pass
        timed += 1
        t1 = time.process_time()
        crop = images.square_crop(decoded.pixels, params.image_size, params.resize_mode)
        t2 = time.process_time()
        images.is_blank(images.crop_thumbnail(crop), params.blank_std)
        t3 = time.process_time()
        images.image_phash(decoded.pixels)
        t4 = time.process_time()
        hashlib.sha256(data).hexdigest()
        t5 = time.process_time()
        images.encode_jpeg(crop, params.jpeg_quality)
        t6 = time.process_time()
        for name, (a, b) in zip(steps, [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6)]):
            steps[name] += b - a
    return {name: 1000 * seconds / max(timed, 1) for name, seconds in steps.items()}


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bench_near_duplicates(n: int, radius: int = FilterParams().phash_max_distance, planted: int = 1000,
                          subsample: int = 20000, placeholders: int = 20000) -> dict:
    """group_near_duplicates over n random hashes holding `planted` near pairs and `placeholders` hashes within
    1 bit of one value (issue #10's dense case; python -m paris_assets.bench.dedup times real pHashes)."""
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, np.iinfo(np.int64).max, n, dtype=np.int64).astype(np.uint64)
    hashes |= rng.integers(0, 2, n).astype(np.uint64) << np.uint64(63)
    placeholders = min(placeholders, n // 4)
    sources = rng.choice(n // 2 - placeholders, planted, replace=False)
    targets = n // 2 + sources
    for s, t in zip(sources, targets):
        flips = rng.choice(64, size=rng.integers(1, radius + 1), replace=False)
        hashes[t] = hashes[s] ^ np.uint64(sum(1 << int(b) for b in flips))
    one_bit = np.uint64(1) << rng.integers(0, 64, placeholders).astype(np.uint64)
    hashes[n // 2 - placeholders:n // 2] = hashes[0] ^ np.where(rng.random(placeholders) < 0.5, one_bit, 0)
    started = time.perf_counter()
    rep = dedup.group_near_duplicates(hashes, radius)
    seconds = time.perf_counter() - started
    missed = int((rep[sources] != rep[targets]).sum())
    started = time.perf_counter()
    dedup.near_pairs_bruteforce(hashes[:subsample], radius)
    brute = (time.perf_counter() - started) * (n / subsample) ** 2  # all-pairs work grows with n^2
    return {"stage": f"near-duplicate groups ({n:,} x 64-bit, radius {radius})", "rate": n / seconds,
            "unit": "hashes/s", "baseline": f"all-pairs {brute:.0f} s (timed on {subsample:,}, x(n/m)^2)",
            "ratio": brute / seconds, "target": "< 10 s, every planted pair grouped",
            "note": f"{seconds:.1f} s; planted pairs grouped {planted - missed}/{planted}, "
                    f"{placeholders:,} placeholders in {len(np.unique(rep[n // 2 - placeholders:n // 2]))} group(s)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--hashes", type=int, default=1_000_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--model-images", type=int, default=2000, help="images per model stage")
    parser.add_argument("--rss-images", type=int, default=20000, help="the larger run for the peak-RSS ratio")
    parser.add_argument("--rss-stages", default="captions,clip_embeddings,dinov2_embeddings",
                        help="stages whose peak RSS is compared at both sizes ('all' adds latents, ~7 min on CPU)")
    parser.add_argument("--profile", choices=["tiny", "paris"], default="tiny",
                        help="paris runs the real models (on a CUDA machine, fp16)")
    parser.add_argument("--only", choices=["filter", "models", "clustering", "shards", "quality", "semdedup", "video"],
                        default=None)
    parser.add_argument("--shard-samples", type=int, default=20000)
    args = parser.parse_args(argv)
    if args.only in (None, "clustering"):
        from .clustering import bench_clustering

        print()
        for row in bench_clustering():
            print(f"{row['stage']}\n    {row['value']} | baseline {row['baseline']} ({row['ratio']:.1f}x) | "
                  f"target {row['target']} | {row['note']}")
    if args.only in (None, "shards"):
        from .shards import bench_shards

        r = bench_shards(args.shard_samples)
        print(f"\nexpert_shards ({r['n']:,} samples, clip tokens 77x768 on): write {r['write_samples_per_s']:,.0f} "
              f"samples/s ({r['write_mb_per_s']:,.0f} MB/s), read back with plain webdataset "
              f"{r['read_samples_per_s']:,.0f} samples/s ({r['read_mb_per_s']:,.0f} MB/s), peak RSS "
              f"{r['peak_rss_mb']:,.0f} MB | target >= 1,000 samples/s written")
        print(f"shard browser index (header-only scan, the same shards): {r['index_samples_per_s']:,.0f} samples/s, "
              f"{r['index_samples_per_s'] / r['read_samples_per_s']:.1f}x reading them with webdataset")
    if args.only in (None, "filter"):
        rows = [bench_filter(args.images, args.processes), bench_near_duplicates(args.hashes)]
        print(f"\n{'stage':<52} {'throughput':>18}  {'x baseline':>10}  baseline / target / note")
        for row in rows:
            print(f"{row['stage']:<52} {row['rate']:>10,.0f} {row['unit']:<8} {row['ratio']:>9.1f}x  "
                  f"{row['baseline']} | target {row['target']} | {row['note']}")
    if args.only in (None, "quality"):
        from .quality import main as bench_quality

        print()
        bench_quality([])
    if args.only in (None, "semdedup"):
        from .semdedup import main as bench_semdedup

        print()
        bench_semdedup([])
    if args.only in (None, "video"):
        from .video import main as bench_video

        print()
        bench_video(["--processes", str(args.processes)])
    if args.only in (None, "models"):
        from .models import STAGES, bench_models

        rss = STAGES if args.rss_stages == "all" else tuple(s for s in args.rss_stages.split(",") if s)
        overrides = {"models": {"profile": args.profile}, "captions": {"min_new_tokens": 8, "max_new_tokens": 20}}
        rows = bench_models(args.model_images, args.rss_images, rss, overrides)
        print(f"\n{'model stage (' + args.profile + ')':<22} {'images/s':>9} {'model share':>12} {'peak RSS':>10} "
              f"{'peak RSS @' + str(args.rss_images):>18} {'ratio':>6}  device / model (target share >= 0.8, "
              "ratio <= 1.5)")
        for r in rows:
            big = f"{r['peak_rss_large_mb']:,.0f} MB" if "peak_rss_large_mb" in r else "-"
            ratio = f"{r['rss_ratio']:.2f}" if "rss_ratio" in r else "-"
            print(f"{r['stage']:<22} {r['images_per_s']:>9,.1f} {r['model_share']:>12.2f} {r['peak_rss_mb']:>7,.0f} MB "
                  f"{big:>18} {ratio:>6}  {r['device']} / {Path(r['model_id']).name if '/' in r['model_id'] else r['model_id']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
