"""The model stages in the benchmark: images/s, share of wall time inside the model, and peak RSS.

Each measurement runs in a fresh subprocess (`python -m paris_assets.bench.models STAGE N FOLDER`) so its
peak RSS is its own. Inputs are synthetic kept images (distinct pictures, repeated under new ids to reach N).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..lib.outputs.tars import TarShardWriter
from ..lib.run import stages
from ..lib.store.chunks import ChunkStore

STAGES = ("captions", "clip_embeddings", "dinov2_embeddings", "latents")
ROLE = {"captions": "captioner", "clip_embeddings": "text_encoder", "dinov2_embeddings": "image_embedder",
        "latents": "latent_encoder"}


def make_kept(folder: Path, n: int, distinct: int = 500, per_shard: int = 1000) -> None:
    """kept.parquet + crops/ for n images: `distinct` drawn pictures, repeated under new ids."""
    import io

    from PIL import Image

    from ..lib.demo.images import THEMES, draw_theme

    rng = np.random.default_rng(0)
    blobs = []
    for i in range(min(distinct, n)):
        buf = io.BytesIO()
        Image.fromarray(draw_theme(THEMES[i % len(THEMES)], 256, 256, rng)).save(buf, "JPEG", quality=90)
        blobs.append(buf.getvalue())
    (folder / "crops").mkdir(parents=True, exist_ok=True)
    ids, shards = [], []
    fh = writer = None
    for i in range(n):
        if i % per_shard == 0:
            if writer:
                writer.close()
                fh.close()
            name = f"crops/shard-{i // per_shard:06d}.tar"
            fh = open(folder / name, "wb")
            writer = TarShardWriter(fh)
        image_id = f"{i:016x}"
        writer.write(image_id, {"jpg": blobs[i % len(blobs)]})
        ids.append(image_id)
        shards.append(name)
    writer.close()
    fh.close()
    words = "a calm sunset over the sea with golden light and soft clouds".split()
    alt = [" ".join(words[: 3 + i % 8]) for i in range(n)]
    pd.DataFrame({"image_id": ids, "alt_text": alt, "crop_shard": shards}).to_parquet(folder / "kept.parquet")


def measure(stage: str, folder: Path, settings_overrides: dict | None = None) -> dict:
    """Run one stage over folder's kept images in this process; returns rate, model share, peak RSS."""
    from ..models.profiles import build_model
    from ..settings import parse_settings

    settings = parse_settings({"data_dir": str(folder.parent / "data"), **(settings_overrides or {})})
    kept = pd.read_parquet(folder / "kept.parquet")
    model = build_model(settings, ROLE[stage])
    model.load()
    out = folder / f"out-{stage}"
    out.mkdir(exist_ok=True)
    store = ChunkStore(folder / f"work-{stage}-{time.time_ns()}", len(kept), settings.models.chunk_size)
    m, threads = settings.models, settings.models.loader_threads
    started = time.perf_counter()
    common = dict(model=model, store=store, out_dir=out, threads=threads, log=lambda s: None)
    if stage == "captions":
        stats = stages.caption_images(kept, batch_size=m.caption_batch_size, crops_url=str(folder), **common)
    elif stage == "clip_embeddings":
        stats = stages.encode_texts(stages.captions_table(kept, None), batch_size=m.text_batch_size, **common)
    elif stage == "dinov2_embeddings":
        stats = stages.embed_images(kept, batch_size=m.image_batch_size, crops_url=str(folder), **common)
    else:
        stats = stages.encode_latents(kept, batch_size=m.latent_batch_size, crops_url=str(folder), **common)
    wall = time.perf_counter() - started
    store.remove()
    return {"stage": stage, "n": len(kept), "images_per_s": len(kept) / wall, "model_share": stats["model_share"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "device": str(model.device),
            "model_id": model.ref.model_id, "revision": model.revision, "dtype": str(model.dtype).replace("torch.", "")}


def measure_in_subprocess(stage: str, n: int, workdir: Path, overrides: dict) -> dict:
    folder = workdir / f"kept-{n}"
    if not (folder / "kept.parquet").exists():
        make_kept(folder, n)
    done = subprocess.run([sys.executable, "-m", "paris_assets.bench.models", stage, str(folder), json.dumps(overrides)],
                          capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE=os.environ.get(
                              "HF_HUB_OFFLINE", "1")))
    if done.returncode != 0:
        raise RuntimeError(f"{stage} benchmark failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_models(small: int, large: int, rss_stages: tuple[str, ...], overrides: dict) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for stage in STAGES:
            result = measure_in_subprocess(stage, small, workdir, overrides)
            if stage in rss_stages:
                big = measure_in_subprocess(stage, large, workdir, overrides)
                result["peak_rss_large_mb"] = big["peak_rss_mb"]
                result["rss_ratio"] = big["peak_rss_mb"] / result["peak_rss_mb"]
                result["large_n"] = large
            rows.append(result)
    return rows


if __name__ == "__main__":
    stage_name, kept_folder, overrides_json = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    print(json.dumps(measure(stage_name, kept_folder, json.loads(overrides_json))))
