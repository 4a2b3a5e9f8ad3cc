"""The settings file: `paris.yaml` at the project root, or the file named by `PARIS_CONFIG`.

Typed and validated at load: a wrong key or value fails before any download or model load, with a message
that names the key and what is allowed. Relative paths resolve against the settings file's folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from .settings_sections import (TINY_FEATURES_NOTE, AlertSettings, CaptionSettings, ClusteringSettings,  # noqa: F401
                                ExecutionSettings, FilterSettings, IngestSettings, ModelSettings, PartitionSettings,
                                QualitySettings, ReportSettings, SettingsError, ShardSettings, SourceSettings,
                                VideoSettings, _Section)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_ENV = "PARIS_CONFIG"


class Settings(_Section):
    # image: the Paris image graph; video: the same asset names for text-to-video (Paris 2.0): clips, T5, video VAE
    media: Literal["image", "video"] = "image"
    data_dir: str = "data"  # every asset writes under here; a local path or an fsspec URL (s3://, gs://, memory://)
    seed: int = 0  # one seed for every sampled or shuffled choice: same inputs + settings -> same outputs
    # how a run launched from the UI, a schedule or `dagster asset materialize` executes its steps: multiprocess
    # runs independent steps side by side, one process each (~3 s start-up per step); in_process runs them one
    # after another in the run's process, quicker on a laptop and in tests
    executor: Literal["multiprocess", "in_process"] = "multiprocess"
    source: SourceSettings = SourceSettings()
    ingest: IngestSettings = IngestSettings()
    filter: FilterSettings = FilterSettings()
    models: ModelSettings = ModelSettings()
    captions: CaptionSettings = CaptionSettings()
    clustering: ClusteringSettings = ClusteringSettings()
    report: ReportSettings = ReportSettings()
    shards: ShardSettings = ShardSettings()
    quality: QualitySettings = QualitySettings()
    alerts: AlertSettings = AlertSettings()
    execution: ExecutionSettings = ExecutionSettings()
    partitions: PartitionSettings = PartitionSettings()
    video: VideoSettings = VideoSettings()

    # Where this file lives: relative paths resolve against it. Not a key users set.
    base_dir: str = Field(default=str(PROJECT_ROOT), exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _video_captions(cls, data):
        """media: video captions with the source text unless told otherwise (and refuses blip2 below)."""
        if isinstance(data, dict) and data.get("media") == "video":
            captions = data.get("captions") or {}
            if isinstance(captions, dict) and "source" not in captions:
                data = {**data, "captions": {**captions, "source": "alt_text"}}
        return data

    @model_validator(mode="after")
    def _media_fits(self) -> "Settings":
        kind = self.source.kind
        if self.media == "video":
            if kind == "image_folder":
                raise ValueError("source.kind is 'image_folder' but media is 'video': use kind: video_folder")
            if self.captions.source != "alt_text":
                raise ValueError("media: video needs captions.source: alt_text (BLIP-2 captions images, not clips)")
            if self.shards.include_jpg:
                raise ValueError("shards.include_jpg is for images: with media: video set shards.include_mp4")
            if self.filter.image_size % 8:
                raise ValueError(f"filter.image_size {self.filter.image_size}: with media: video it must be a "
                                 "multiple of 8 (the video VAE downsamples by 8)")
        else:
            if kind == "video_folder":
                raise ValueError("source.kind is 'video_folder' but media is 'image': set media: video")
            if self.shards.include_mp4:
                raise ValueError("shards.include_mp4 is for media: video: with images set shards.include_jpg")
        return self

    @property
    def heldout_max(self) -> int:
        """shards.heldout_max, or its default for the media: 10,000 images, 2,048 clips."""
        if self.shards.heldout_max is not None:
            return self.shards.heldout_max
        return 2048 if self.media == "video" else 10_000

    def resolve(self, path: str) -> str:
        """An fsspec URL as given; a relative local path against the settings file's folder."""
        if "://" in path or os.path.isabs(path):
            return path
        return str(Path(self.base_dir) / path)

    @property
    def resolved_source(self) -> SourceSettings:
        """The source with its path resolved against the settings file's folder."""
        if not self.source.path:
            return self.source
        return self.source.model_copy(update={"path": self.resolve(self.source.path)})

    @property
    def data_root(self) -> str:
        return self.resolve(self.data_dir)

    def fingerprint(self, *sections: str) -> str:
        """A short hash of the named settings (dotted keys allowed): what an asset's code_version folds in."""
        picked = {name: _dig(self, name) for name in sections}
        blob = json.dumps(picked, sort_keys=True, default=_jsonable)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def as_dict(self) -> dict:
        return self.model_dump(mode="json", exclude={"base_dir"})


def _dig(settings: BaseModel, dotted: str):
    value = settings
    for part in dotted.split("."):
        value = getattr(value, part)
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _jsonable(value):
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot fingerprint {type(value).__name__}")


def default_config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or PROJECT_ROOT / "paris.yaml")


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Read and validate the settings file; a missing default file means all defaults."""
    path = Path(path) if path is not None else default_config_path()
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SettingsError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise SettingsError(f"{path}: expected a mapping of settings at the top level, got {type(raw).__name__}")
    elif os.environ.get(CONFIG_ENV) and Path(os.environ[CONFIG_ENV]) == path:
        raise SettingsError(f"{CONFIG_ENV}={path}: no such file")
    else:
        raw = {}
    return parse_settings(raw, base_dir=path.resolve().parent, origin=str(path))


def parse_settings(raw: dict, base_dir: str | os.PathLike = PROJECT_ROOT, origin: str = "settings") -> Settings:
    if "base_dir" in raw:
        raise SettingsError(f"{origin}: unknown key 'base_dir' (it is derived from the file's location)")
    try:
        return Settings(**raw, base_dir=str(base_dir))
    except ValidationError as exc:
        raise SettingsError(f"{origin}: invalid settings\n" + _explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling against docs/settings.md)"
        elif err["type"] == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            msg = f"got {err['input']!r}; allowed values: {expected}"
        elif "input" in err and err["type"] != "value_error":
            msg = f"{msg} (got {err['input']!r})"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)
