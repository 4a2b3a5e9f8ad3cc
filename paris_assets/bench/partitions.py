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

The inputs are partition_inputs.py's; this module runs the partitions, the fan-in and the report.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from ..lib.images.filtering import fan_in_duplicates, filter_raw_folder
from ..lib.images.units import FilterParams
from ..lib.store.processes import peak_rss_mb
from .partition_inputs import build_synthetic, ensure_inputs, write_raw_folder
from .partition_inputs import (  # noqa: F401  (importable from here, as before)
    BASES, FIRST_PLAIN, SHARES, bases, placeholder_tile, recipe, row_jpeg, row_kind, row_pixels, row_source)

FAN_IN_COLUMNS = ["image_id", "phash", "sha256", "original_width", "original_height"]


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
