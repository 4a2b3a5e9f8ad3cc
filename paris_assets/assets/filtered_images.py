"""filtered_images: every downloaded image decoded once, checked, de-duplicated and cropped."""


from dataclasses import asdict

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, MetadataValue, asset

from ..engines import engine_for
from ..io_managers import AssetFolder
from ..lib.images.filtering import FilterParams
from ..media import media_for
from ..settings import Settings
from .common import code_version, counts_table, part_of, parts_def, preview, settings_metadata, staging


def filter_params(settings: Settings) -> FilterParams:
    f = settings.filter
    names = set(FilterParams.__dataclass_fields__) - {"max_image_pixels"}
    return FilterParams(**{n: getattr(f, n) for n in names}, max_image_pixels=settings.ingest.max_image_pixels)


def build_filtered_images(settings: Settings) -> AssetsDefinition:
    media = media_for(settings)

    @asset(
        group_name="ingest",
        kinds=media.kinds({"parquet", "webdataset"}),
        description=media.description("filtered_images"),
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
            stats = media.filter(str(raw_images.path), out, filter_params(settings), context.log.info, map_units)
        kept = pd.read_parquet(out / "kept.parquet", columns=["image_id", "alt_text", "original_width",
                                                              "original_height", *media.shown_columns, "phash"])
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
            **media.filter_metadata(stats),
        })
        return out

    return filtered_images
