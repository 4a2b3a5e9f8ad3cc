"""The per-image work of filtered_images, run in worker processes: decode once, check, crop, hash.

Kept free of pandas and Dagster so that a spawned worker starts quickly.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import cv2
import fsspec
import numpy as np

from ..outputs.tars import TarShardWriter, iter_samples
from .decode import Rejected, crop_thumbnail, decode_image, encode_jpeg, image_phash, is_blank, square_crop

# Exposed classes only: NudeNet's covered, face and belly classes fire on ordinary photos (see the README).
NUDENET_CLASSES = ("FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "FEMALE_BREAST_EXPOSED", "ANUS_EXPOSED")


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
    nudenet_classes: tuple[str, ...] = NUDENET_CLASSES
    nudenet_threshold: float = 0.6
    phash_max_distance: int = 6
    jpeg_quality: int = 95
    max_image_pixels: int = 89_478_485
    caption_languages: tuple[str, ...] = ()  # judged before decode, in filtering.pre_decode_rejections
    caption_min_language_score: float = 0.5
    caption_min_words: int = 0
    caption_boilerplate: tuple[str, ...] = ()


def process_image(data: bytes, params: FilterParams, detector=None) -> tuple[dict, bytes]:
    """(facts, crop JPEG bytes) for one downloaded file, or raise `Rejected`."""
    decoded = decode_image(data, params.max_image_pixels, params.min_side, params.max_aspect,
                           draft_size=params.image_size)
    crop = square_crop(decoded.pixels, params.image_size, params.resize_mode)
    if is_blank(crop_thumbnail(crop), params.blank_std):
        raise Rejected("blank", f"pixel std <= {params.blank_std}")
    if detector is not None:
        _check_nudity(detector, crop, params)
    facts = {"original_width": decoded.width, "original_height": decoded.height, "format": decoded.format,
             "frames": decoded.frames, "sha256": hashlib.sha256(data).hexdigest(),
             "phash": f"{image_phash(decoded.pixels):016x}"}  # text: 64 bits survive a DataFrame
    # A source that already is the crop keeps its own bytes: no second JPEG generation, no encode time.
    stored = data if crop is decoded.pixels and decoded.pristine else encode_jpeg(crop, params.jpeg_quality)
    return facts, stored


def _check_nudity(detector, pixels: np.ndarray, params: FilterParams) -> None:
    hits = [d for d in detector.detect(np.ascontiguousarray(pixels))  # NudeNet takes BGR, as the crop is
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
    cv2.setNumThreads(1)  # one image at a time per worker: the pool is the parallelism, not OpenCV's threads
    detector = _detector(params)
    return run_unit(shard_url, keys, image_ids, unit_tar, "jpg", lambda data: process_image(data, params, detector))


SIDECARS = ("json", "txt", "cls")  # every other member is the media (img2dataset keeps a video's bytes as .jpg)


def run_unit(shard_url: str, keys: list[str], image_ids: list[str], unit_tar: str, member: str, process) -> list[dict]:
    """One work unit of filtered_images, images or clips: `process(bytes) -> (facts, stored bytes)` (or raise
    Rejected) on each listed sample of one raw shard; what passed goes to `unit_tar` under `member`, in listed
    order. Returns one row per listed id, in that order: image_id, reason ('' when it passed), detail, facts."""
    by_key = dict(zip(keys, image_ids))
    results: dict[str, dict] = {}
    stored: dict[str, bytes] = {}
    with fsspec.open(shard_url, "rb") as fh:
        for key, fields in iter_samples(fh, wanted=set(keys)):
            image_id = by_key[key]
            data = next((v for ext, v in fields.items() if ext not in SIDECARS), b"")
            try:
                facts, stored[image_id] = process(data)
                results[image_id] = {"image_id": image_id, "reason": "", "detail": "", **facts}
            except Rejected as rejected:
                results[image_id] = {"image_id": image_id, "reason": rejected.reason, "detail": rejected.detail}
    tmp = unit_tar + ".tmp"
    with open(tmp, "wb") as fh, TarShardWriter(fh) as writer:
        for image_id in image_ids:
            if image_id in stored:
                writer.write(image_id, {member: stored[image_id]})
    os.replace(tmp, unit_tar)  # a unit killed part way leaves no tar a reader could take for whole
    for image_id in image_ids:
        results.setdefault(image_id, {"image_id": image_id, "reason": "missing_from_shard", "detail": shard_url})
    return [results[i] for i in image_ids]


def process_unit_args(args: tuple) -> list[dict]:
    return process_unit(*args)
