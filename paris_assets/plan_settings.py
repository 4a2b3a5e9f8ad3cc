"""PlanInputs from the settings file: the plain values (models, sizes, shard settings) lib/plan's planner takes."""

from __future__ import annotations

from pathlib import Path

from .lib.plan.flops import PARIS_CONFIGS, PARIS_IDS, PARIS_VIDEO_IDS
from .lib.plan.planner import PlanInputs, read_config
from .media import media_for
from .settings import Settings


def role_config(settings: Settings, role: str, ids: dict[str, str] = PARIS_IDS) -> tuple[str, dict, bool]:
    """(model id, config, whether a paris model stands in for a tiny one) for a role: an override the plan knows
    or a local folder, else the paris profile's model (the tiny profile's models have no throughput worth
    planning, so the paris ones stand in for them)."""
    override = getattr(settings.models, f"{role}_id")
    if override:
        if override in PARIS_CONFIGS:
            return override, PARIS_CONFIGS[override], False
        local = Path(settings.resolve(override))
        if (local / "config.json").exists():
            return override, read_config(local), False
        raise ValueError(f"models.{role}_id {override!r}: no config known to the plan and no local "
                         f"config.json; plan with the default and pass --rate for its stage")
    return ids[role], PARIS_CONFIGS[ids[role]], settings.models.profile == "tiny"


def inputs_from_settings(settings: Settings, images: int, **overrides) -> PlanInputs:
    """PlanInputs shaped by the settings file: image size, captions on or off, the models, K, shard settings,
    the held-out split, batch sizes, and with media: video the clip (fps, num_frames, embed_frames, include_mp4)
    and the video models; `overrides` (gpus, mfu, rates ...) as given on the command line."""
    configs, stand_ins, video = {}, [], media_for(settings).clips
    unused = ("latent_encoder", "captioner") if video else ()  # clips: the video VAE; alt text, never BLIP-2
    for role in PARIS_IDS:
        model_id, config, stand_in = role_config(settings, role)
        configs[role] = (model_id, config)
        if stand_in and role not in unused and (role != "captioner" or settings.captions.source == "blip2"):
            stand_ins.append(model_id)
    video_fields = {}
    if video:
        video_configs = {}
        for role in PARIS_VIDEO_IDS:
            model_id, config, stand_in = role_config(settings, role, PARIS_VIDEO_IDS)
            video_configs[role] = (model_id, config)
            stand_ins += [model_id] if stand_in else []
        video_fields = {"media": "video", "num_frames": settings.video.num_frames, "fps": settings.video.fps,
                        "embed_frames": settings.video.embed_frames, "include_mp4": settings.shards.include_mp4,
                        "video_configs": video_configs}
    notes = [(f"models.profile is tiny (random weights, no throughput worth planning): planned with the paris "
              f"profile's {', '.join(stand_ins)}")] if stand_ins else []
    if "partition_size" not in overrides and settings.partitions.size:
        overrides["partition_size"] = settings.partitions.size
    s = settings.shards
    return PlanInputs(images=images, configs=configs, image_size=settings.filter.image_size,
                      captions_blip2=settings.captions.source == "blip2",
                      max_new_tokens=settings.captions.max_new_tokens,
                      caption_batch_size=settings.models.caption_batch_size, k=settings.clustering.k,
                      loader_threads=settings.models.loader_threads,
                      include_clip_tokens=s.include_clip_tokens, include_jpg=s.include_jpg,
                      max_samples_per_shard=s.max_samples_per_shard, max_shard_bytes=s.max_shard_bytes,
                      heldout_fraction=s.heldout_fraction, heldout_max=settings.heldout_max, notes=tuple(notes),
                      **video_fields, **overrides)
