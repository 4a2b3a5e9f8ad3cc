"""Clips (media: video, Paris 2.0): each item a short H.264 clip of video.num_frames frames, its latents from the
causal video VAE, T5 text states beside CLIP's, the image models on its first frame (or keyframes)."""

from __future__ import annotations

import io
from dataclasses import asdict
from typing import Any
from collections.abc import Callable

import numpy as np
import pandas as pd
from dagster import MetadataValue

from ..lib.images.units import FilterParams
from ..lib.ingest.download import Demo
from ..lib.outputs.shards import VideoFields
from ..lib.outputs.validation import side_by_side_png
from ..lib.run.crops import decode_clips
from ..models.profiles import ASSET_ROLES, embedding_shapes, video_shapes
from ..settings import Settings
from . import ArraySpec
from .image import ARRAYS as IMAGE_ARRAYS
from .image import FAN_IN_COLUMNS

# what each asset holds instead (the image docstrings describe the image graph)
DESCRIPTIONS = {
    "raw_images": "The source's videos, as downloaded (media: video): WebDataset tars with the original bytes "
                  "(img2dataset does not re-encode), plus samples.parquet (one row per source item: metadata, "
                  "download status, shard and key). The demo: a few hundred seeded clips in eight motion themes plus "
                  "planted bad files, served from 127.0.0.1.",
    "filtered_images": "The clips fit to train on (media: video): each video decoded once (PyAV), refused with a "
                       "reason (undecodable, truncated, too_short, too_small, static, scene_cut, near duplicates by "
                       "keyframe pHash), resampled to video.fps, video.num_frames (4k+1) frames, rotation applied, "
                       "centre-cropped to filter.image_size. kept.parquet (one row per clip, with its facts), "
                       "rejected.parquet and crops/ (each clip as an H.264 mp4 that every later stage decodes).",
    "captions": "One caption per kept clip: the source text (alt text / provided captions; media: video does not re-"
                "caption). captions.parquet: image_id, caption, alt_text, caption_source.",
    "clip_embeddings": "The captions' text embeddings (media: video): CLIP ViT-L/14 tokens/ (N, 77, 768) and pooled/ "
                       "(N, 768) float16 as for images, plus T5-v1.1-XXL t5_tokens/ (N, 226, 4096) float16 (zeros at "
                       "padding) and t5_mask/ (N, 226) bool, what Paris 2.0's experts condition on; image_ids.npy.",
    "dinov2_embeddings": "DINOv2 features of each kept clip's first frame (or the mean over three keyframes: "
                         "video.embed_frames), what the clustering reads and the router may: embeddings/ (N, 1024) "
                         "float32, L2-normalised; image_ids.npy.",
    "latents": "HunyuanVideo causal VAE latents of the kept clips, what the video experts train on: latents/ (N, 16, "
               "(T-1)/4+1, S/8, S/8) float16, already scaled by the VAE's scaling_factor (0.476986); image_ids.npy.",
    "clip_image_embeddings": "CLIP ViT-L/14 image embeddings of each kept clip's first frame (or keyframe mean: "
                             "video.embed_frames): embeddings/ (N, 768) float16, L2-normalised; what the aesthetic "
                             "and NSFW heads read; image_ids.npy.",
}
# the video flavour's own code versions, appended to assets/common.CODE_VERSIONS
CODE_VERSIONS = {"raw_images": "v1", "filtered_images": "v1", "clip_embeddings": "v1", "dinov2_embeddings": "v1",
                 "latents": "v1", "clip_image_embeddings": "v1", "expert_shards": "v1", "router_pairs": "v1"}
# the settings a clip's outputs depend on besides an image's (and `media` itself)
SHAPED_BY = {
    "filtered_images": ("video",),
    "clip_embeddings": ("models.t5_encoder_id", "models.t5_encoder_revision"),
    "dinov2_embeddings": ("video.embed_frames",),
    "clip_image_embeddings": ("video.embed_frames",),
    "latents": ("models.video_latent_encoder_id", "models.video_latent_encoder_revision", "video.num_frames"),
    "expert_shards": ("shards.include_mp4",),
}
# latents come from the causal video VAE, and clip_embeddings runs T5 beside CLIP's text tower
ROLES_OF = {"latents": ("video_latent_encoder",), "clip_embeddings": ("text_encoder", "t5_encoder")}
ARRAYS = {**IMAGE_ARRAYS, "clip_embeddings": (*IMAGE_ARRAYS["clip_embeddings"], ("t5_tokens", "t5_tokens", np.float16),
                                              ("t5_mask", "t5_mask", np.bool_))}


