"""The per-clip work of filtered_images for video, run in worker processes: one unit of one raw shard's clips.

The video twin of checks.process_unit. Kept free of pandas and Dagster so that a spawned worker starts quickly.
"""

from __future__ import annotations

import os

import cv2
import fsspec

from .images import Rejected
from .tars import TarShardWriter, iter_samples
from .video import VideoParams, process_video

SIDECARS = ("json", "txt", "cls")  # every other member is the media: img2dataset keeps a video's bytes as .jpg


def process_video_unit(shard_url: str, keys: list[str], image_ids: list[str], unit_tar: str,
                       params: VideoParams) -> list[dict]:
    """Decode and check the listed samples of one raw shard; kept clips go to `unit_tar` (member `mp4`) in listed
    order. Returns one row per listed id, in that order: image_id, reason ('' when it passed), detail, and for a
    passing clip process_video's facts."""
    cv2.setNumThreads(1)  # one clip at a time per worker: the pool is the parallelism (PyAV's is params.threads)
    by_key = dict(zip(keys, image_ids))
    results: dict[str, dict] = {}
    clips: dict[str, bytes] = {}
    with fsspec.open(shard_url, "rb") as fh:
        for key, fields in iter_samples(fh, wanted=set(keys)):
            image_id = by_key[key]
            data = next((v for ext, v in fields.items() if ext not in SIDECARS), b"")
            try:
                facts, clips[image_id] = process_video(data, params)
                results[image_id] = {"image_id": image_id, "reason": "", "detail": "", **facts}
            except Rejected as rejected:
                results[image_id] = {"image_id": image_id, "reason": rejected.reason, "detail": rejected.detail}
    tmp = unit_tar + ".tmp"
    with open(tmp, "wb") as fh, TarShardWriter(fh) as writer:
        for image_id in image_ids:
            if image_id in clips:
                writer.write(image_id, {"mp4": clips[image_id]})
    os.replace(tmp, unit_tar)  # a unit killed part way leaves no tar a reader could take for whole
    for image_id in image_ids:
        results.setdefault(image_id, {"image_id": image_id, "reason": "missing_from_shard", "detail": shard_url})
    return [results[i] for i in image_ids]


def process_video_unit_args(args: tuple) -> list[dict]:
    """process_video_unit over one tuple: what a pool's or Ray's map hands each task."""
    return process_video_unit(*args)
