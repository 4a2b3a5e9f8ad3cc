"""Training outputs: per-cluster expert shards, the held-out split, router arrays and the manifest.

An expert-shard sample, keyed by image_id: latent.npy (4, 32, 32) f16, clip.npy (P,) f16, clip_tokens.npy
(77, H) f16 (optional), txt (the caption), json (provenance and scores), jpg (optional). A clip's sample
(media: video, ShardSource.video set) holds latent.npy (C, T', h, w) f16, clip.npy, clip_tokens.npy (optional),
t5_tokens.npy (L, D) f16, t5_mask.npy (L,) bool, dinov2.npy (D,) f32 of the first frame, txt, json (the image
record plus "media": "video" and the clip's facts, VIDEO_FIELDS) and mp4 (optional). Any WebDataset reader
loads them with no code of ours. Samples are shuffled within a cluster with the run's seed, and shards are cut
at `max_samples_per_shard` samples or `max_shard_bytes` bytes, whichever comes first. Byte-identical for the
same inputs and settings.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..run.progress import Progress
from ..store.arrays import ChunkedArray, ChunkedArrayWriter
from ..store.storage import modified_stamp
from .merkle import file_sha256
from .samples import decode_sample, member_type
from .tars import TarShardWriter

TAR_OVERHEAD = 512 * 2  # header + padding per member, roughly
ROUTER_CHUNK_ROWS = 65_536  # rows a chunk of the router arrays: row r is in chunk r // 65,536 (latents: 512 MB)
# and at most 2 GiB a chunk: image latents up to 512 px keep 65,536 rows; (16, 5, 32, 32) f16 clip latents 13,107
ROUTER_CHUNK_BYTES = 2 * 2**30
READ_BLOCK_BYTES = 64 * 2**20  # rows read from the upstream arrays at once (256 shard rows of 1.9 MB T5 tokens: 480 MB)
RAW_MEMBERS = ("mp4",)  # shard members passed through as bytes: never decoded here (lib/outputs/samples knows no video)
SHARD_FOLDERS = ("expert_shards", "heldout/shards")  # every shard the manifest lists lives under these
HELDOUT_RULE = ("held out iff sha256(f'{seed}:{image_id}')[:8] / 2**64 < shards.heldout_fraction; if more than "
                "shards.heldout_max qualify, the heldout_max smallest")


def heldout_scores(image_ids, seed: int) -> np.ndarray:
    """Each image's place in [0, 1) for the held-out draw: the first 8 bytes of sha256(f"{seed}:{image_id}") read
    as a big-endian integer, over 2**64. It depends on nothing but the id and the seed."""
    ids = np.asarray(image_ids, dtype=str)
    prefix = f"{seed}:".encode()
    scores = np.empty(len(ids), np.uint64)
    for start in range(0, len(ids), 1 << 20):  # plain str hashes ~2x faster than numpy's str_; a block at a time
        block = ids[start:start + (1 << 20)].tolist()
        scores[start:start + len(block)] = np.fromiter(
            (int.from_bytes(hashlib.sha256(prefix + i.encode()).digest()[:8], "big") for i in block), np.uint64,
            len(block))
    return scores / 2.0 ** 64


def heldout_mask(image_ids, fraction: float, cap: int, seed: int) -> np.ndarray:
    """The held-out set, a boolean mask over rows: an image is held out iff its score (heldout_scores) is below
    `fraction`; when more than `cap` images qualify, only the `cap` with the smallest scores (ties by id).

    Membership depends only on the image id and the seed: not on K, the clustering, the row order or the other
    images, so a new K or a re-clustering holds out exactly the same images. While the cap does not bind, an
    image added later never changes anyone's membership. When it binds, growing the data can only lower the
    threshold: the new held-out set is a subset of the old one (some held-out images return to training), and
    no image that was trained on is ever held out later. Stratification is left to chance (each cluster gets
    about `fraction` of its images); heldout_summary reports how close it came."""
    ids = np.asarray(image_ids, dtype=str)
    mask = np.zeros(len(ids), bool)
    if fraction <= 0 or cap <= 0 or not len(ids):
        return mask
    scores = heldout_scores(ids, seed)
    candidates = np.flatnonzero(scores < fraction)
    if len(candidates) > cap:
        candidates = candidates[np.lexsort((ids[candidates], scores[candidates]))[:cap]]
    mask[candidates] = True
    return mask


def heldout_summary(labels: np.ndarray, held: np.ndarray, k: int) -> dict:
    """How far the held-out set is from stratified: per cluster its size, held-out count, the count a stratified
    draw at the overall held-out rate would give, and the share held out; the worst deviation over clusters in
    images (|held - expected|) and in share (|held/size - overall rate|)."""
    sizes = np.bincount(labels, minlength=k)
    counts = np.bincount(labels[held], minlength=k)
    rate = float(held.sum() / max(len(labels), 1))
    expected = sizes * rate
    share = np.divide(counts, sizes, out=np.zeros(k), where=sizes > 0)
    off_images = np.abs(counts - expected)
    off_share = np.where(sizes > 0, np.abs(share - rate), 0.0)
    worst = int(np.argmax(off_images)) if k else 0
    return {
        "rule": HELDOUT_RULE, "heldout": int(held.sum()), "images": len(labels), "rate": round(rate, 6),
        "per_cluster": {str(c): {"size": int(sizes[c]), "heldout": int(counts[c]),
                                 "expected": round(float(expected[c]), 2), "share": round(float(share[c]), 6)}
                        for c in range(k)},
        "worst_cluster": worst, "worst_deviation_images": round(float(off_images.max()) if k else 0.0, 2),
        "worst_deviation_share": round(float(off_share.max()) if k else 0.0, 6),
    }


def npy_bytes(array: np.ndarray) -> bytes:
    """The array as a `.npy` file's bytes, exactly what np.save writes; the header, the same for every row of an
    array, is made once per dtype and shape (np.save's own header writing was half the cost of a sample)."""
    array = np.ascontiguousarray(array)
    return _npy_header(array.dtype.str, array.shape) + array.tobytes()


@functools.lru_cache(maxsize=64)
def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.empty(shape, np.dtype(dtype)))
    return buf.getvalue()[:-int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize or None]


