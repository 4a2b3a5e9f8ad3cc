"""What is being curated, as one object chosen once from the settings: `media_for(settings)`.

Everything that differs between images and clips lives behind the `Media` Protocol, one module per media
(`image.py`, `video.py`). Assets, checks and the CLI ask the object; outside this package nothing reads
`settings.media` or compares media names. A third media (say audio) is one new module implementing `Media`,
plus its name in settings.py's `media` choices and a line in `media_for`.
"""

from __future__ import annotations

from typing import Any, Protocol
from collections.abc import Callable

import numpy as np
import pandas as pd

from ..lib.images.units import FilterParams
from ..lib.ingest.download import Demo
from ..lib.outputs.shards import VideoFields
from ..settings import Settings

# One array an asset writes per item: (name in the asset's folder, key in expected_shapes(), dtype).
ArraySpec = tuple[str, str, type]


class Media(Protocol):
    """What a media must provide. Every member is read-only; an object is built for one Settings.

    Identity and the UI
      settings        the Settings the object was built for.
      name            settings.media's value; written to the metadata and pipeline_manifest.json ("media").
      make_args       what `make demo|ui|browse` need to pick this media ("" for the default, " MEDIA=video").
      demo            the demo source (lib/ingest/download.Demo: maker, version, default size, URL table).
      description(a)  asset a's description in the UI, or None to use the asset's docstring (the image graph's).
      kinds(base)     asset kinds: the asset's own `base` plus the media's (video adds "video").
      code_version(a) the suffix appended to assets/common.CODE_VERSIONS[a] ("" if this media adds none).
      shaped_by(a, base)  the settings a's output depends on: `base` (assets/common.SHAPED_BY[a]) plus the
                      media's own; editing any of them marks a Unsynced.

    filtered_images
      filter(raw_url, out, params, log, map_units)  decode, judge and crop every downloaded item of the committed
                      raw_images folder at raw_url into `out` (kept.parquet, rejected.parquet with a reason per
                      refused item, crops/); returns the stats the asset shows (input, kept, rejected, dropped...).
                      `params` is the shared per-item FilterParams; map_units the engine's work-unit mapper.
      shown_columns   kept.parquet columns shown in the preview besides the common ones.
      filter_metadata(stats)  extra materialisation metadata (the media's own parameters and rates).

    The model stack (assets/embeddings.py)
      roles(a)        the model roles asset a runs, in order (models/profiles.py's roles); a text asset's second
                      role adds its arrays to the first one's folder (video: T5 beside CLIP's text tower).
      latent_role     the role that encodes latents (and decodes them back for the reconstruction check).
      clips           whether each stored item is a clip of frames: the latent encoder takes it whole, and the
                      planner plans the clip filter, the video VAE and T5 (plan_settings.py).
      frames          what an image model sees of a stored item: None (the item is an image) or
                      settings.video.embed_frames ("first" or "keyframes").
      arrays(a)       the per-item arrays asset a writes: ArraySpec tuples (name, shape key, dtype).
      expected_shapes()  per-row shape of every shape key, from the models' configs (loads no weights).

    Checks and training outputs
      fan_in(column)  duplicates across source parts at the fan-in: (rows kept, dropped table); `column(name)` reads
                      one column of every part's kept.parquet, parts one after the other.
      text_check_note, latent_check_note  what the clip_embeddings and latents checks promise, in words.
      decode_stored(blobs)  stored crops (or clips) as uint8 arrays, what the reconstruction check compares.
      reconstruction_grid(originals, reconstructions)  (PNG bytes, caption) shown by the latents check.
      include_crops   whether a shard sample carries its stored crop (jpg / mp4: shards.include_jpg|include_mp4).
      shard_fields(clip_embeddings, dinov2_embeddings)  the arrays a sample adds beyond an image's (VideoFields),
                      or None; raises naming the asset to re-materialise when they are missing.
      shard_members(shapes)  member -> (shape, dtype) a sample adds beyond an image's (checks/training.py).
      manifest_roles  the model roles pipeline_manifest.json names.
    """

    settings: Settings
    name: str
    make_args: str
    shown_columns: tuple[str, ...]
    latent_role: str
    clips: bool
    frames: str | None
    text_check_note: str
    latent_check_note: str
    include_crops: bool
    manifest_roles: tuple[str, ...]

    @property
    def demo(self) -> Demo: ...

    def description(self, asset: str) -> str | None: ...

    def kinds(self, base: set[str]) -> set[str]: ...

    def code_version(self, asset: str) -> str: ...

    def shaped_by(self, asset: str, base: tuple[str, ...]) -> tuple[str, ...]: ...

    def filter(self, raw_url: str, out, params: FilterParams, log: Callable[[str], None],
               map_units: Callable | None) -> dict: ...

    def filter_metadata(self, stats: dict) -> dict: ...

    def roles(self, asset: str) -> tuple[str, ...]: ...

    def arrays(self, asset: str) -> tuple[ArraySpec, ...]: ...

    def expected_shapes(self) -> dict[str, tuple[int, ...]]: ...

    def fan_in(self, column: Callable[[str], Any]) -> tuple[np.ndarray, pd.DataFrame]: ...

    def decode_stored(self, blobs: list[bytes]) -> np.ndarray: ...

    def reconstruction_grid(self, originals: np.ndarray, reconstructions: np.ndarray) -> tuple[bytes, str]: ...

    def shard_fields(self, clip_embeddings, dinov2_embeddings) -> VideoFields | None: ...

    def shard_members(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[tuple[int, ...], str]]: ...


def media_for(settings: Settings) -> Media:
    """The media these settings curate: the one place that reads `settings.media`."""
    from .image import ImageMedia
    from .video import VideoMedia

    kinds = {"image": ImageMedia, "video": VideoMedia}
    return kinds[settings.media](settings)


def expected_shapes(settings: Settings) -> dict[str, tuple[int, ...]]:
    """Per-row shapes the arrays must have under these settings (their media's expected_shapes)."""
    return media_for(settings).expected_shapes()
