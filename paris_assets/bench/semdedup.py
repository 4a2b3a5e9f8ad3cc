"""SemDeDup (lib.semdedup) against n, on features shaped like DINOv2's, with the all-pairs pass as the "before".

The features: n x D float16 unit vectors in a memory-mapped .npy, around `fine` generating centroids whose
sizes are Zipf-like (weight 1 / (rank + 20): the biggest cluster ~13x the mean), each cluster its own spread
(cosine to the centroid 0.55-0.8); `dup` of the rows are near copies of another row (cosine 0.9-1.0, a
tenth exact), and `placeholders` rows (at the largest size; a prefix holds its share) are one placeholder with
faint noise (cosine ~0.9998): one adversarial fine cluster. Rows are in random order, and the smaller sizes
are prefixes of the largest. Fine labels are the nearest generating centroid, so no k-means time is counted;
nor is generation.

Each size runs in its own process (so its peak RSS is its own): semdedup at --eps, then eps_table at the
settings' eps values, then, at --baseline-sizes only, the quadratic baseline in the same process: every pair
i < j of all n rows (no clusters), in the same blocks of the same float32 matmul. Larger sizes extrapolate the
largest measured baseline as n^2, and say so.

    python -m paris_assets.bench.semdedup [--sizes 62500,250000,1000000] [--baseline-sizes 15625,31250,62500]
                                          [--dim 1024] [--fine 1024] [--dup 0.05] [--placeholders 20000]
                                          [--eps 0.05] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from ..lib.clustering.kmeans import BLOCK, assign
from ..lib.dedup import semdedup as sd
from ..lib.store.processes import peak_rss_mb
from ..settings_sections import SemDedupSettings

EPS_TABLE = SemDedupSettings().eps_table


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def make_features(folder: Path, n: int, dim: int, fine: int, dup: float, placeholders: int, seed: int = 0) -> None:
    """Write x.npy (n, dim) float16, labels.npy (n,) and centroids.npy (fine, dim) into `folder` (module
    docstring); skipped when the folder already holds them for the same parameters."""
    params = {"n": n, "dim": dim, "fine": fine, "dup": dup, "placeholders": placeholders, "seed": seed}
    stamp = folder / "params.json"
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return
    rng = np.random.default_rng(seed)
    centroids = _unit(rng.standard_normal((fine, dim))).astype(np.float32)  # the last one: the placeholder
    weights = 1.0 / (rng.permutation(fine - 1) + 20.0)
    spread = rng.uniform(0.75, 1.5, fine)  # noise norm relative to the centroid's
    is_placeholder = np.zeros(n, bool)
    is_placeholder[rng.choice(n, min(placeholders, n), replace=False)] = True
    x = np.lib.format.open_memmap(folder / "x.npy", "w+", np.float16, (n, dim))
    labels = np.empty(n, np.int32)
    for a in range(0, n, BLOCK):
        m = min(BLOCK, n - a)
        gen = rng.choice(fine - 1, m, p=weights / weights.sum())
        gen[is_placeholder[a:a + m]] = fine - 1
        sigma = np.where(gen == fine - 1, 0.02, spread[gen])[:, None]
        block = _unit(centroids[gen] + sigma * rng.standard_normal((m, dim), np.float32) / np.sqrt(dim))
        copies = np.flatnonzero(rng.random(m) < dup)
        tau = rng.choice([0.0, 1.0], len(copies), p=[0.1, 0.9]) * rng.uniform(0, 0.5, len(copies))
        source = rng.integers(0, m, len(copies))
        noise = rng.standard_normal((len(copies), dim), np.float32) / np.sqrt(dim)
        block[copies] = _unit(block[source] + tau[:, None] * noise)
        x[a:a + m] = block
        labels[a:a + m] = assign(x[a:a + m], centroids)[0]
    x.flush()
    del x
    np.save(folder / "labels.npy", labels)
    np.save(folder / "centroids.npy", centroids)
    stamp.write_text(json.dumps(params))


class AnonPeak:
    """Peak anonymous RSS (RssAnon, sampled every 20 ms): VmHWM also counts the memory-mapped features'
    pages, which are the page cache's, not the process' own."""

    def __init__(self):
        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            with open("/proc/self/status") as fh:
                kb = next(int(line.split()[1]) for line in fh if line.startswith("RssAnon"))
            self.peak = max(self.peak, kb / 1024)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def all_pairs(x, eps: float, workers: int | None = None) -> int:
    """Pairs i < j among all rows with cosine > 1 - eps, every pair computed: the quadratic baseline, run as
    semdedup runs (blocks of SIM_BLOCK similarities, float32 matmul, blocks shared among threads each with
    single-threaded BLAS)."""
    xf = np.asarray(x, np.float32)
    n = len(xf)
    step = min(n, max(sd.MIN_ROWS, sd.SIM_BLOCK // max(n, 1)))
    threshold = np.float32(1.0 - eps)

    def block(a: int) -> int:
        s = xf[a:a + step] @ xf[a:].T
        s[np.arange(len(s)), np.arange(len(s))] = -1  # a row with itself
        return int(np.count_nonzero(np.triu(s > threshold)))

    with threadpool_limits(1), ThreadPoolExecutor(workers or len(os.sched_getaffinity(0))) as pool:
        return sum(pool.map(block, range(0, n, step)))


def range_search_vs_matmul(xc: np.ndarray, eps: float) -> tuple[float, float]:
    """Seconds for every pair of one cluster above 1 - eps, blocked as semdedup blocks, one thread each:
    faiss IndexFlatIP.range_search, then float32 matmul with a threshold."""
    import faiss

    step = min(len(xc), max(sd.MIN_ROWS, sd.SIM_BLOCK // len(xc)))
    index = faiss.IndexFlatIP(xc.shape[1])
    index.add(xc)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    t = time.perf_counter()
    for a in range(0, len(xc), step):
        index.range_search(xc[a:a + step], 1.0 - eps)
    faiss_s = time.perf_counter() - t
    faiss.omp_set_num_threads(threads)
    t = time.perf_counter()
    with threadpool_limits(1):
        for a in range(0, len(xc), step):
            np.nonzero(xc[a:a + step] @ xc.T > np.float32(1.0 - eps))
    return faiss_s, time.perf_counter() - t


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_one(folder: Path, n: int, eps: float, baseline: bool, compare: bool) -> dict:
    """One size, in this process: semdedup, eps_table, and (when asked) the baseline and the faiss
    comparison on the biggest non-placeholder cluster."""
    x = np.load(folder / "x.npy", mmap_mode="r")[:n]
    labels = np.load(folder / "labels.npy")[:n]
    centroids = np.load(folder / "centroids.npy")
    sizes = np.bincount(labels, minlength=len(centroids))
    anon = AnonPeak()
    t, cpu = time.perf_counter(), _cpu()
    result = sd.semdedup(x, labels, centroids, eps)
    out = {"n": n, "seconds": time.perf_counter() - t, "cpu_seconds": _cpu() - cpu, "peak_rss_mb": peak_rss_mb(), "peak_anon_mb": anon.stop(),
           "removed": len(result.removed), "largest": int(sizes[:-1].max()), "placeholder": int(sizes[-1])}
    t = time.perf_counter()
    out["table"] = sd.eps_table(x, labels, centroids, EPS_TABLE)
    out["table_seconds"] = time.perf_counter() - t
    if baseline:
        t = time.perf_counter()
        out["pairs"] = all_pairs(x, eps)
        out["baseline_seconds"] = time.perf_counter() - t
    if compare:
        biggest = int(np.argmax(sizes[:-1]))
        xc = np.asarray(x[np.flatnonzero(labels == biggest)], np.float32)
        out["faiss_vs_matmul"] = (len(xc), *range_search_vs_matmul(xc, eps))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="62500,250000,1000000")
    p.add_argument("--baseline-sizes", default="15625,31250,62500")
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--fine", type=int, default=1024)
    p.add_argument("--dup", type=float, default=0.05)
    p.add_argument("--placeholders", type=int, default=20000)
    p.add_argument("--eps", type=float, default=SemDedupSettings().eps)
    p.add_argument("--dir", default=None, help="keep the generated features here (reused when they match)")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # the child process: one size
    p.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--compare", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_one(Path(args.dir), args.one, args.eps, args.baseline, args.compare)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    baseline_sizes = [int(s) for s in args.baseline_sizes.split(",") if s]
    runs = sorted(set(sizes) | set(baseline_sizes))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.dir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        make_features(folder, max(runs), args.dim, args.fine, args.dup, args.placeholders)
        print(f"features: {max(runs):,} x {args.dim} float16 memmap, {args.fine} fine clusters (labels: nearest "
              f"generating centroid, no k-means timed), {args.dup:.0%} near copies, {args.placeholders:,} "
              f"placeholders at the largest size; ready in {time.perf_counter() - t:.0f} s (not counted)")
        print(f"\nsemdedup at eps={args.eps} (cosine > {1 - args.eps:g}) against all pairs; seconds (wall, and CPU "
              "of the process); each size in its own process")
        print(f"{'n':>10} {'largest':>8} {'placeh.':>8} {'semdedup':>9} {'cpu':>6} {'eps_table':>10} {'removed':>8} "
              f"{'VmHWM MB':>9} {'anon MB':>8} {'all pairs':>10}  {'speedup':>8}", flush=True)
        results: list[dict] = []
        for n in runs:
            cmd = [sys.executable, "-m", "paris_assets.bench.semdedup", "--one", str(n), "--dir", str(folder),
                   "--eps", str(args.eps)] + (["--baseline"] if n in baseline_sizes else []) + \
                  (["--compare"] if n == max(runs) else [])
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print_row(results)
    print_notes(results)


def print_row(results: list[dict]) -> None:
    """The newest result's row; its all-pairs time measured, or extrapolated from the largest measured."""
    r = results[-1]
    measured = [m for m in results if "baseline_seconds" in m]
    if "baseline_seconds" in r:
        base, how = r["baseline_seconds"], "measured"
    elif measured:
        ref = measured[-1]
        base, how = ref["baseline_seconds"] * (r["n"] / ref["n"]) ** 2, f"extrapolated from {ref['n']:,} as n^2"
    else:
        base, how = float("nan"), ""
    print(f"{r['n']:>10,} {r['largest']:>8,} {r['placeholder']:>8,} {r['seconds']:>9.2f} {r['cpu_seconds']:>6.1f} "
          f"{r['table_seconds']:>10.2f} {r['removed'] / r['n']:>8.2%} {r['peak_rss_mb']:>9.0f} "
          f"{r['peak_anon_mb']:>8.0f} {base:>10.1f}  {base / r['seconds']:>7.0f}x {how}", flush=True)


def print_notes(results: list[dict]) -> None:
    print("all pairs: every pair i < j of all n rows, no clusters; VmHWM counts the memory-mapped features' "
          "pages, anon MB does not (sampled every 20 ms)")
    last = results[-1]
    print(f"\neps_table at {last['n']:,}: " + ", ".join(f"eps {e:g}: {f:.2%}" for e, _, f in last["table"]))
    if "faiss_vs_matmul" in last:
        rows, faiss_s, matmul_s = last["faiss_vs_matmul"]
        print(f"biggest cluster ({rows:,} rows), all its pairs above 1 - eps: faiss range_search {faiss_s:.2f} s, "
              f"float32 matmul {matmul_s:.2f} s")


if __name__ == "__main__":
    main()