@dataclass
class VideoFields:
    """What a clip's sample adds to an image's (media: video), row-aligned with kept.parquet."""
    t5_tokens: np.ndarray  # (N, L, D) f16 T5 encoder states -> t5_tokens.npy
    t5_mask: np.ndarray  # (N, L) bool attention mask -> t5_mask.npy
    dinov2: np.ndarray  # (N, D) f32 DINOv2 of the first frame (the Paris 2.0 router's optional feature) -> dinov2.npy
    fps: float  # settings.video: the clip's sample rate and length, the same for every clip
    num_frames: int


# the clip's facts in a video sample's json: kept.parquet's columns (cast as given) and the two settings
VIDEO_FIELDS = {"duration": float, "source_fps": float, "window_start": float, "window_end": float, "rotation": int,
                "codec": str, "motion": float}


@dataclass
class ShardSource:
    """Everything a sample is made of, row-aligned with kept.parquet (arrays may be memory maps)."""
    kept: pd.DataFrame  # image_id, url, alt_text, aesthetic, punsafe, original_width, original_height, phash
    captions: list[str]
    labels: np.ndarray
    distances: np.ndarray
    latents: np.ndarray
    pooled: np.ndarray
    tokens: np.ndarray | None  # None: clip_tokens.npy left out
    jpg: Callable[[np.ndarray], list[bytes]] | None = None  # rows -> stored crop bytes (the mp4 for video); None: none
    video: VideoFields | None = None  # None: an image sample

    @property
    def crop_member(self) -> str:
        return "mp4" if self.video is not None else "jpg"

    def arrays(self, rows) -> dict[str, np.ndarray | None]:
        """The per-sample arrays of the given rows (an index or an index array), each read once."""
        read = lambda a: None if a is None else np.asarray(a[rows])
        out = {"latent": read(self.latents), "pooled": read(self.pooled), "tokens": read(self.tokens)}
        if self.video is not None:
            out.update(t5_tokens=read(self.video.t5_tokens), t5_mask=read(self.video.t5_mask),
                       dinov2=read(self.video.dinov2))
        return out

    def row_bytes(self) -> int:
        """Bytes of one row across the per-sample arrays: how many rows a read block holds."""
        arrays = [self.latents, self.pooled, self.tokens]
        if self.video is not None:
            arrays += [self.video.t5_tokens, self.video.t5_mask, self.video.dinov2]
        return sum(_row_bytes(a) for a in arrays if a is not None)


def _row_bytes(array) -> int:
    return int(np.prod(array.shape[1:], dtype=np.int64)) * np.dtype(array.dtype).itemsize


