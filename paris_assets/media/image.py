"""Images (media: image, the default): the graph as the asset docstrings describe it."""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

import numpy as np
import pandas as pd

from ..lib.images.filtering import fan_in_duplicates, filter_raw_folder
from ..lib.images.units import FilterParams
from ..lib.ingest.download import Demo, image_demo
from ..lib.outputs.validation import side_by_side_png
from ..lib.run.crops import decode_crops
from ..models.profiles import ASSET_ROLES, expected_shapes
from ..settings import Settings
from . import ArraySpec

# what each model asset holds per image: (array name, expected_shapes key, dtype)
ARRAYS = {"clip_embeddings": (("tokens", "clip_tokens", np.float16), ("pooled", "clip_pooled", np.float16)),
          "dinov2_embeddings": (("embeddings", "dinov2", np.float32),),
          "latents": (("latents", "latents", np.float16),),
          "clip_image_embeddings": (("embeddings", "clip_image", np.float16),)}
# kept.parquet's columns the duplicate search across parts reads
FAN_IN_COLUMNS = ("image_id", "phash", "sha256", "original_width", "original_height")


class ImageMedia:
    """Still images: crops through the image VAE, CLIP text embeddings of the captions, pHash duplicates."""

    name = "image"
    make_args = ""
    shown_columns = ("aesthetic",)
    latent_role = "latent_encoder"
    clips = False
    frames = None
    text_check_note = ""
    latent_check_note = "(4, 32, 32) per image"
    manifest_roles = ("captioner", "text_encoder", "image_embedder", "latent_encoder")

    def __init__(self, settings: Settings):
        self.settings = settings
        self.include_crops = settings.shards.include_jpg

    @property
    def demo(self) -> Demo:
        return image_demo()

    def description(self, asset: str) -> str | None:
        return None  # the asset's docstring describes the image graph

    def kinds(self, base: set[str]) -> set[str]:
        return base

    def code_version(self, asset: str) -> str:
        return ""

    def shaped_by(self, asset: str, base: tuple[str, ...]) -> tuple[str, ...]:
        return base

    def filter(self, raw_url: str, out, params: FilterParams, log: Callable[[str], None],
               map_units: Callable | None) -> dict:
        f = self.settings.filter
        return filter_raw_folder(raw_url, str(out), params, processes=f.processes, chunk_size=f.chunk_size, log=log,
                                 map_units=map_units)

    def filter_metadata(self, stats: dict) -> dict:
        return {}

    def roles(self, asset: str) -> tuple[str, ...]:
        return (ASSET_ROLES[asset],) if asset in ASSET_ROLES else ()

    def arrays(self, asset: str) -> tuple[ArraySpec, ...]:
        return ARRAYS.get(asset, ())

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        return expected_shapes(self.settings)

    def fan_in(self, column: Callable[[str], Any]) -> tuple[np.ndarray, pd.DataFrame]:
        return fan_in_duplicates({col: column(col) for col in FAN_IN_COLUMNS}, self.settings.filter.phash_max_distance)

    def decode_stored(self, blobs: list[bytes]) -> np.ndarray:
        return decode_crops(blobs)

    def reconstruction_grid(self, originals: np.ndarray, reconstructions: np.ndarray) -> tuple[bytes, str]:
        return side_by_side_png(originals, reconstructions), "originals (top) and VAE reconstructions"

    def shard_fields(self, clip_embeddings, dinov2_embeddings) -> None:
        return None

    def shard_members(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[tuple[int, ...], str]]:
        return {}
