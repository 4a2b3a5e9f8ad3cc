"""Reading filtered_images' crops back in kept.parquet's row order, for the model stages."""

from __future__ import annotations

import io

import fsspec
import numpy as np
import pandas as pd
from PIL import Image

from .tars import iter_samples


def read_crop_bytes(folder_url: str, kept: pd.DataFrame, start: int, stop: int) -> list[bytes]:
    """The stored crop (JPEG bytes) of kept rows [start, stop), in row order; each shard is read once."""
    return read_crop_rows(folder_url, kept, np.arange(start, min(stop, len(kept))))


def read_crop_rows(folder_url: str, kept: pd.DataFrame, indices) -> list[bytes]:
    """The stored crops of the given kept rows, in the order given; each shard is read once."""
    rows = kept.iloc[np.asarray(indices, dtype=np.int64)]
    found: dict[str, bytes] = {}
    for shard, group in rows.groupby("crop_shard", sort=False):
        wanted = set(group["image_id"])
        with fsspec.open(f"{folder_url.rstrip('/')}/{shard}", "rb") as fh:
            for key, fields in iter_samples(fh, wanted):
                found[key] = fields["jpg"]
    missing = [i for i in rows["image_id"] if i not in found]
    if missing:
        raise RuntimeError(f"filtered_images has no crop for {len(missing)} kept images (first: {missing[0]}): "
                           "re-materialise filtered_images")
    return [found[i] for i in rows["image_id"]]


def decode_crops(blobs: list[bytes]) -> np.ndarray:
    """JPEG bytes -> uint8 (N, H, W, 3)."""
    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])
