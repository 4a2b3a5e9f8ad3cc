"""filtered_images for video: decode each downloaded clip once, refuse what must not be trained on, drop duplicates.

The video twin of lib/images/filtering. The metadata-only refusals are the images' own (filtering.pre_decode_rejections);
work units of up to `chunk_size` clips of one raw shard run lib/video/units.process_video_unit, each writing the
stored clips that pass to its own crop shard (member `mp4`). Near duplicates are then found across the whole
folder on the three keyframe pHashes (video_checks.near_duplicate_groups), so a crop shard may hold a clip that
lost to a duplicate: kept.parquet (its `crop_shard` column) is the list of what is kept, in source order.

Output folder: kept.parquet (VIDEO_KEPT_COLUMNS), rejected.parquet (image_id, url, reason, detail),
crops/shard-NNNNNN.tar.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd

from ..images.filtering import KEPT_COLUMNS, REJECTED_COLUMNS, _pick, hex_to_u64, pre_decode_rejections
from ..images.units import FilterParams
from ..run.pool import map_in_processes
from ..run.progress import Progress
from .checks import near_duplicate_groups
from .decode import VideoParams
from .units import process_video_unit_args

VIDEO_KEPT_COLUMNS = KEPT_COLUMNS + ["duration", "source_fps", "rotation", "codec", "pix_fmt", "window_start",
                                     "window_end", "cuts", "motion", "phash_middle", "phash_last"]
KEYFRAMES = ("phash", "phash_middle", "phash_last")  # the stored clip's first, middle and last frame
# process_video's facts under their kept.parquet names; the image columns keep the images' meaning (the size
# displayed, the container as format, frames decoded, the first keyframe as phash)
FACTS = {"width": "original_width", "height": "original_height", "container": "format", "frames_decoded": "frames",
         "sha256": "sha256", "phash_first": "phash", "duration": "duration", "fps": "source_fps",
         "rotation": "rotation", "codec": "codec", "pix_fmt": "pix_fmt", "window_start": "window_start",
         "window_end": "window_end", "cuts": "cuts", "motion": "motion", "phash_middle": "phash_middle",
         "phash_last": "phash_last"}
INTEGERS = ("original_width", "original_height", "frames", "rotation")
FLOATS = ("duration", "source_fps", "window_start", "window_end", "motion")

MapUnits = Callable[[Callable, list], Iterable[list[dict]]]


def filter_video_folder(raw_url: str, out_dir: str, params: VideoParams, pre: FilterParams, processes: int = 1,
                        chunk_size: int = 64, log=print, map_units: MapUnits | None = None) -> dict:
    """Run every filter over a committed raw_images folder of videos and write the filtered_images folder.

    `pre` holds the metadata-only settings (download status, captions, LAION flags, caption filters); `params`
    the per-clip ones and `phash_max_distance` for duplicates. Units run in `processes` spawned processes, or
    through `map_units(fn, units)` (the Ray engine, results in the units' order); either way each writes its own
    crop shard under `out_dir`, which the workers must be able to write. Returns the stats filter_images returns
    (decode_images_per_s counts clips).
    """
    started = time.perf_counter()
    out = Path(out_dir)
    (out / "crops").mkdir(parents=True, exist_ok=True)
    samples, refused = read_raw_folder(raw_url)
    reason, detail = (s.set_axis(samples["image_id"]) for s in pre_decode_rejections(samples, pre))
    units = plan_units(samples[reason.to_numpy() == ""], out / "crops", chunk_size, params)
    decode_started = time.perf_counter()
    decoded = run_units(units, processes, map_units, log)
    decode_seconds = time.perf_counter() - decode_started

    reason[decoded.index], detail[decoded.index] = decoded["reason"], decoded["detail"]
    ids = samples["image_id"]
    passed = decoded.loc[ids[ids.isin(decoded.index[decoded["reason"] == ""])]].reset_index()  # source order
    keep, dropped = _duplicates(passed, params.phash_max_distance)
    reason[dropped["image_id"]], detail[dropped["image_id"]] = dropped["reason"].to_numpy(), dropped["detail"].to_numpy()

    crop_shard = {i: f"crops/{Path(u[3]).name}" for u in units for i in u[2]}
    kept = kept_table(samples.set_index("image_id"), passed.iloc[keep], crop_shard)
    rejected = pd.DataFrame({"image_id": samples["image_id"], "url": samples["url"], "reason": reason.to_numpy(),
                             "detail": detail.to_numpy()})
    if len(refused):  # dropped before download, joined as they are
        rejected = pd.concat([rejected[rejected["reason"] != ""], refused[REJECTED_COLUMNS]])
    rejected = rejected[rejected["reason"] != ""].reset_index(drop=True)
    kept.to_parquet(out / "kept.parquet", index=False)
    rejected.to_parquet(out / "rejected.parquet", index=False)
    return _stats(len(samples), len(refused), kept, rejected, len(decoded), decode_seconds,
                  time.perf_counter() - started)


def read_raw_folder(raw_url: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(samples, refused) of a committed raw_images folder, with each relative shard made a full URL."""
    with fsspec.open(f"{raw_url}/samples.parquet", "rb") as fh:
        samples = pd.read_parquet(fh)
    with fsspec.open(f"{raw_url}/refused.parquet", "rb") as fh:
        refused = pd.read_parquet(fh)
    shard = samples["shard"].astype(str)
    relative = samples["shard"].notna() & ~shard.str.contains("://") & ~shard.str.startswith("/")
    samples.loc[relative, "shard"] = raw_url.rstrip("/") + "/" + shard[relative]
    return samples.reset_index(drop=True), refused


def plan_units(todo: pd.DataFrame, crops: Path, chunk_size: int, params: VideoParams) -> list[tuple]:
    """Work units (raw shard, keys, image_ids, crop shard path, params): at most chunk_size clips of one raw
    shard each, in source order, crop shards numbered in unit order."""
    units = []
    for shard, rows in todo.groupby("shard", sort=False):
        for start in range(0, len(rows), chunk_size):
            part = rows.iloc[start:start + chunk_size]
            units.append((shard, part["key"].astype(str).tolist(), part["image_id"].tolist(),
                          str(crops / f"shard-{len(units):06d}.tar"), params))
    return units


def run_units(units: list[tuple], processes: int, map_units: MapUnits | None, log=print) -> pd.DataFrame:
    """Every unit's rows, indexed by image_id: through map_units when given, else in `processes` local processes
    (lib/run/pool)."""
    progress = Progress("filtered_images: decoded", sum(len(u[2]) for u in units), "clips", log)
    rows = []
    for unit_rows in _unit_results(units, processes, map_units):
        rows.extend(unit_rows)
        progress.advance(len(unit_rows))
    return pd.DataFrame(rows, columns=["image_id", "reason", "detail", *FACTS]).rename(columns=FACTS) \
        .set_index("image_id")


def _unit_results(units: list[tuple], processes: int, map_units: MapUnits | None) -> Iterable[list[dict]]:
    return (map_units or partial(map_in_processes, processes=processes))(process_video_unit_args, units)


def fan_in_video_duplicates(kept, radius: int) -> tuple[np.ndarray, pd.DataFrame]:
    """The duplicate search across partitions, at the fan-in, as filtering.fan_in_duplicates is for images but on
    the three keyframe pHashes. `kept` is every partition's kept table one after the other in partition order (a
    pyarrow Table or DataFrame with image_id, sha256, original_width, original_height, phash, phash_middle and
    phash_last). The rule is the filter's (largest displayed size first, then the earliest row), so the result
    depends on the partitions and their order, not on the order they were computed in.

    Returns (rows kept, in order; a table of the dropped: image_id, reason, detail naming the kept partner)."""
    return _duplicates(kept, radius)


def _duplicates(table, radius: int) -> tuple[np.ndarray, pd.DataFrame]:
    """(rows kept, dropped image_id/reason/detail) by near_duplicate_groups over the keyframe pHashes: priority
    the displayed area, ties to the earlier row. duplicate_exact when the sha256 equals the kept partner's;
    the detail gives the largest keyframe distance, the one the radius bounds."""
    phashes = np.stack([hex_to_u64(table[c]) for c in KEYFRAMES], axis=1)
    area = np.asarray(table["original_width"], np.float64) * np.asarray(table["original_height"], np.float64)
    rep = near_duplicate_groups(phashes, radius, priority=area)
    dropped = np.flatnonzero(rep != np.arange(len(rep)))
    of = rep[dropped]
    ids, shas = _pick(table["image_id"], np.r_[dropped, of]), _pick(table["sha256"], np.r_[dropped, of])
    n = len(dropped)
    distance = np.bitwise_count(phashes[dropped] ^ phashes[of]).max(axis=1)
    frame = pd.DataFrame({"image_id": ids[:n], "reason": np.where(shas[:n] == shas[n:], "duplicate_exact",
                                                                  "duplicate_near"),
                          "detail": [f"of {i} (keyframe pHash distance {d})" for i, d in zip(ids[n:], distance)]})
    return np.flatnonzero(rep == np.arange(len(rep))), frame


def kept_table(meta: pd.DataFrame, facts: pd.DataFrame, crop_shard: dict[str, str]) -> pd.DataFrame:
    """kept.parquet: `meta` (samples by image_id) for the LAION columns, `facts` (decoded rows, kept ones, in
    order) for the rest, typed as the image table is."""
    kept = facts.reset_index(drop=True).copy()
    for col in ("url", "alt_text", "aesthetic", "punsafe", "pwatermark", "similarity"):
        kept[col] = meta.loc[kept["image_id"], col].to_numpy() if col in meta else None
    for col in ("aesthetic", "punsafe", "pwatermark", "similarity", *FLOATS):
        kept[col] = pd.to_numeric(kept[col], errors="coerce").astype(np.float64)
    for col in INTEGERS:
        kept[col] = kept[col].astype(np.int64)
    kept["crop_shard"] = kept["image_id"].map(crop_shard)
    return kept[VIDEO_KEPT_COLUMNS]


def _stats(n_samples: int, n_refused: int, kept: pd.DataFrame, rejected: pd.DataFrame, decoded: int,
           decode_seconds: float, seconds: float) -> dict:
    counts = rejected["reason"].value_counts().to_dict()
    return {
        "input": int(n_samples + n_refused),
        "kept": len(kept),
        "rejected": len(rejected),
        "kept_fraction": round(len(kept) / max(n_samples, 1), 4),
        "dropped": {k: int(v) for k, v in sorted(counts.items())},
        "decoded": int(decoded),
        "decode_images_per_s": round(decoded / max(decode_seconds, 1e-9), 1),
        "seconds": round(seconds, 2),
        "images_per_s": round(n_samples / max(seconds, 1e-9), 1),
    }
