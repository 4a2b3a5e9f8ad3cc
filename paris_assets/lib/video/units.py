"""The per-clip work of filtered_images for video, run in worker processes: one unit of one raw shard's clips.

The video twin of checks.process_unit. Kept free of pandas and Dagster so that a spawned worker starts quickly.
"""

from __future__ import annotations

from functools import partial

import cv2

from ..images.units import run_unit
from .decode import VideoParams, process_video


def process_video_unit(shard_url: str, keys: list[str], image_ids: list[str], unit_tar: str,
                       params: VideoParams) -> list[dict]:
    """Decode and check the listed samples of one raw shard (checks.run_unit); kept clips go to `unit_tar` (member
    `mp4`) in listed order."""
    cv2.setNumThreads(1)  # one clip at a time per worker: the pool is the parallelism (PyAV's is params.threads)
    return run_unit(shard_url, keys, image_ids, unit_tar, "mp4", partial(process_video, params=params))


def process_video_unit_args(args: tuple) -> list[dict]:
    """process_video_unit over one tuple: what a pool's or Ray's map hands each task."""
    return process_video_unit(*args)
