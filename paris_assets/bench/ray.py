"""The ray engine beside the local one on the same tiny data: latents and dinov2_embeddings (tiny profile, CPU) on
a local Ray with two logical GPUs, 1 and 2 workers; start-up and work timed apart, outputs compared byte for byte.

    python -m paris_assets.bench.ray [--images 320] [--chunk 32]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path

import pandas as pd

from ..engines import ray as ray_engine
from ..lib.run import stages
from ..lib.store.chunks import ChunkStore
from ..models.profiles import build_model, load_model
from ..settings import parse_settings
from .models import make_kept

STAGES = {"latents": ("latent_encoder", stages.encode_latents, 16, "latents"),
          "dinov2_embeddings": ("image_embedder", stages.embed_images, 64, "embeddings")}


def bench_ray(n: int, chunk: int, log=print) -> list[dict]:
    root = Path(tempfile.mkdtemp(prefix="raybench-"))
    make_kept(root / "filtered", n, distinct=min(n, 200), per_shard=256)
    kept = pd.read_parquet(root / "filtered" / "kept.parquet")
    settings = parse_settings({"data_dir": str(root / "data"), "models": {"device": "cpu", "chunk_size": chunk}},
                              base_dir=root)
    build_model(settings, "latent_encoder")  # the tiny models, built once before any worker loads them

    def run(name: str, model, tag: str) -> tuple[float, dict, bytes]:
        _role, stage, batch_size, array = STAGES[name]
        out = root / f"{name}-{tag}"
        out.mkdir()
        store = ChunkStore(root / f"{name}-{tag}-chunks", len(kept), chunk)
        started = time.perf_counter()
        stats = stage(kept, model=model, store=store, out_dir=out, batch_size=batch_size, threads=2,
                      crops_url=str(root / "filtered"), log=lambda m: None)
        # the chunked array folder's files (index.json and chunks, in name order) as one byte string
        return time.perf_counter() - started, stats, b"".join(p.read_bytes() for p in sorted((out / array).iterdir()))

    rows = []
    with ray_engine.ray_session("", num_cpus=2, num_gpus=2, object_store_mb=200, log=lambda m: None):
        for name, (role, *_rest) in STAGES.items():
            started = time.perf_counter()
            model = load_model(settings, role)
            local_load = time.perf_counter() - started
            run(name, model, "warm")  # first call: lazy imports, page cache, thread pools
            local_s, _stats, local_bytes = run(name, model, "local")
            for workers in (1, 2):
                started = time.perf_counter()
                pool = ray_engine.ModelPool(partial(load_model, settings, role), workers=workers,
                                            log=lambda m: None).wait_until_ready()
                startup = time.perf_counter() - started
                ray_s, ray_stats, ray_bytes = run(name, pool, f"ray{workers}")
                pool.close()
                rows.append({"stage": name, "images": n, "chunks": -(-n // chunk), "workers": workers,
                             "local_s": round(local_s, 2), "ray_startup_s": round(startup, 2), "ray_s": round(ray_s, 2),
                             "speedup_work_only": round(local_s / ray_s, 2),
                             "speedup_with_startup": round((local_load + local_s) / (startup + ray_s), 2),
                             "overhead_per_chunk_s": ray_stats["overhead_per_chunk_s"],
                             "identical": ray_bytes == local_bytes})
                log(json.dumps(rows[-1]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--chunk", type=int, default=32)
    args = parser.parse_args(argv)
    bench_ray(args.images, args.chunk)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
