"""raw_images: the source's images as WebDataset tars, downloaded by img2dataset."""

from dagster import AssetExecutionContext, AssetsDefinition, asset

from ..engines import engine_for
from ..lib.ingest.download import ingest, source_identity
from ..lib.ingest.partitions import part_rows
from ..lib.store import storage
from ..lib.store.chunks import work_key
from ..media import media_for
from ..settings import Settings
from .common import code_version, counts_table, demo_dir, part_of, parts_def, settings_metadata, staging


def build_raw_images(settings: Settings) -> AssetsDefinition:
    media = media_for(settings)

    @asset(
        group_name="ingest",
        kinds=media.kinds({"webdataset", "parquet"}),
        description=media.description("raw_images"),
        io_manager_key="shards_io",
        code_version=code_version(settings, "raw_images"),
        partitions_def=parts_def(settings),
    )
    def raw_images(context: AssetExecutionContext):
        """The source's images, as downloaded: img2dataset WebDataset tars with the original bytes, plus
        samples.parquet (one row per source item: metadata, download status, shard and key). With partitions,
        one source part's rows."""
        part = part_of(context)
        identity = source_identity(settings.resolved_source)
        if identity:  # a URL list: a run killed part-way resumes from the shards img2dataset finished
            out = storage.staging_dir(settings.data_root, f"raw_images-{part}" if part else "raw_images",
                                      key=work_key(identity, code_version(settings, "raw_images"), *([part] if part else [])))
            context.log.info(f"raw_images: downloading into {out} (kept if the run dies, resumed by the next)")
        else:
            out = staging(settings, "raw_images", part)
        stats = ingest(settings.resolved_source, settings.ingest, str(out), demo_dir=str(demo_dir(settings)), seed=settings.seed,
                       log=context.log.info, rows=part_rows(part) if part else None,
                       download_options=engine_for(settings.execution).download_options(), demo=media.demo)
        context.add_output_metadata({
            "source_kind": settings.source.kind,
            **({"source_rows": f"{part_rows(part)[0]}-{part_rows(part)[1]}"} if part else {}),
            "requested": stats["requested"],
            "downloaded": stats["downloaded"],
            "failed": stats["failed"],
            "refused_before_download": stats["refused_before_download"],
            "refused_by_reason": counts_table(stats["refused_by_reason"]),
            "failed_by_reason": counts_table(stats["failed_by_reason"]),
            "images_per_s": stats["images_per_s"],
            "seconds": stats["seconds"],
            # what reading the source cost: a trial of a release should read about `limit` rows' worth
            **{key: stats[key] for key in ("row_groups_read", "row_groups_total", "bytes_read") if key in stats},
            "settings": settings_metadata(settings, "raw_images"),
        })
        return out

    return raw_images
