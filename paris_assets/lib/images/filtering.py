"""filtered_images: decode each downloaded image once, refuse what must not be trained on, drop duplicates.

Work runs in parallel in work units (up to `chunk_size` images of one raw shard). Each unit decodes its
images once, runs every per-image check, and writes the crops of the images that pass to its own crop
shard. Duplicates are then found across the whole data set, so a crop shard may also hold crops of images
that lost to a duplicate: kept.parquet (its `crop_shard` column) is the list of what is kept. Reading the
crop shards in order, keeping the kept ids, gives kept.parquet's row order.

Output folder: kept.parquet, rejected.parquet (image_id, url, reason, detail), crops/shard-NNNNNN.tar.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

import fsspec
import numpy as np
import pandas as pd

from ..dedup import phash as dedup
from ..quality.captions import caption_rejections
from ..run.pool import map_in_processes
from ..run.progress import Progress
from .units import FilterParams, process_unit_args

KEPT_COLUMNS = ["image_id", "url", "alt_text", "aesthetic", "punsafe", "pwatermark", "original_width",
                "original_height", "similarity", "format", "frames", "sha256", "phash", "crop_shard"]
REJECTED_COLUMNS = ["image_id", "url", "reason", "detail"]


def pre_decode_rejections(samples: pd.DataFrame, params: FilterParams) -> tuple[pd.Series, pd.Series]:
    """Reason per row ('' to go on) decided from metadata alone: failed download, caption, LAION flags, and the
    caption filters (lib/quality/captions) on the alt text of the rows still going on."""
    reason = pd.Series("", index=samples.index, dtype=object)
    detail = pd.Series("", index=samples.index, dtype=object)

    def mark(mask: pd.Series, why: str, what: pd.Series | str) -> None:
        fresh = mask & (reason == "")
        reason[fresh] = why
        detail[fresh] = what[fresh] if isinstance(what, pd.Series) else what

    mark(samples["status"] != "success", "download_failed", samples["error_message"].fillna("").astype(str))
    if params.require_caption:
        problem = samples["caption_problem"].fillna("").astype(str)
        mark(problem.str.startswith("missing_caption"), "missing_caption", "no alt text in the source")
        mark(problem.str.startswith("caption_not_utf8"), "caption_not_utf8", problem.str.partition(":")[2])
    punsafe = pd.to_numeric(samples["punsafe"], errors="coerce")
    mark(punsafe > params.max_punsafe, "nsfw", "punsafe " + punsafe.round(3).astype(str) + f" > {params.max_punsafe}")
    pwatermark = pd.to_numeric(samples["pwatermark"], errors="coerce")
    mark(pwatermark > params.max_pwatermark, "watermark",
         "pwatermark " + pwatermark.round(3).astype(str) + f" > {params.max_pwatermark}")
    if params.caption_languages or params.caption_min_words or params.caption_boilerplate:
        # only rows still going on and with a usable caption: a missing one is require_caption's to count
        judged = (reason == "") & (samples["caption_problem"].fillna("").astype(str) == "")
        why, what = caption_rejections(samples.loc[judged, "alt_text"], params.caption_languages,
                                       params.caption_min_language_score, params.caption_min_words,
                                       params.caption_boilerplate)
        reason[why.index], detail[why.index] = why, what
    return reason, detail


def find_duplicates(facts: pd.DataFrame, radius: int) -> tuple[pd.Series, pd.Series]:
    """(reason, detail) per decoded image: '' for a group's representative, else duplicate_exact/near.

    Groups follow dedup.group_near_duplicates: images visited largest original first (ties to the earliest
    in source order); an image no group has claimed keeps itself and claims every unclaimed image whose pHash
    is within `radius` of its own. Exact copies (same sha256) share a pHash, so they share a group.
    """
    n = len(facts)
    rep, dropped, frame = _duplicates(facts["phash"], facts["original_width"], facts["original_height"],
                                      facts["image_id"], facts["sha256"], radius)
    reason, detail = np.full(n, "", dtype=object), np.full(n, "", dtype=object)
    reason[dropped], detail[dropped] = frame["reason"].to_numpy(), frame["detail"].to_numpy()
    return pd.Series(reason, index=facts.index), pd.Series(detail, index=facts.index)


def fan_in_duplicates(kept, radius: int) -> tuple[np.ndarray, pd.DataFrame]:
    """The duplicate search across partitions, at the fan-in: `kept` is every partition's kept table one after the
    other in partition order (a pyarrow Table or DataFrame with image_id, phash, sha256, original_width and
    original_height). Each partition already judged its images against each other; this judges them all
    together by the same rule as find_duplicates (largest original first, then the earliest row), so the
    result depends on the set of partitions and their order, never on the order they were computed in. It is not
    always the set one filter over all rows would keep: the rule is greedy, and an image a partition dropped for a
    partner that the fan-in then drops stays dropped (8 of 50,000 in bench_partitions, chains at distance 4-6).

    Returns (rows kept, in order; a table of the dropped: image_id, reason, detail naming the kept partner).
    Holds a few arrays of N numbers, not N Python strings: ids and sha256 are read only for the dropped rows."""
    rep, dropped, frame = _duplicates(kept["phash"], kept["original_width"], kept["original_height"],
                                      kept["image_id"], kept["sha256"], radius)
    keep = np.flatnonzero(rep == np.arange(len(rep)))
    return keep, frame


def _duplicates(phash, width, height, image_id, sha256, radius: int) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """(representative per row, dropped rows, their image_id/reason/detail) for columns of any array-like kind."""
    phashes = hex_to_u64(phash)
    area = np.asarray(width, np.float64) * np.asarray(height, np.float64)
    rep = dedup.group_near_duplicates(phashes, radius, priority=area)
    dropped = np.flatnonzero(rep != np.arange(len(rep)))
    of = rep[dropped]
    ids, shas = _pick(image_id, np.r_[dropped, of]), _pick(sha256, np.r_[dropped, of])
    n = len(dropped)
    reason = np.where(shas[:n] == shas[n:], "duplicate_exact", "duplicate_near")
    distance = dedup.hamming(phashes[dropped], phashes[of])
    detail = [f"of {i} (pHash distance {d})" for i, d in zip(ids[n:], distance)]
    return rep, dropped, pd.DataFrame({"image_id": ids[:n], "reason": reason, "detail": detail})


def hex_to_u64(column) -> np.ndarray:
    """16-digit hex pHashes as uint64, parsed in one pass over their bytes (11M in about a second). A pyarrow
    column is read from its data buffers as fixed 16-byte values: no Python string per row."""
    if hasattr(column, "combine_chunks"):
        import pyarrow as pa

        fixed = [chunk.cast(pa.binary(16)) for chunk in column.chunks]  # fails loudly on a hash of another length
        text = np.concatenate([np.frombuffer(f.buffers()[1], dtype="S16", count=len(f), offset=f.offset * 16)
                               for f in fixed]) if fixed else np.empty(0, "S16")
    else:
        text = np.asarray(column, dtype="S16")
    if not len(text):
        return np.empty(0, np.uint64)
    return np.frombuffer(bytes.fromhex(text.tobytes().decode("ascii")), dtype=">u8").astype(np.uint64)


def _pick(column, rows: np.ndarray) -> np.ndarray:
    if hasattr(column, "take") and hasattr(column, "combine_chunks"):  # pyarrow: only the rows asked become str
        return np.asarray(column.take(rows).to_pylist(), dtype=object)
    return np.asarray(column)[rows] if not hasattr(column, "iloc") else column.iloc[rows].to_numpy()


def filter_images(samples: pd.DataFrame, out_dir: str, params: FilterParams, processes: int = 1,
                  refused: pd.DataFrame | None = None, chunk_size: int = 512, log=print,
                  map_units: Callable[[Callable, list], Iterable[list[dict]]] | None = None) -> dict:
    """Run every filter over `samples` (raw_images' samples.parquet, shard as a full URL) and write the
    filtered_images folder. `refused` rows (dropped before download) join rejected.parquet as they are.

    The work units run in `processes` local processes (lib/run/pool), or through `map_units(fn, units)` when given
    (an engine's, e.g. Ray tasks; results in the units' order); either way each unit writes its own crop shard
    under `out_dir`, which the workers must therefore be able to write (this host, or a shared filesystem).

    Returns stats: counts per reason, kept fraction, throughput.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    (out / "crops").mkdir(parents=True, exist_ok=True)
    samples = samples.reset_index(drop=True)
    reason, detail = pre_decode_rejections(samples, params)
    todo = samples[reason == ""]
    units = []  # (raw shard, keys, image_ids, crop shard, params): at most chunk_size images, source order
    for shard, rows in todo.groupby("shard", sort=False):
        for start in range(0, len(rows), chunk_size):
            part = rows.iloc[start:start + chunk_size]
            units.append((shard, part["key"].astype(str).tolist(), part["image_id"].tolist(),
                          str(out / "crops" / f"shard-{len(units):06d}.tar"), params))
    results = []
    decode_started = time.perf_counter()
    progress = Progress("filtered_images: decoded", len(todo), "images", log)
    run = map_units or partial(map_in_processes, processes=processes)
    for unit_rows in run(process_unit_args, units):
        results.extend(unit_rows)
        progress.advance(len(unit_rows))
    decode_seconds = time.perf_counter() - decode_started

    decoded = pd.DataFrame(results, columns=["image_id", "reason", "detail", "original_width", "original_height",
                                             "format", "frames", "sha256", "phash"])
    decoded = decoded.set_index("image_id")
    by_id = samples.set_index("image_id")
    reason_by_id, detail_by_id = reason.set_axis(samples["image_id"]), detail.set_axis(samples["image_id"])
    reason_by_id.loc[decoded.index] = decoded["reason"]
    detail_by_id.loc[decoded.index] = decoded["detail"]

    ok = decoded[decoded["reason"] == ""].copy()
    ok = ok.loc[[i for i in samples["image_id"] if i in ok.index]].reset_index()  # source order
    dup_reason, dup_detail = find_duplicates(ok, params.phash_max_distance)
    reason_by_id.loc[ok["image_id"][dup_reason != ""].to_numpy()] = dup_reason[dup_reason != ""].to_numpy()
    detail_by_id.loc[ok["image_id"][dup_reason != ""].to_numpy()] = dup_detail[dup_reason != ""].to_numpy()

    kept_ids = ok["image_id"][dup_reason == ""].tolist()
    crop_shard = {i: f"crops/{Path(u[3]).name}" for u in units for i in u[2]}
    kept = _kept_table(by_id, decoded, kept_ids, crop_shard)
    rejected = pd.DataFrame({
        "image_id": samples["image_id"],
        "url": samples["url"],
        "reason": reason_by_id.to_numpy(),
        "detail": detail_by_id.to_numpy(),
    })
    rejected = rejected[rejected["reason"] != ""]
    if refused is not None and len(refused):
        rejected = pd.concat([rejected, refused[REJECTED_COLUMNS]])
    rejected = rejected.reset_index(drop=True)
    kept.to_parquet(out / "kept.parquet", index=False)
    rejected.to_parquet(out / "rejected.parquet", index=False)

    seconds = time.perf_counter() - started
    counts = rejected["reason"].value_counts().to_dict()
    decoded_n = len(decoded)
    return {
        "input": int(len(samples) + (0 if refused is None else len(refused))),
        "kept": int(len(kept)),
        "rejected": int(len(rejected)),
        "kept_fraction": round(len(kept) / max(len(samples), 1), 4),
        "dropped": {k: int(v) for k, v in sorted(counts.items())},
        "decoded": int(decoded_n),
        "decode_images_per_s": round(decoded_n / max(decode_seconds, 1e-9), 1),
        "seconds": round(seconds, 2),
        "images_per_s": round(len(samples) / max(seconds, 1e-9), 1),
    }


def filter_raw_folder(raw_url: str, out_dir: str, params: FilterParams, processes: int = 1, chunk_size: int = 512,
                      log=print, map_units: Callable[[Callable, list], Iterable[list[dict]]] | None = None) -> dict:
    """filter_images over a committed raw_images folder."""
    with fsspec.open(f"{raw_url}/samples.parquet", "rb") as fh:
        samples = pd.read_parquet(fh)
    with fsspec.open(f"{raw_url}/refused.parquet", "rb") as fh:
        refused = pd.read_parquet(fh)
    relative = samples["shard"].notna() & ~samples["shard"].astype(str).str.contains("://") \
        & ~samples["shard"].astype(str).str.startswith("/")
    samples.loc[relative, "shard"] = raw_url.rstrip("/") + "/" + samples.loc[relative, "shard"].astype(str)
    return filter_images(samples, out_dir, params, processes, refused=refused, chunk_size=chunk_size, log=log,
                         map_units=map_units)


def _kept_table(by_id: pd.DataFrame, decoded: pd.DataFrame, kept_ids: list[str],
                crop_shard: dict[str, str]) -> pd.DataFrame:
    meta = by_id.loc[kept_ids]
    facts = decoded.loc[kept_ids]
    kept = pd.DataFrame({"image_id": kept_ids})
    for col in ("url", "alt_text", "aesthetic", "punsafe", "pwatermark", "similarity"):
        kept[col] = meta[col].to_numpy() if col in meta else None
    for col in ("aesthetic", "punsafe", "pwatermark", "similarity"):
        kept[col] = pd.to_numeric(kept[col], errors="coerce").astype(np.float64)
    kept["original_width"] = facts["original_width"].astype(np.int64).to_numpy()
    kept["original_height"] = facts["original_height"].astype(np.int64).to_numpy()
    kept["format"] = facts["format"].to_numpy()
    kept["frames"] = facts["frames"].astype(np.int64).to_numpy()
    kept["sha256"] = facts["sha256"].to_numpy()
    kept["phash"] = facts["phash"].to_numpy()
    kept["crop_shard"] = kept["image_id"].map(crop_shard)
    return kept[KEPT_COLUMNS]
