"""filtered_images: every downloaded image decoded once, checked, de-duplicated and cropped."""


from dataclasses import asdict

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, MetadataValue, asset

from ..engines import engine_for
from ..io_managers import AssetFolder
from ..lib.images.filtering import FilterParams, filter_raw_folder
from ..settings import Settings
from .common import (
    code_version,
    counts_table,
    kinds,
    media_description,
    part_of,
    parts_def,
    preview,
    settings_metadata,
    staging,
)


def filter_params(settings: Settings) -> FilterParams:
    f = settings.filter
    names = set(FilterParams.__dataclass_fields__) - {"max_image_pixels"}
    return FilterParams(**{n: getattr(f, n) for n in names}, max_image_pixels=settings.ingest.max_image_pixels)


def video_params(settings: Settings):
    """media: video: the per-clip rules (lib/video/decode.VideoParams) from the video section and the filter's size rules."""
    from ..lib.video.decode import VideoParams

    v = settings.video
    return VideoParams(image_size=settings.filter.image_size, min_side=settings.filter.min_side, fps=v.fps,
                       num_frames=v.num_frames, min_seconds=v.min_seconds, max_seconds=v.max_seconds,
                       static_threshold=v.static_threshold, scene_cuts=v.scene_cuts, cut_threshold=v.cut_threshold,
                       phash_max_distance=v.phash_max_distance, crf=v.crf,
                       max_pixels=min(settings.ingest.max_image_pixels, VideoParams.max_pixels))


def _filter(settings: Settings, raw_url: str, out, log, map_units) -> dict:
    """The image filter, or with media: video the clip filter (lib/video/filtering), into `out`."""
    if settings.media == "video":
        from ..lib.video.filtering import filter_video_folder

        return filter_video_folder(raw_url, str(out), video_params(settings), filter_params(settings),
                                   processes=settings.filter.processes, chunk_size=settings.video.chunk_size,
                                   log=log, map_units=map_units)
    return filter_raw_folder(raw_url, str(out), filter_params(settings), processes=settings.filter.processes,
                             chunk_size=settings.filter.chunk_size, log=log, map_units=map_units)


def build_filtered_images(settings: Settings) -> AssetsDefinition:
    @asset(
        group_name="ingest",
        kinds=kinds(settings, {"parquet", "webdataset"}),
        description=media_description(settings, "filtered_images"),
        io_manager_key="tables_io",
        ins={"raw_images": AssetIn()},
        code_version=code_version(settings, "filtered_images"),
        partitions_def=parts_def(settings),
    )
    def filtered_images(context: AssetExecutionContext, raw_images: AssetFolder):
        """The images fit to train on: kept.parquet (one row per image, in crop order), rejected.parquet
        (image_id, url, reason, detail) and crops/ (the square crops every later stage reads). With partitions,
        one source part's images, duplicates judged within the part (cluster_labels judges them across parts)."""
        out = staging(settings, "filtered_images", part_of(context))
        units = engine_for(settings.execution).units(settings.filter.processes, "filtered_images", context.log.info)
        with units as (engine, map_units):
            stats = _filter(settings, str(raw_images.path), out, context.log.info, map_units)
        shown = ["duration", "motion", "rotation"] if settings.media == "video" else ["aesthetic"]
        kept = pd.read_parquet(out / "kept.parquet", columns=["image_id", "alt_text", "original_width",
                                                              "original_height", *shown, "phash"])
        rejected = pd.read_parquet(out / "rejected.parquet")
        context.add_output_metadata({
            "input": stats["input"],
            "kept": stats["kept"],
            "rejected": stats["rejected"],
            "kept_fraction": stats["kept_fraction"],
            "dropped_by_reason": counts_table(stats["dropped"]),
            **{f"dropped_{reason}": n for reason, n in stats["dropped"].items()},
            "images_per_s": stats["images_per_s"],
            "decode_images_per_s": stats["decode_images_per_s"],
            "seconds": stats["seconds"],
            "engine": engine,
            "kept_preview": preview(kept),
            "rejected_preview": preview(rejected.groupby("reason").head(1)),
            "settings": settings_metadata(settings, "filtered_images"),
            "filter_params": MetadataValue.json(asdict(filter_params(settings))),
            **({"video_params": MetadataValue.json(asdict(video_params(settings))),
                "clips_per_s": stats["images_per_s"]} if settings.media == "video" else {}),
        })
        return out

    return filtered_images