class VideoMedia:
    """Clips: decoded once by the clip filter, stored as mp4 crops that every later stage decodes."""

    name = "video"
    make_args = " MEDIA=video"
    shown_columns = ("duration", "motion", "rotation")
    latent_role = "video_latent_encoder"
    clips = True
    text_check_note = ("; T5 states (226 tokens of its width, zeros at padding) and their mask, each caption's mask "
                       "a run of real tokens then padding")
    latent_check_note = "(16, (T-1)/4+1, S/8, S/8) per clip"
    manifest_roles = ("text_encoder", "t5_encoder", "image_embedder", "video_latent_encoder")  # captions: alt text

    def __init__(self, settings: Settings):
        self.settings = settings
        self.frames = settings.video.embed_frames
        self.include_crops = settings.shards.include_mp4

    @property
    def demo(self) -> Demo:
        from ..lib.demo.video import (
            VIDEO_DEMO_VERSION,
            make_video_demo,
            video_url_table,
        )

        return Demo(make=make_video_demo, version=VIDEO_DEMO_VERSION, size=200, url_table=video_url_table,
                    url_col="url", caption_col="caption", noun="clips", title="video demo", stamp={"media": "video"})

    def description(self, asset: str) -> str | None:
        return DESCRIPTIONS.get(asset)

    def kinds(self, base: set[str]) -> set[str]:
        return base | {"video"}

    def code_version(self, asset: str) -> str:
        return CODE_VERSIONS.get(asset, "")

    def shaped_by(self, asset: str, base: tuple[str, ...]) -> tuple[str, ...]:
        return ("media", *base, *SHAPED_BY.get(asset, ()))

    def params(self):
        """The per-clip rules (lib/video/decode.VideoParams) from the video section and the filter's size rules."""
        from ..lib.video.decode import VideoParams

        s, v = self.settings, self.settings.video
        return VideoParams(image_size=s.filter.image_size, min_side=s.filter.min_side, fps=v.fps,
                           num_frames=v.num_frames, min_seconds=v.min_seconds, max_seconds=v.max_seconds,
                           static_threshold=v.static_threshold, scene_cuts=v.scene_cuts, cut_threshold=v.cut_threshold,
                           phash_max_distance=v.phash_max_distance, crf=v.crf,
                           max_pixels=min(s.ingest.max_image_pixels, VideoParams.max_pixels))

    def filter(self, raw_url: str, out, params: FilterParams, log: Callable[[str], None],
               map_units: Callable | None) -> dict:
        from ..lib.video.filtering import filter_video_folder

        return filter_video_folder(raw_url, str(out), self.params(), params, processes=self.settings.filter.processes,
                                   chunk_size=self.settings.video.chunk_size, log=log, map_units=map_units)

    def filter_metadata(self, stats: dict) -> dict:
        return {"video_params": MetadataValue.json(asdict(self.params())), "clips_per_s": stats["images_per_s"]}

    def roles(self, asset: str) -> tuple[str, ...]:
        if asset in ROLES_OF:
            return ROLES_OF[asset]
        return (ASSET_ROLES[asset],) if asset in ASSET_ROLES else ()

    def arrays(self, asset: str) -> tuple[ArraySpec, ...]:
        return ARRAYS.get(asset, ())

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        return {**embedding_shapes(self.settings), **video_shapes(self.settings)}

    def fan_in(self, column: Callable[[str], Any]) -> tuple[np.ndarray, pd.DataFrame]:
        """By the three keyframe pHashes."""
        from ..lib.video.filtering import fan_in_video_duplicates

        columns = (*FAN_IN_COLUMNS, "phash_middle", "phash_last")
        return fan_in_video_duplicates({col: column(col) for col in columns}, self.settings.video.phash_max_distance)

    def decode_stored(self, blobs: list[bytes]) -> np.ndarray:
        return decode_clips(blobs)

    def reconstruction_grid(self, originals: np.ndarray, reconstructions: np.ndarray) -> tuple[bytes, str]:
        return (clip_grid_png(originals, reconstructions),
                "originals (top) and VAE reconstructions, frames left to right")

    def shard_fields(self, clip_embeddings, dinov2_embeddings) -> VideoFields:
        """A clip's extra arrays (T5 states and mask, first-frame DINOv2) and its fps and length."""
        try:
            t5_tokens, t5_mask = clip_embeddings.array("t5_tokens"), clip_embeddings.array("t5_mask")
        except FileNotFoundError:
            raise ValueError(f"{clip_embeddings.path} holds no t5_tokens/t5_mask: it was written for media: image; "
                             "materialise clip_embeddings again with media: video") from None
        return VideoFields(t5_tokens=t5_tokens, t5_mask=t5_mask, dinov2=dinov2_embeddings.array("embeddings"),
                           fps=self.settings.video.fps, num_frames=self.settings.video.num_frames)

    def shard_members(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[tuple[int, ...], str]]:
        """The T5 states, their mask and the first frame's DINOv2."""
        return {"t5_tokens.npy": (shapes["t5_tokens"], "float16"), "t5_mask.npy": (shapes["t5_mask"], "bool"),
                "dinov2.npy": (shapes["dinov2"], "float32")}


def clip_grid_png(originals: np.ndarray, reconstructions: np.ndarray, clips: int = 4, frames: int = 5) -> bytes:
    """For the first `clips` clips, `frames` evenly spaced frames side by side, each clip's row of originals above
    its row of reconstructions, as one PNG."""
    from PIL import Image

    at = np.unique(np.linspace(0, originals.shape[1] - 1, frames).astype(int))
    rows = [Image.open(io.BytesIO(side_by_side_png(o[at], r[at]))) for o, r in zip(originals[:clips], reconstructions)]
    grid = Image.new("RGB", (rows[0].width, sum(r.height for r in rows) + 4 * (len(rows) - 1)), "white")
    for i, row in enumerate(rows):
        grid.paste(row, (0, i * (row.height + 4)))
    buf = io.BytesIO()
    grid.save(buf, "PNG")
    return buf.getvalue()
