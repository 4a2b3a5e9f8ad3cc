"""The model stages: batch the kept images (or captions), run a model role over them in resumable chunks,
and write the contract arrays in kept.parquet's row order. Models are passed in (any object with
`preprocess` and `__call__`), so this module needs no torch.

Each stage is one `BatchedJob`: what chunk [start, stop) is, given a model. The job holds no model, so it is
the same whether the model was loaded in this process (the local engine) or a Ray `ModelPool` stands in for it
and each of its workers runs the job with its own copy (engines/ray.py): one implementation per stage, and
the engine only decides where each chunk is computed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import pandas as pd

from ..store.arrays import link_chunk_store
from ..store.chunks import ChunkStore, Timer, ordered_map, run_chunks
from .crops import KEYFRAMES, decode_clips, decode_crops, decode_first_frames, decode_keyframes, read_crop_bytes


@dataclass
class BatchedJob:
    """One stage's work on a chunk: fetch its rows, preprocess batches in loader threads ahead of the model,
    run `forward(model, pre, offset)` on each (timed), concatenate. Picklable: every callable is a module-level
    function or a partial of one (the rows reader carries the kept table or the captions, not a model)."""

    rows: Callable[[int, int], Sequence]  # (start, stop) -> the chunk's items (crop bytes, captions)
    preprocess: Callable[[Any, Sequence], Any]  # (model, items) -> the model's input; runs in a loader thread
    forward: Callable[[Any, Any, int], dict[str, np.ndarray]]  # (model, input, row offset) -> one row per item
    batch_size: int
    threads: int
    model_time: Timer = field(default_factory=Timer)

    def __call__(self, model, start: int, stop: int, advance: Callable[[int], None] = lambda rows: None
                 ) -> dict[str, np.ndarray]:
        items = self.rows(start, stop)
        batches = [(s, items[s - start:s - start + self.batch_size]) for s in range(start, stop, self.batch_size)]
        outputs = []
        for offset, pre in ordered_map(lambda b: (b[0], self.preprocess(model, b[1])), batches, self.threads,
                                       ahead=2 * self.threads):
            with self.model_time:
                outputs.append(self.forward(model, pre, offset))
            advance(min(self.batch_size, stop - offset))
        return {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}


@runtime_checkable
class ChunkEngine(Protocol):
    """Stands in for a model and computes chunks elsewhere (engines/ray.ModelPool)."""

    def run_chunks(self, store: ChunkStore, job: BatchedJob, log: Callable[[str], None], label: str) -> dict: ...


def run_batched(store: ChunkStore, job: BatchedJob, model, log: Callable[[str], None], label: str) -> dict:
    """Every missing chunk of `store` by `job`: with `model` here (a loaded model: the local engine), or on the
    workers of `model` when it is a ChunkEngine. Adds the time spent in the model and the rate to the counts."""
    started = time.perf_counter()
    if isinstance(model, ChunkEngine):
        stats = model.run_chunks(store, job, log, label)
    else:
        stats = run_chunks(store, partial(job, model), log, label)
        stats.update(engine="local", workers=1, model_seconds=job.model_time.seconds)
    wall = time.perf_counter() - started
    # The share of the workers' time spent inside the model: 1.0 means the loaders kept every model busy.
    busy = wall * stats["workers"]
    stats.update(model_seconds=round(stats["model_seconds"], 3), wall_seconds=round(wall, 3),
                 model_share=round(min(stats["model_seconds"] / busy, 1.0), 3) if stats["rows_computed"] else None,
                 rows_per_s=round(stats["rows_computed"] / wall, 1) if stats["rows_computed"] else None)
    return stats


def crop_job(kept: pd.DataFrame, crops_url: str, forward: Callable, batch_size: int, threads: int,
             decode: Callable[[list[bytes]], np.ndarray] = decode_crops) -> BatchedJob:
    """A job over the kept crops (or clips): loader threads read, `decode` and preprocess them, `forward` runs the
    model. It carries only the two columns the reader needs: the job travels to every Ray worker."""
    where = kept[["image_id", "crop_shard"]]
    return BatchedJob(partial(read_crop_bytes, crops_url, where), partial(_preprocess_crops, decode), forward,
                      batch_size, threads)


# media: video: what an image model sees of each stored clip (video.embed_frames), and what the video VAE sees
FRAMES = {"first": decode_first_frames, "keyframes": decode_keyframes, "clip": decode_clips}


def _preprocess_crops(decode, model, blobs: list[bytes]):
    return model.preprocess(decode(blobs))


def _preprocess(model, items):
    return model.preprocess(items)


def _embed(model, pre, _offset: int) -> dict[str, np.ndarray]:
    return {"embeddings": model(pre)}


def _embed_keyframes(model, pre, _offset: int) -> dict[str, np.ndarray]:
    """Three keyframes a clip in, one embedding a clip out: the mean of its keyframes' unit vectors, normalised."""
    per_frame = np.asarray(model(pre))
    mean = per_frame.astype(np.float32).reshape(-1, KEYFRAMES, per_frame.shape[-1]).mean(axis=1)
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return {"embeddings": mean.astype(per_frame.dtype)}


