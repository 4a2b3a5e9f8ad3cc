"""expert_shards at scale: writing and reading throughput with clip tokens on (real widths: 77x768), and the
peak RSS of writing 20,000 samples (memory-mapped inputs; each run in its own subprocess)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..lib.outputs.shards import ShardSource, manifest_entries, write_expert_shards


def make_inputs(folder: Path, n: int, k: int = 8, width: int = 768) -> None:
    rng = np.random.default_rng(0)
    specs = {"latents": (n, 4, 32, 32), "pooled": (n, width), "tokens": (n, 77, width)}
    for name, shape in specs.items():
        out = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.float16, shape=shape)
        for start in range(0, n, 2048):
            out[start:start + 2048] = rng.standard_normal((min(2048, n - start),) + shape[1:]).astype(np.float16)
        out.flush()
        del out
    np.save(folder / "labels.npy", rng.integers(0, k, n).astype(np.int32))
    ids = [f"{i:016x}" for i in range(n)]
    pd.DataFrame({"image_id": ids, "url": [f"http://example.com/{i}.jpg" for i in range(n)], "alt_text": "a photo",
                  "aesthetic": 6.0, "punsafe": 0.01, "original_width": 512, "original_height": 384,
                  "phash": "0123456789abcdef"}).to_parquet(folder / "kept.parquet")


def write_and_read(folder: Path) -> dict:
    kept = pd.read_parquet(folder / "kept.parquet")
    labels = np.load(folder / "labels.npy")
    load = lambda name: np.load(folder / f"{name}.npy", mmap_mode="r")  # noqa: E731
    src = ShardSource(kept=kept, captions=["a photo of something"] * len(kept), labels=labels,
                      distances=np.zeros(len(kept), np.float32), latents=load("latents"), pooled=load("pooled"),
                      tokens=load("tokens"))
    k = int(labels.max()) + 1
    out = folder / "data" / "expert_shards"
    stats = write_expert_shards(src, [np.flatnonzero(labels == c) for c in range(k)], out, 1000,
                                256 * 2**20, seed=0, log=lambda m: None)
    import webdataset as wds

    from ..lib.outputs.shard_index import build_index

    urls = sorted(str(p) for p in out.rglob("*.tar"))
    started = time.perf_counter()
    count = sum(1 for _ in wds.WebDataset(urls, shardshuffle=False).decode())
    read_s = time.perf_counter() - started
    manifest = {"clusters": {c: manifest_entries(shards, "expert_shards") for c, shards in stats["clusters"].items()},
                "heldout": []}
    (folder / "data" / "pipeline_manifest.json").write_text(json.dumps(manifest))
    started = time.perf_counter()
    indexed = len(build_index(str(folder / "data")).samples)  # the shard browser's start-up
    index_s = time.perf_counter() - started
    return {"n": len(kept), "write_samples_per_s": stats["samples_per_s"], "write_mb_per_s": stats["mb_per_s"],
            "read_samples_per_s": count / read_s, "read_mb_per_s": stats["bytes"] / 1e6 / read_s,
            "index_samples_per_s": indexed / index_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bench_shards(n: int = 20_000) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_inputs(folder, n)
        done = subprocess.run([sys.executable, "-m", "paris_assets.bench.shards", str(folder)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(write_and_read(Path(sys.argv[1]))))
