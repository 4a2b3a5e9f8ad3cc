"""filtered_images: decode each downloaded image once, refuse what must not be trained on, drop duplicates.

Work runs in parallel per raw shard (a work unit). Each unit decodes its images once, runs every per-image
check, and writes the kept crops to a unit tar. Duplicates are then found across the whole data set, and the
kept crops are re-packed into shards in source order, so row i of kept.parquet is crop i.

Output folder: kept.parquet, rejected.parquet (image_id, url, reason, detail), crops/shard-NNNNNN.tar.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd

from . import dedup
from .images import Rejected, decode_image, encode_jpeg, is_blank, phash64, square_crop
from .tars import TarShardWriter, iter_samples

KEPT_COLUMNS = ["image_id", "url", "alt_text", "aesthetic", "punsafe", "pwatermark", "original_width",
                "original_height", "similarity", "format", "frames", "sha256", "phash", "crop_shard"]
REJECTED_COLUMNS = ["image_id", "url", "reason", "detail"]
CROPS_PER_SHARD = 1000


@dataclass(frozen=True)
class FilterParams:
    image_size: int = 256
    resize_mode: str = "center_crop"
    min_side: int = 64
    max_aspect: float = 3.0
    blank_std: float = 2.0
    max_punsafe: float = 0.5
    max_pwatermark: float = 0.8
    require_caption: bool = True
    nudenet: bool = False
    nudenet_classes: tuple[str, ...] = ()
    nudenet_threshold: float = 0.6
    phash_max_distance: int = 4
    jpeg_quality: int = 95
    max_image_pixels: int = 89_478_485


def process_image(data: bytes, params: FilterParams, detector=None) -> tuple[dict, bytes]:
    """(facts, crop JPEG bytes) for one downloaded file, or raise `Rejected`."""
    decoded = decode_image(data, params.max_image_pixels, params.min_side, params.max_aspect,
                           draft_size=params.image_size)
    crop = square_crop(decoded.image, params.image_size, params.resize_mode)
    if is_blank(crop, params.blank_std):
        raise Rejected("blank", f"pixel std <= {params.blank_std}")
    if detector is not None:
        _check_nudity(detector, np.asarray(crop), params)
    facts = {"original_width": decoded.width, "original_height": decoded.height, "format": decoded.format,
             "frames": decoded.frames, "sha256": hashlib.sha256(data).hexdigest(), "phash": phash64(crop)}
    return facts, encode_jpeg(crop, params.jpeg_quality)


def _check_nudity(detector, pixels: np.ndarray, params: FilterParams) -> None:
    hits = [d for d in detector.detect(np.ascontiguousarray(pixels[..., ::-1]))  # NudeNet takes BGR like OpenCV
            if d["class"] in params.nudenet_classes and d["score"] >= params.nudenet_threshold]
    if hits:
        top = max(hits, key=lambda d: d["score"])
        raise Rejected("nsfw_detected", f"{top['class']} score {top['score']:.2f}")


_DETECTOR = None


def _detector(params: FilterParams):
    global _DETECTOR
    if params.nudenet and _DETECTOR is None:
        from nudenet import NudeDetector

        _DETECTOR = NudeDetector()
    return _DETECTOR if params.nudenet else None


def process_unit(shard_url: str, keys: list[str], image_ids: list[str], unit_tar: str,
                 params: FilterParams) -> list[dict]:
    """Decode and check the listed samples of one raw shard; kept crops go to `unit_tar` in listed order."""
    by_key = dict(zip(keys, image_ids))
    results: dict[str, dict] = {}
    crops: dict[str, bytes] = {}
    detector = _detector(params)
    with fsspec.open(shard_url, "rb") as fh:
        for key, fields in iter_samples(fh, wanted=set(keys)):
            image_id = by_key[key]
            data = next((v for ext, v in fields.items() if ext not in ("json", "txt", "cls")), b"")
            try:
                facts, crops[image_id] = process_image(data, params, detector)
                results[image_id] = {"image_id": image_id, "reason": "", "detail": "", **facts}
            except Rejected as rejected:
                results[image_id] = {"image_id": image_id, "reason": rejected.reason, "detail": rejected.detail}
    tmp = unit_tar + ".tmp"
    with open(tmp, "wb") as fh, TarShardWriter(fh) as writer:
        for image_id in image_ids:
            if image_id in crops:
                writer.write(image_id, {"jpg": crops[image_id]})
    os.replace(tmp, unit_tar)
    missing = [i for i in image_ids if i not in results]
    for image_id in missing:
        results[image_id] = {"image_id": image_id, "reason": "missing_from_shard", "detail": shard_url}
    return [results[i] for i in image_ids]


def _process_unit_args(args: tuple) -> list[dict]:
    return process_unit(*args)


def pre_decode_rejections(samples: pd.DataFrame, params: FilterParams) -> tuple[pd.Series, pd.Series]:
    """Reason per row ('' to go on) decided from metadata alone: failed download, caption, LAION flags."""
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
    return reason, detail


def find_duplicates(facts: pd.DataFrame, radius: int) -> tuple[pd.Series, pd.Series]:
    """(reason, detail) per decoded image: '' for a group's representative, else duplicate_exact/near.

    Groups join exact copies (same sha256) and near copies (pHash within `radius`), transitively; the
    representative is the largest original image, ties going to the earliest in source order.
    """
    n = len(facts)
    phashes = facts["phash"].to_numpy(np.uint64)
    pairs = dedup.near_pairs(phashes, radius)
    _, first_of_sha = np.unique(facts["sha256"].to_numpy(), return_inverse=True)
    same_sha = pd.Series(np.arange(n)).groupby(first_of_sha).transform("min").to_numpy()
    exact_pairs = np.stack([same_sha, np.arange(n)], axis=1)[same_sha != np.arange(n)]
    groups = dedup.connected_components(n, np.concatenate([pairs, exact_pairs]) if len(exact_pairs) else pairs)
    area = facts["original_width"].to_numpy(np.float64) * facts["original_height"].to_numpy(np.float64)
    rep = dedup.pick_representatives(groups, area)
    ids, shas = facts["image_id"].to_numpy(), facts["sha256"].to_numpy()
    reason = np.where(rep == np.arange(n), "", np.where(shas == shas[rep], "duplicate_exact", "duplicate_near"))
    distance = dedup.hamming(phashes, phashes[rep])
    detail = [f"of {ids[r]} (pHash distance {d})" if why else "" for r, d, why in zip(rep, distance, reason)]
    return pd.Series(reason, index=facts.index), pd.Series(detail, index=facts.index)


def filter_images(samples: pd.DataFrame, out_dir: str, params: FilterParams, processes: int = 1,
                  refused: pd.DataFrame | None = None, log=print) -> dict:
    """Run every filter over `samples` (raw_images' samples.parquet, shard as a full URL) and write the
    filtered_images folder. `refused` rows (dropped before download) join rejected.parquet as they are.

    Returns stats: counts per reason, kept fraction, throughput.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    (out / "crops").mkdir(parents=True, exist_ok=True)
    units_dir = out / "_units"
    units_dir.mkdir(exist_ok=True)
    samples = samples.reset_index(drop=True)
    reason, detail = pre_decode_rejections(samples, params)
    todo = samples[reason == ""]
    units = []
    for n, (shard, rows) in enumerate(todo.groupby("shard", sort=False)):
        units.append((shard, rows["key"].astype(str).tolist(), rows["image_id"].tolist(),
                      str(units_dir / f"unit-{n:06d}.tar"), params))
    results = []
    decode_started = time.perf_counter()
    if processes > 1 and len(units) > 1:
        ctx = multiprocessing.get_context("spawn")  # fork is unsafe under Dagster's threads
        with ProcessPoolExecutor(min(processes, len(units)), mp_context=ctx) as pool:
            for done, unit_rows in enumerate(pool.map(_process_unit_args, units), 1):
                results.extend(unit_rows)
                log(f"filtered_images: decoded {done}/{len(units)} shards")
    else:
        for done, unit in enumerate(units, 1):
            results.extend(_process_unit_args(unit))
            log(f"filtered_images: decoded {done}/{len(units)} shards")
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
    kept = _kept_table(by_id, decoded, kept_ids)
    _pack_crops([u[3] for u in units], kept, out)
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
    for unit in units:
        os.remove(unit[3])
    units_dir.rmdir()

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


def filter_raw_folder(raw_url: str, out_dir: str, params: FilterParams, processes: int = 1, log=print) -> dict:
    """filter_images over a committed raw_images folder."""
    with fsspec.open(f"{raw_url}/samples.parquet", "rb") as fh:
        samples = pd.read_parquet(fh)
    with fsspec.open(f"{raw_url}/refused.parquet", "rb") as fh:
        refused = pd.read_parquet(fh)
    relative = samples["shard"].notna() & ~samples["shard"].astype(str).str.contains("://") \
        & ~samples["shard"].astype(str).str.startswith("/")
    samples.loc[relative, "shard"] = raw_url.rstrip("/") + "/" + samples.loc[relative, "shard"].astype(str)
    return filter_images(samples, out_dir, params, processes, refused=refused, log=log)


def _kept_table(by_id: pd.DataFrame, decoded: pd.DataFrame, kept_ids: list[str]) -> pd.DataFrame:
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
    kept["phash"] = [f"{int(h):016x}" for h in facts["phash"]]
    kept["crop_shard"] = [f"crops/shard-{i // CROPS_PER_SHARD:06d}.tar" for i in range(len(kept))]
    return kept[KEPT_COLUMNS]


def _pack_crops(unit_tars: list[str], kept: pd.DataFrame, out: Path) -> None:
    """Re-pack kept crops from the unit tars into CROPS_PER_SHARD-sized shards in kept order (streamed)."""
    wanted = set(kept["image_id"])
    writer, fh, written = None, None, 0
    expected = iter(kept["image_id"])
    for unit_tar in unit_tars:
        with open(unit_tar, "rb") as src:
            for key, fields in iter_samples(src, wanted):
                if key != next(expected):
                    raise RuntimeError(f"crop order broke at {key}: unit tars out of source order")
                if written % CROPS_PER_SHARD == 0:
                    if writer is not None:
                        writer.close()
                        fh.close()
                    fh = open(out / "crops" / f"shard-{written // CROPS_PER_SHARD:06d}.tar", "wb")
                    writer = TarShardWriter(fh)
                writer.write(key, fields)
                written += 1
    if writer is not None:
        writer.close()
        fh.close()
    if written != len(kept):
        raise RuntimeError(f"packed {written} crops for {len(kept)} kept images")
