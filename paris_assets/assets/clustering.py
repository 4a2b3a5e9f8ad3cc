"""cluster_labels and cluster_report: the partition every expert is trained on, and what explains it."""

import time
from typing import Optional

import numpy as np
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, Config, MetadataValue, asset

from ..io_managers import AssetFolder, AssetParts, images_of
from ..lib import storage
from ..lib.arrays import select_rows
from ..lib.cluster_report import make_report
from ..lib.clustering import Clustering, assign, cluster
from ..lib.filtering import fan_in_duplicates
from ..lib.crops import decode_crops, read_crop_rows
from ..lib.validation import inline_jpeg
from ..settings import Settings
from .common import code_version, md_escape, preview, settings_metadata, staging


class ClusterRunConfig(Config):
    k: Optional[int] = None  # for this run only, instead of clustering.k (set it in the launchpad)


def build_cluster_labels(settings: Settings) -> AssetsDefinition:
    c = settings.clustering

    @asset(group_name="clustering", kinds={"faiss", "numpy"}, io_manager_key="arrays_io",
           ins={"dinov2_embeddings": AssetIn(), "filtered_images": AssetIn()},
           code_version=code_version(settings, "cluster_labels"))
    def cluster_labels(context: AssetExecutionContext, config: ClusterRunConfig, dinov2_embeddings: AssetFolder,
                       filtered_images: AssetFolder):
        """Each image's cluster (= its expert): two-stage k-means of the DINOv2 features into K partitions.
        labels.npy (N,) int32, centroids.npy (K, D) float32, distances.npy (N,) cosine distance to the assigned
        centroid, image_ids.npy, rows.npy (each image's row in kept.parquet, or in every part's kept rows one
        after the other); with partitions, duplicates across parts are dropped here first (duplicates.parquet:
        image_id, reason, detail naming the image kept), so no expert trains on them."""
        k = config.k or c.k
        started = time.perf_counter()
        out = staging(settings, "cluster_labels")
        rows, dropped = (fan_in_duplicates({col: filtered_images.column("kept", col) for col in FAN_IN_COLUMNS},
                                           settings.filter.phash_max_distance)
                         if isinstance(filtered_images, AssetParts) else (None, None))
        features = select_rows(dinov2_embeddings.array("embeddings"), rows)
        previous = _previous_centroids(settings, k) if settings.partitions.assign_to_existing else None
        if previous is not None:
            labels, distances = assign(features, previous[0])
            result = Clustering(labels, previous[0], distances, 0, [
                f"assigned to the {k} centroids of the previous clustering (partitions.assign_to_existing)"])
        else:
            result = cluster(features, k, c.method, c.fine_k, c.train_sample, settings.seed, c.backend, c.iterations)
        for note in result.notes:
            context.log.info(f"cluster_labels: {note}")
        image_ids = np.asarray(select_rows(dinov2_embeddings.array("image_ids"), rows))
        for name, value in {"labels": result.labels, "centroids": result.centroids, "distances": result.distances,
                            "image_ids": image_ids, "rows": np.arange(len(image_ids)) if rows is None else rows}.items():
            np.save(out / f"{name}.npy", value)
        if dropped is not None:
            dropped.to_parquet(out / "duplicates.parquet", index=False)
        sizes = np.bincount(result.labels, minlength=k)
        parts = {} if rows is None else {
            "parts": len(filtered_images.keys), "duplicates_across_parts": len(dropped),
            "duplicates_preview": preview(dropped)}
        if previous is not None:
            parts["assigned_to_existing_centroids"] = int((~np.isin(image_ids, previous[1])).sum())
        context.add_output_metadata({
            "k": k, "k_source": "run config" if config.k else "settings", "method": c.method, "backend": c.backend,
            "fine_k": result.fine_k, "images": int(len(result.labels)), "seconds": round(time.perf_counter() - started, 2),
            **parts,
            "sizes": MetadataValue.md("| cluster | images |\n|---:|---:|\n" + "\n".join(
                f"| {i} | {n:,} |" for i, n in enumerate(sizes))),
            "notes": MetadataValue.md("\n".join(f"- {n}" for n in result.notes) or "none"),
            "settings": settings_metadata(settings, "cluster_labels"),
        })
        return out

    return cluster_labels