def sample_fields(src: ShardSource, row: int, jpg: bytes | None, arrays: dict | None = None,
                  meta: dict | None = None) -> dict[str, bytes]:
    """The tar members of one sample; `jpg` its stored crop's bytes (the mp4 for video), `arrays` (this row of
    ShardSource.arrays) and `meta` (its kept row), when the caller read them for a block of rows at once, else
    they are read here."""
    arrays = arrays or src.arrays(row)
    meta = src.kept.iloc[row].to_dict() if meta is None else meta
    record = {
        "image_id": meta["image_id"], "url": meta["url"], "alt_text": meta["alt_text"], "caption": src.captions[row],
        "aesthetic": _num(meta.get("aesthetic")), "punsafe": _num(meta.get("punsafe")),
        "width": int(meta["original_width"]), "height": int(meta["original_height"]),
        "cluster": int(src.labels[row]), "centroid_distance": round(float(src.distances[row]), 6),
        "phash": meta["phash"],
    }
    if src.video is not None:
        record.update(video_record(src.video, meta))
    # computed quality signals beside the values used (lib/quality/signals.py): present when quality_scores ran
    record.update({key: _num(meta[key]) if key.endswith("_computed") else meta[key]
                   for key in QUALITY_FIELDS if key in meta})
    fields = {"latent.npy": npy_bytes(arrays["latent"]), "clip.npy": npy_bytes(arrays["pooled"]),
              "txt": src.captions[row].encode("utf-8"), "json": json.dumps(record, sort_keys=True).encode()}
    if src.tokens is not None:
        fields["clip_tokens.npy"] = npy_bytes(arrays["tokens"])
    if src.video is not None:
        fields.update({"t5_tokens.npy": npy_bytes(arrays["t5_tokens"]), "t5_mask.npy": npy_bytes(arrays["t5_mask"]),
                       "dinov2.npy": npy_bytes(arrays["dinov2"])})
    if jpg is not None:
        fields[src.crop_member] = jpg
    return fields


def video_record(video: VideoFields, meta: dict) -> dict:
    """What a clip's json adds to an image's: "media": "video", the clip's facts from kept.parquet (None where a
    column is missing or NaN) and the clip's fps and num_frames."""
    facts = {key: _cast(meta.get(key), cast) for key, cast in VIDEO_FIELDS.items()}
    return {"media": "video", **facts, "fps": float(video.fps), "num_frames": int(video.num_frames)}


def _cast(value, cast):
    missing = value is None or (isinstance(value, float) and np.isnan(value))
    return None if missing else cast(value)


QUALITY_FIELDS = ("aesthetic_source", "aesthetic_computed", "punsafe_source", "punsafe_computed")


def _num(value):
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)


