"""What every asset shares: code versions from settings, staging folders, metadata formatting."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from dagster import DynamicPartitionsDefinition, MetadataValue

from ..lib.ingest.partitions import PARTS
from ..lib.store import storage
from ..media import media_for
from ..models.profiles import model_fingerprint
from ..settings import Settings

# Bump an asset's entry when its code changes what it writes; settings changes are folded in automatically.
CODE_VERSIONS = {"raw_images": "2", "filtered_images": "3", "captions": "2", "clip_embeddings": "2",
                 "dinov2_embeddings": "1", "latents": "2", "cluster_labels": "2", "cluster_report": "2",
                 "expert_shards": "2", "router_pairs": "2",
                 "clip_image_embeddings": "1", "quality_scores": "1", "protected_images": "1"}

# The settings each asset's output depends on: editing any of them marks that asset (and only it) Unsynced.
SHAPED_BY = {
    "raw_images": ("seed", "source", "ingest.samples_per_shard", "ingest.timeout", "ingest.retries",
                   "ingest.user_agent_token", "ingest.respect_opt_out", "ingest.refused_networks",
                   "ingest.refused_hosts"),
    "filtered_images": ("filter.image_size", "filter.resize_mode", "filter.min_side", "filter.max_aspect",
                        "filter.blank_std", "filter.max_punsafe", "filter.max_pwatermark", "filter.require_caption",
                        "filter.nudenet", "filter.nudenet_classes", "filter.nudenet_threshold",
                        "filter.phash_max_distance", "filter.jpeg_quality", "ingest.max_image_pixels",
                        "filter.caption_languages", "filter.caption_min_language_score", "filter.caption_min_words",
                        "filter.caption_boilerplate"),
    "captions": ("seed", "models.profile", "models.captioner_id", "models.captioner_revision", "captions"),
    "clip_embeddings": ("seed", "models.profile", "models.text_encoder_id", "models.text_encoder_revision"),
    "dinov2_embeddings": ("seed", "models.profile", "models.image_embedder_id", "models.image_embedder_revision",
                          "models.dinov2_pooling"),
    "latents": ("seed", "models.profile", "models.latent_encoder_id", "models.latent_encoder_revision",
                "models.latent_sampling"),
    "clip_image_embeddings": ("seed", "models.profile", "models.text_encoder_id", "models.text_encoder_revision"),
    "protected_images": ("seed", "models.profile", "quality.protected", "filter.image_size", "models.text_encoder_id",
                         "models.text_encoder_revision", "models.image_embedder_id", "models.image_embedder_revision"),
    "quality_scores": ("seed", "models.profile", "quality.aesthetic_weights", "quality.nsfw_weights", "quality.prefer"),
    "cluster_labels": ("seed", "clustering", "quality.min_aesthetic", "filter.max_punsafe", "quality.semdedup",
                       "quality.protected", "shards.heldout_fraction", "shards.heldout_max"),
    "cluster_report": ("seed", "report.sample_size"),
    "expert_shards": ("seed", "shards"),
    "router_pairs": ("seed", "shards.heldout_fraction", "shards.heldout_max"),
}


def shaped_by(settings: Settings, asset: str) -> tuple[str, ...]:
    """The settings `asset`'s output depends on under these settings' media."""
    return media_for(settings).shaped_by(asset, SHAPED_BY[asset])


def code_version(settings: Settings, asset: str) -> str:
    """CODE_VERSIONS, the settings in SHAPED_BY and, for a model asset, the model's resolved commit, device type
    and dtype: changing any of them marks the asset Unsynced."""
    media = media_for(settings)
    version = f"{CODE_VERSIONS[asset]}{media.code_version(asset)}-{settings.fingerprint(*shaped_by(settings, asset))}"
    model = model_fingerprint(settings, asset, media.roles(asset))
    return f"{version}-{model}" if model else version


def staging(settings: Settings, asset: str, part: str | None = None) -> Path:
    return storage.staging_dir(settings.data_root, f"{asset}-{part}" if part else asset)


# computed per source part when partitions.size is set; the other assets fan in over every part
PER_PART = ("raw_images", "filtered_images", "captions", "clip_embeddings", "dinov2_embeddings", "latents",
            "clip_image_embeddings", "quality_scores")


def demo_dir(settings: Settings) -> Path:
    """Where the demo source's files are made (local: under data_dir; with data_dir on an object store: beside
    the local staging folders)."""
    root = settings.data_root
    return storage.local_path(root) / "demo_source" if storage.is_local(root) else storage.staging_base(root) / "demo_source"


def parts_def(settings: Settings) -> DynamicPartitionsDefinition | None:
    """The per-image assets' partitions (source parts, lib/ingest/partitions.py), or None when partitions.size is 0."""
    return DynamicPartitionsDefinition(name=PARTS) if settings.partitions.size else None


def part_of(context) -> str | None:
    """The source part this step computes, or None for an unpartitioned asset."""
    return context.partition_key if context.has_partition_key else None


def settings_metadata(settings: Settings, asset: str) -> MetadataValue:
    return MetadataValue.json({key: _dig(settings.as_dict(), key) for key in shaped_by(settings, asset)})


def _dig(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def counts_table(counts: dict[str, int], key: str = "reason") -> MetadataValue:
    rows = "\n".join(f"| {md_escape(name)} | {n:,} |" for name, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return MetadataValue.md(f"| {key} | count |\n|---|---:|\n{rows}" if counts else "(none)")


def preview(frame: pd.DataFrame, rows: int = 10) -> MetadataValue:
    """The first rows as a markdown table; text cells (alt text, captions, URLs: untrusted) escaped."""
    if not len(frame):
        return MetadataValue.md("(empty)")
    head = frame.head(rows).copy()
    for col in head.columns:
        if not pd.api.types.is_numeric_dtype(head[col]):
            head[col] = head[col].map(lambda v: md_escape(v) if isinstance(v, (str, bytes)) else v)
    head.columns = [md_escape(c) for c in head.columns]
    return MetadataValue.md(head.to_markdown(index=False))


def md_escape(text) -> str:
    """Untrusted text as literal markdown on one line: whitespace (newlines too) collapsed, and every ASCII
    punctuation character backslash-escaped, which CommonMark renders as the character itself, so no table
    cell break, image, link, autolink, emphasis or HTML can come out of an alt text."""
    return _MD_PUNCTUATION.sub(r"\\\1", " ".join(str(text).split()))


_MD_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
