"""What the quality heads cost next to the CLIP image tower they read: `python -m paris_assets.bench.quality`.

The tower is CLIP ViT-L/14's image tower at its real size (24 layers, width 1024, 224 px, projection 768),
random-initialised (the weights cannot be downloaded here; the arithmetic is the same), saved and loaded through
ClipImageEncoder like the real checkpoint. The heads are LAION's two, at their real shapes, scoring the
embeddings that tower produced, in the same process with the same threads. Prints images/s of each and the heads'
share of clip_image_embeddings' time (the issue's target: under 5 %), then the heads alone over 1M embeddings.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..models import heads
from ..models.clip_image_encoder import ClipImageEncoder
from ..models.common import ModelRef


def build_vit_l14(folder: Path) -> None:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=224, patch_size=14, projection_dim=768)
    CLIPVisionModelWithProjection(config).eval().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(folder)


def measure(n: int, batch: int, big: int) -> dict:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 256, 256, 3), dtype=np.uint8)  # crops as filtered_images stores them
    with tempfile.TemporaryDirectory() as tmp:
        build_vit_l14(Path(tmp) / "clip")
        encoder = ClipImageEncoder(ModelRef(str(Path(tmp) / "clip")), device="cpu", dtype="float32").load()
        encoder(images[:2])  # warm-up
        started = time.perf_counter()
        embeddings = np.concatenate([encoder(images[i:i + batch]) for i in range(0, n, batch)])
        clip_s = time.perf_counter() - started
    loaded = [heads.tiny_head("aesthetic", 0), heads.tiny_head("nsfw", 0)]  # the real classes and shapes
    for head in loaded:
        heads.score(head, embeddings[:2])  # warm-up
    started = time.perf_counter()
    for head in loaded:
        heads.score(head, embeddings)
    heads_s = time.perf_counter() - started
    many = np.repeat(embeddings, -(-big // n), axis=0)[:big]
    started = time.perf_counter()
    for head in loaded:
        heads.score(head, many)
    big_s = time.perf_counter() - started
    return {"n": n, "clip_s": clip_s, "heads_s": heads_s, "share": heads_s / clip_s,
            "big": big, "big_s": big_s, "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--big", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    r = measure(args.images, args.batch, args.big)
    print(f"torch threads: {r['threads']}, {r['n']} images of 256 px")
    print(f"clip_image_embeddings (ViT-L/14 image tower, CPU float32): {r['clip_s']:.1f} s, "
          f"{r['n'] / r['clip_s']:.2f} images/s")
    print(f"aesthetic + NSFW heads on those embeddings: {r['heads_s'] * 1e3:.1f} ms, "
          f"{r['n'] / r['heads_s']:,.0f} images/s")
    print(f"heads' share of clip_image_embeddings' time: {100 * r['share']:.3f} % (target < 5 %)")
    print(f"heads alone over {r['big']:,} embeddings: {r['big_s']:.1f} s, {r['big'] / r['big_s']:,.0f} images/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