def write_shards(src: ShardSource, rows: np.ndarray, folder: Path, max_samples: int, max_bytes: int,
                 progress: Progress | None = None) -> list[dict]:
    """Write the given rows (in the given order) to folder/shard-NNNNNN.tar; returns one entry per shard:
    path (relative to folder's parent), samples, bytes, sha256, and the ids it holds."""
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[dict] = []
    fh = writer = None
    size = 0
    ids: list[str] = []

    def close() -> None:
        if writer is None:
            return
        writer.close()
        fh.close()
        path = folder / f"shard-{len(shards):06d}.tar"
        shards.append({"path": f"{folder.name}/{path.name}", "samples": writer.samples, "bytes": path.stat().st_size,
                       "sha256": file_sha256(path), "ids": list(ids)})

    block = max(1, min(256, READ_BLOCK_BYTES // max(1, src.row_bytes())))
    for start in range(0, len(rows), block):
        chunk = rows[start:start + block]
        jpgs = src.jpg(chunk) if src.jpg is not None else [None] * len(chunk)
        # each array read once per block (one call of the chunked reader for 256 rows, not 256 calls)
        block_arrays = src.arrays(chunk)
        metas = src.kept.iloc[chunk].to_dict("records")
        for i, (row, jpg) in enumerate(zip(chunk, jpgs)):
            fields = sample_fields(src, int(row), jpg, {name: None if values is None else values[i]
                                                         for name, values in block_arrays.items()}, metas[i])
            need = sum(len(v) + TAR_OVERHEAD for v in fields.values())
            if writer is not None and (writer.samples >= max_samples or size + need > max_bytes):
                close()
                writer = None
            if writer is None:
                fh = open(folder / f"shard-{len(shards):06d}.tar", "wb")
                writer, size, ids = TarShardWriter(fh), 0, []
            writer.write(str(src.kept["image_id"].iat[int(row)]), fields)
            ids.append(str(src.kept["image_id"].iat[int(row)]))
            size += need
            if progress is not None:
                progress.advance()
    close()
    return shards


def write_expert_shards(src: ShardSource, train_rows_by_cluster: list[np.ndarray], out_dir: Path, max_samples: int,
                        max_bytes: int, seed: int, log=print) -> dict:
    """cluster_<k>/shard-NNNNNN.tar for k in 0..K-1, each cluster's rows shuffled with the seed."""
    started = time.perf_counter()
    clusters = {}
    samples = sum(len(r) for r in train_rows_by_cluster)
    progress = Progress("expert_shards", samples, "samples", log)
    for k, rows in enumerate(train_rows_by_cluster):
        order = np.random.default_rng([seed, k]).permutation(rows)
        clusters[str(k)] = write_shards(src, order, out_dir / f"cluster_{k}", max_samples, max_bytes, progress)
        log(f"expert_shards: cluster {k + 1}/{len(train_rows_by_cluster)} written: {len(rows):,} samples, "
            f"{len(clusters[str(k)])} shards")
    seconds = time.perf_counter() - started
    total_bytes = sum(s["bytes"] for shards in clusters.values() for s in shards)
    return {"clusters": clusters, "samples": samples, "seconds": seconds, "bytes": total_bytes,
            "samples_per_s": samples / max(seconds, 1e-9), "mb_per_s": total_bytes / 1e6 / max(seconds, 1e-9)}


def write_router_arrays(out_dir: Path, rows: np.ndarray, src: ShardSource, dinov2: np.ndarray | ChunkedArray,
                        block: int = 8192, chunk_rows: int = ROUTER_CHUNK_ROWS) -> dict[str, list[int]]:
    """The router arrays for the given rows, row i of each the same image (or clip): latents/ (N, C, h, w), or
    (N, C, T', h, w) for clips, dinov2_embeddings/ (a clip's first frame) and clip_text_embeddings/ (pooled) as
    chunked array folders (lib/store/arrays) of `chunk_rows` rows a chunk (fewer for rows so wide a chunk would pass
    ROUTER_CHUNK_BYTES), each chunk filled `block` rows (at most READ_BLOCK_BYTES) at a time from the upstream
    arrays (never a whole array in memory); the small cluster_labels.npy and image_ids.npy as plain .npy files.
    Returns each array's shape."""
    out_dir.mkdir(parents=True, exist_ok=True)
    chunked = {"latents": src.latents, "dinov2_embeddings": dinov2, "clip_text_embeddings": src.pooled}
    shapes = {}
    for name, source in chunked.items():
        size = max(1, _row_bytes(source))
        per_chunk = max(1, min(chunk_rows, ROUTER_CHUNK_BYTES // size))
        step = max(1, min(block, READ_BLOCK_BYTES // size))
        writer = ChunkedArrayWriter(out_dir / name, per_chunk)
        for i, first in enumerate(range(0, len(rows), per_chunk)):
            part = rows[first:first + per_chunk]
            with writer.chunk(i, len(part), source.dtype, tuple(source.shape[1:])) as out:
                for start in range(0, len(part), step):
                    out[start:start + step] = source[part[start:start + step]]
        shapes[name] = writer.finish(len(rows), source.dtype, tuple(source.shape[1:]))["shape"]
    labels = np.asarray(src.labels)[rows]
    np.save(out_dir / "cluster_labels.npy", labels)
    shapes["cluster_labels"] = list(labels.shape)
    np.save(out_dir / "image_ids.npy", np.asarray(src.kept["image_id"].to_numpy()[rows], dtype=np.str_))
    return shapes


def decode_shard_sample(sample: dict, wanted: set[str] | None = None) -> dict:
    """lib/outputs/samples.decode_sample for this project's shards: every member type-checked the same way (no pickle),
    except a clip's mp4 (RAW_MEMBERS), which stays bytes when wanted (all when None) and is never decoded here."""
    raw = {name for name in sample if not name.startswith("__") and member_type(name) in RAW_MEMBERS}
    out = decode_sample({k: v for k, v in sample.items() if k not in raw}, wanted)
    out.update({name: bytes(sample[name]) for name in raw if wanted is None or name in wanted})
    return out


def manifest_entries(shards: list[dict], under: str) -> list[dict]:
    """write_shards' entries as pipeline_manifest.json lists them: the path relative to the data root (the
    folder was written as `under`), samples, bytes, sha256; the ids left out."""
    return [{**{k: v for k, v in shard.items() if k != "ids"}, "path": f"{under}/{shard['path']}"}
            for shard in shards]


def listed_shards(manifest: dict) -> list[tuple[str, dict]]:
    """(split, entry) for every shard pipeline_manifest.json promises, clusters in order then the held-out
    set: split is the cluster number or 'heldout'."""
    rows = [(str(c), s) for c, shards in sorted(manifest["clusters"].items(), key=lambda kv: int(kv[0]))
            for s in shards]
    return rows + [("heldout", s) for s in manifest["heldout"]]


def files_on_disk(root) -> dict[str, tuple[int, str]]:
    """Every file under the shard folders of a data root (a UPath), as path relative to the root -> (size in
    bytes, when modified). One listing per folder: one request per folder on an object store."""
    fs, prefix = root.fs, root.path.rstrip("/") + "/"
    found = {}
    for folder in SHARD_FOLDERS:
        try:
            listing = fs.find(prefix + folder, detail=True)
        except FileNotFoundError:
            continue
        for path, info in listing.items():
            if info.get("type") != "directory":
                rel = path.removeprefix(prefix)
                found[rel] = (int(info.get("size") or 0), modified_stamp(info))
    return found
