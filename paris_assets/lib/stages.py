"""The model stages: batch the kept images (or captions), run a model role over them in resumable chunks,
and write the contract arrays in kept.parquet's row order. Models are passed in (any object with
`preprocess` and `__call__`), so this module needs no torch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .chunks import ChunkStore, Timer, ordered_map, run_chunks
from .crops import decode_crops, read_crop_bytes


def run_batched(store: ChunkStore, rows: Callable[[int, int], Sequence], preprocess: Callable,
                forward: Callable, batch_size: int, threads: int, log: Callable[[str], None], label: str) -> dict:
    """For each missing chunk: fetch its rows, preprocess batches in loader threads, run `forward` on each
    (timed), and save the chunk. `forward(pre, offset)` returns a dict of arrays with one row per item."""
    model_time = Timer()

    def compute_chunk(start: int, stop: int, advance: Callable[[int], None]) -> dict[str, np.ndarray]:
        items = rows(start, stop)
        batches = [(s, items[s - start:s - start + batch_size]) for s in range(start, stop, batch_size)]
        outputs = []
        for offset, pre in ordered_map(lambda b: (b[0], preprocess(b[1])), batches, threads, ahead=2 * threads):
            with model_time:
                outputs.append(forward(pre, offset))
            advance(min(batch_size, stop - offset))
        return {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}

    started = time.perf_counter()
    stats = run_chunks(store, compute_chunk, log, label)
    wall = time.perf_counter() - started
    stats.update(model_seconds=round(model_time.seconds, 3), wall_seconds=round(wall, 3),
                 model_share=round(model_time.seconds / wall, 3) if stats["rows_computed"] else None,
                 rows_per_s=round(stats["rows_computed"] / wall, 1) if stats["rows_computed"] else None)
    return stats


def run_on_crops(kept: pd.DataFrame, crops_url: str, model, forward: Callable, store: ChunkStore, batch_size: int,
                 threads: int, log: Callable[[str], None], label: str) -> dict:
    """run_batched over the kept crops: loader threads decode and preprocess, `forward(pre, offset)` runs."""
    return run_batched(store, lambda start, stop: read_crop_bytes(crops_url, kept, start, stop),
                       lambda blobs: model.preprocess(decode_crops(blobs)), forward, batch_size, threads, log, label)


def embed_images(kept: pd.DataFrame, model, store: ChunkStore, out_dir: Path, batch_size: int, threads: int,
                 crops_url: str, log=print) -> dict:
    """dinov2_embeddings: embeddings.npy (N, D) float32 L2-normalised, image_ids.npy."""
    stats = run_on_crops(kept, crops_url, model, lambda pre, _offset: {"embeddings": model(pre)}, store,
                         batch_size, threads, log, "dinov2_embeddings")
    stats["shapes"] = _finish(store, out_dir, kept, ["embeddings"])
    return stats


def encode_latents(kept: pd.DataFrame, model, store: ChunkStore, out_dir: Path, batch_size: int, threads: int,
                   crops_url: str, log=print) -> dict:
    """latents: latents.npy (N, 4, 32, 32) float16 (already scaled by the VAE's scaling_factor), image_ids.npy."""
    stats = run_on_crops(kept, crops_url, model, lambda pre, offset: {"latents": model(pre, offset=offset)}, store,
                         batch_size, threads, log, "latents")
    stats["shapes"] = _finish(store, out_dir, kept, ["latents"])
    stats.update(scaling_factor=model.scaling_factor, shift_factor=model.shift_factor)
    return stats


def caption_images(kept: pd.DataFrame, model, store: ChunkStore, out_dir: Path, batch_size: int, threads: int,
                   crops_url: str, log=print) -> dict:
    """captions.parquet from BLIP-2, falling back to the alt text where the model returns nothing."""
    stats = run_on_crops(kept, crops_url, model, lambda pre, _offset: {"captions": np.array(model(pre), dtype=np.str_)},
                         store, batch_size, threads, log, "captions")
    generated = np.concatenate([store.load(i, "captions") for i in range(store.n_chunks)]) if len(kept) else []
    table = captions_table(kept, [str(c) for c in generated])
    table.to_parquet(out_dir / "captions.parquet", index=False)
    stats["fallback_to_alt_text"] = int((table["caption_source"] == "alt_text_fallback").sum())
    return stats


def captions_table(kept: pd.DataFrame, generated: list[str] | None) -> pd.DataFrame:
    """(image_id, caption, alt_text, caption_source): generated captions where non-empty, else the alt text."""
    alt = kept["alt_text"].fillna("").astype(str).tolist()
    if generated is None:
        captions, source = alt, ["alt_text"] * len(alt)
    else:
        captions = [g if g.strip() else a for g, a in zip(generated, alt)]
        source = ["blip2" if g.strip() else "alt_text_fallback" for g in generated]
    return pd.DataFrame({"image_id": kept["image_id"].tolist(), "caption": captions, "alt_text": alt,
                         "caption_source": source})


def encode_texts(captions: pd.DataFrame, model, store: ChunkStore, out_dir: Path, batch_size: int, threads: int,
                 log=print) -> dict:
    """clip_embeddings: tokens.npy (N, 77, H) f16, pooled.npy (N, P) f16, image_ids.npy."""
    texts = captions["caption"].fillna("").astype(str).tolist()

    def forward(tokens, _offset):
        per_token, pooled = model(tokens)
        return {"tokens": per_token, "pooled": pooled}

    stats = run_batched(store, lambda start, stop: texts[start:stop], model.preprocess, forward, batch_size,
                        threads, log, "clip_embeddings")
    stats["shapes"] = _finish(store, out_dir, captions, ["tokens", "pooled"])
    return stats


def _finish(store: ChunkStore, out_dir: Path, table: pd.DataFrame, names: list[str]) -> dict[str, list[int]]:
    ids = np.array(table["image_id"].tolist(), dtype=np.str_)
    np.save(out_dir / "image_ids.npy", ids)
    shapes = {}
    for name in names:
        if len(table):
            shape, _ = store.assemble(name, out_dir / f"{name}.npy")
            shapes[name] = list(shape)
    return shapes
