"""Reading filtered_images' crops (or clips) back in kept.parquet's row order, for the model stages."""

from __future__ import annotations

import io

import fsspec
import numpy as np
import pandas as pd
from PIL import Image

from ..outputs.tars import iter_samples


def read_crop_bytes(folder_url: str, kept: pd.DataFrame, start: int, stop: int) -> list[bytes]:
    """The stored crop (JPEG bytes; with media: video the clip's mp4) of kept rows [start, stop), in row order;
    each shard is read once."""
    return read_crop_rows(folder_url, kept, np.arange(start, min(stop, len(kept))))


def read_crop_rows(folder_url: str, kept: pd.DataFrame, indices) -> list[bytes]:
    """The stored crops of the given kept rows, in the order given; each shard is read once."""
    rows = kept.iloc[np.asarray(indices, dtype=np.int64)]
    found: dict[str, bytes] = {}
    for shard, group in rows.groupby("crop_shard", sort=False):
        wanted = set(group["image_id"])
        with fsspec.open(f"{folder_url.rstrip('/')}/{shard}", "rb") as fh:
            for key, fields in iter_samples(fh, wanted):
                found[key] = fields["jpg"] if "jpg" in fields else fields["mp4"]
    missing = [i for i in rows["image_id"] if i not in found]
    if missing:
        raise RuntimeError(f"filtered_images has no crop for {len(missing)} kept images (first: {missing[0]}): "
                           "re-materialise filtered_images")
    return [found[i] for i in rows["image_id"]]


def decode_crops(blobs: list[bytes]) -> np.ndarray:
    """JPEG bytes -> uint8 (N, H, W, 3); a stored clip (media: video) gives its first frame, so every picture of
    the kept set (cluster grids, SemDeDup pairs, the reconstruction check's originals) works on clips too."""
    return np.stack([decode_first_frames([b])[0] if is_clip(b) else np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
                     for b in blobs])


def is_clip(blob: bytes) -> bool:
    """An ISO media file (the mp4 filtered_images stores for a clip): its first box is `ftyp`."""
    return blob[4:8] == b"ftyp"


KEYFRAMES = 3  # first, middle, last: the frames filtered_images hashes for near duplicates


def decode_first_frames(blobs: list[bytes]) -> np.ndarray:
    """Stored clips (mp4 bytes) -> their first frames, uint8 (N, S, S, 3): what the image models see of a clip
    (the Paris 2.0 router's optional DINOv2 feature is the first frame's)."""
    from ..video.decode import decode_frames

    return np.stack([decode_frames(b, (0,))[0] for b in blobs])


def decode_keyframes(blobs: list[bytes]) -> np.ndarray:
    """Stored clips -> first, middle and last frame of each, uint8 (N * 3, S, S, 3), clip by clip."""
    from ..video.decode import decode_frames

    return np.concatenate([decode_frames(b, "keyframes") for b in blobs])


def decode_clips(blobs: list[bytes]) -> np.ndarray:
    """Stored clips -> every frame, uint8 (N, T, S, S, 3): what the video VAE encodes."""
    from ..video.decode import decode_clip

    return np.stack([decode_clip(b) for b in blobs])