def _encode_latents(model, pre, offset: int) -> dict[str, np.ndarray]:
    return {"latents": model(pre, offset=offset)}


def _caption(model, pre, _offset: int) -> dict[str, np.ndarray]:
    return {"captions": np.array(model(pre), dtype=np.str_)}


def _encode_texts(model, tokens, _offset: int) -> dict[str, np.ndarray]:
    per_token, pooled = model(tokens)
    return {"tokens": per_token, "pooled": pooled}


def _slice(items: Sequence, start: int, stop: int) -> Sequence:
    return items[start:stop]


def embed_images(kept: pd.DataFrame, model, store: ChunkStore, out_dir: Path, batch_size: int, threads: int,
                 crops_url: str, log=print, label: str = "dinov2_embeddings", frames: str | None = None) -> dict:
    """dinov2_embeddings (or clip_image_embeddings): embeddings/ (N, D) L2-normalised, a chunked array folder;
    image_ids.npy. `frames` (media: video): "first" embeds each clip's first frame, "keyframes" the normalised
    mean over its first, middle and last."""
    if frames is None:
        job = crop_job(kept, crops_url, _embed, batch_size, threads)
    else:
        job = crop_job(kept, crops_url, _embed_keyframes if frames == "keyframes" else _embed, batch_size, threads,
                       decode=FRAMES[frames])
    stats = run_batched(store, job, model, log, label)
    stats["shapes"] = _finish(store, out_dir, kept, ["embeddings"])
    return stats


def encode_latents(kept: pd.DataFrame, model, store: ChunkStore, out_dir: Path, batch_size: int, threads: int,
                   crops_url: str, log=print, clips: bool = False) -> dict:
    """latents: latents/ (N, 4, 32, 32) float16, already scaled by the VAE's scaling_factor, a chunked array
    folder; image_ids.npy. With `clips` (media: video) the stored clips go whole through the video VAE: (N, C,
    (T-1)/4+1, S/8, S/8)."""
    job = crop_job(kept, crops_url, _encode_latents, batch_size, threads, decode=decode_clips if clips else decode_crops)
    stats = run_batched(store, job, model, log, "latents")
    stats["shapes"] = _finish(store, out_dir, kept, ["latents"])
    stats.update(scaling_factor=model.scaling_factor, shift_factor=model.shift_factor)
    return stats


def caption_images(kept: pd.DataFrame, model, store: ChunkStore, out_dir: Path, batch_size: int, threads: int,
                   crops_url: str, log=print) -> dict:
    """captions.parquet from BLIP-2, falling back to the alt text where the model returns nothing."""
    stats = run_batched(store, crop_job(kept, crops_url, _caption, batch_size, threads), model, log, "captions")
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
    """clip_embeddings: tokens/ (N, 77, H) f16 and pooled/ (N, P) f16, chunked array folders; image_ids.npy."""
    texts = captions["caption"].fillna("").astype(str).tolist()
    job = BatchedJob(partial(_slice, texts), _preprocess, _encode_texts, batch_size, threads)
    stats = run_batched(store, job, model, log, "clip_embeddings")
    stats["shapes"] = _finish(store, out_dir, captions, ["tokens", "pooled"])
    return stats


def _encode_t5(model, tokens, _offset: int) -> dict[str, np.ndarray]:
    states, mask = model(tokens)
    return {"t5_tokens": states, "t5_mask": mask}


def encode_t5(captions: pd.DataFrame, model, store: ChunkStore, out_dir: Path, batch_size: int, threads: int,
              log=print) -> dict:
    """media: video, beside encode_texts in clip_embeddings: t5_tokens/ (N, L, D) f16 (zeros at padding) and
    t5_mask/ (N, L) bool, chunked array folders; image_ids.npy (the same)."""
    texts = captions["caption"].fillna("").astype(str).tolist()
    job = BatchedJob(partial(_slice, texts), _preprocess, _encode_t5, batch_size, threads)
    stats = run_batched(store, job, model, log, "clip_embeddings (T5)")
    stats["shapes"] = _finish(store, out_dir, captions, ["t5_tokens", "t5_mask"])
    return stats


def _finish(store: ChunkStore, out_dir: Path, table: pd.DataFrame, names: list[str]) -> dict[str, list[int]]:
    """image_ids.npy, and each array `name` as a chunked array folder `<name>/` whose chunks are the store's own
    files, hard-linked (lib/store/arrays.link_chunk_store): nothing is copied or assembled (CLIP tokens at 11M images
    are 1.3 TB), and the links outlive the store's removal."""
    ids = np.array(table["image_id"].tolist(), dtype=np.str_)
    np.save(out_dir / "image_ids.npy", ids)
    if not len(table):
        return {}
    return {name: link_chunk_store(store, name, out_dir / name)["shape"] for name in names}