def build_cluster_report(settings: Settings) -> AssetsDefinition:
    @asset(group_name="clustering", kinds={"plotly", "json"}, io_manager_key="tables_io",
           ins={"cluster_labels": AssetIn(), "dinov2_embeddings": AssetIn(), "captions": AssetIn(),
                "filtered_images": AssetIn()},
           code_version=code_version(settings, "cluster_report"))
    def cluster_report(context: AssetExecutionContext, cluster_labels: AssetFolder, dinov2_embeddings: AssetFolder,
                       captions: AssetFolder, filtered_images: AssetFolder):
        """Why the clusters are what they are: silhouette (cosine, exact over every image), Davies-Bouldin (on a
        seeded, cluster-stratified sample), sizes,
        intra-cluster similarity, a 5x5 grid of typical members and the top caption terms per cluster;
        report.json, report.html (plotly), grids/cluster_<k>.png. Always materialises; its checks gate the
        expert shards."""
        dinov2_embeddings, captions, filtered_images = (images_of(f, cluster_labels) for f in
                                                         (dinov2_embeddings, captions, filtered_images))
        labels = np.asarray(cluster_labels.array("labels"))
        k = len(cluster_labels.array("centroids"))
        kept = filtered_images.table("kept", columns=["image_id", "crop_shard"])
        out = staging(settings, "cluster_report")
        report = make_report(dinov2_embeddings.array("embeddings"), labels, np.asarray(cluster_labels.array("distances")),
                             k, captions.table("captions", columns=["caption"])["caption"].tolist(),
                             lambda rows: list(decode_crops(read_crop_rows(filtered_images.url(""), kept, rows))),
                             out, settings.report.sample_size, settings.seed)
        table = "| cluster | images | fraction | silhouette | intra cos | top terms |\n|---:|---:|---:|---:|---:|---|\n"
        table += "\n".join(
            f"| {c} | {report['sizes'][c]:,} | {report['fractions'][c]:.3f} | {_fmt(report['silhouette_per_cluster'][c])} "
            f"| {_fmt(report['intra_cosine'][c])} | {', '.join(map(md_escape, report['top_terms'][c][:5]))} |" for c in range(k))
        grids = "\n\n".join(f"**cluster {c}** ({', '.join(map(md_escape, report['top_terms'][c][:3]))})\n\n"
                            + inline_jpeg((out / "grids" / f"cluster_{c}.png").read_bytes(), f"cluster {c}")
                            for c in range(k))
        context.add_output_metadata({
            "k": k, "images": report["n"], "silhouette": report["silhouette"],
            "davies_bouldin": report["davies_bouldin"], "largest_fraction": report["largest_fraction"],
            "empty_clusters": report["empty_clusters"], "silhouette_rows": report["n"],
            "davies_bouldin_sample": report["sample_size"],
            "clusters": MetadataValue.md(table), "grids": MetadataValue.md(grids),
            # where report.html will be once the IO manager has committed this folder
            "report_html": MetadataValue.path(f"{settings.data_root.rstrip('/')}/cluster_report/report.html"),
        })
        return out

    return cluster_report


FAN_IN_COLUMNS = ("image_id", "phash", "sha256", "original_width", "original_height")


def _previous_centroids(settings: Settings, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(centroids, image ids) of the committed cluster_labels when it has `k` clusters, else None (then the
    images are clustered afresh)."""
    try:
        folder = AssetFolder(storage.open_folder(settings.data_root, "cluster_labels"))
    except storage.IncompleteOutput:
        return None
    centroids = np.asarray(folder.array("centroids"))
    return (centroids, np.asarray(folder.array("image_ids"))) if len(centroids) == k else None


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"
