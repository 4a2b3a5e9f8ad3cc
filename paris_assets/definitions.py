"""Wiring only: settings -> assets, IO managers. `dagster dev` and `dagster asset materialize` load `defs`."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job

from .assets.clustering import build_cluster_labels, build_cluster_report
from .assets.common import PER_PART
from .assets.embeddings import build_model_assets
from .assets.filtered_images import build_filtered_images
from .assets.quality import build_protected_images, build_quality_scores
from .assets.raw_images import build_raw_images
from .assets.training import build_expert_shards, build_router_pairs
from .checks.clustering import build_cluster_checks
from .checks.embeddings import build_embedding_checks
from .checks.training import build_training_checks
from .executors import reaping_in_process_executor, reaping_multiprocess_executor
from .io_managers import NpyIOManager, ParquetIOManager, ShardsIOManager
from .sensors.alerts import build_alert_sensors
from .settings import Settings, load_settings


def build_defs(settings: Settings | None = None) -> Definitions:
    settings = settings or load_settings()
    root = settings.data_root
    return Definitions(
        assets=[build_raw_images(settings), build_filtered_images(settings), *build_model_assets(settings),
                build_quality_scores(settings), build_protected_images(settings),
                build_cluster_labels(settings), build_cluster_report(settings), build_expert_shards(settings),
                build_router_pairs(settings)],
        asset_checks=build_embedding_checks(settings) + build_cluster_checks(settings) + build_training_checks(settings),
        sensors=build_alert_sensors(settings),
        jobs=part_jobs(settings),
        executor=reaping_in_process_executor if settings.executor == "in_process" else reaping_multiprocess_executor,
        resources={
            "tables_io": ParquetIOManager(root=root),
            "arrays_io": NpyIOManager(root=root),
            "shards_io": ShardsIOManager(root=root),
        },
    )


FAN_IN = ("protected_images", "cluster_labels", "cluster_report", "expert_shards", "router_pairs")


def part_jobs(settings: Settings) -> list:
    """With partitions: `one_part` (every per-image asset of one source part, a run per part) and `fan_in` (the
    global steps over every part): what `python -m paris_assets.parts backfill` launches, and what the UI lists."""
    if not settings.partitions.size:
        return []
    return [define_asset_job("one_part", selection=AssetSelection.assets(*PER_PART),
                             description="Every per-image asset of one source part (a run per part)"),
            define_asset_job("fan_in", selection=AssetSelection.assets(*FAN_IN),
                             description="Duplicates across parts, clustering, report, expert shards, router pairs")]


defs = build_defs()
