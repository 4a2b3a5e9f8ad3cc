"""cluster_labels and cluster_report: the partition every expert is trained on, and what explains it."""

import time
from typing import Optional

import numpy as np
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, Config, MetadataValue, asset

from ..io_managers import AssetFolder
from ..lib.cluster_report import make_report
from ..lib.clustering import cluster
from ..lib.crops import decode_crops, read_crop_rows
from ..lib.validation import inline_jpeg
from ..settings import Settings
from .common import code_version, md_escape, settings_metadata, staging


class ClusterRunConfig(Config):
    k: Optional[int] = None  # for this run only, instead of clustering.k (set it in the launchpad)


def build_cluster_labels(settings: Settings) -> AssetsDefinition:
    c = settings.clustering

    @asset(group_name="clustering", kinds={"faiss", "numpy"}, io_manager_key="arrays_io",
           ins={"dinov2_embeddings": AssetIn()}, code_version=code_version(settings, "cluster_labels"))
    def cluster_labels(context: AssetExecutionContext, config: ClusterRunConfig, dinov2_embeddings: AssetFolder):
        """Each image's cluster (= its expert): two-stage k-means of the DINOv2 features into K partitions.
        labels.npy (N,) int32, centroids.npy (K, D) float32, distances.npy (N,) cosine distance to the assigned
        centroid, image_ids.npy; rows in kept.parquet's order."""
        k = config.k or c.k
        started = time.perf_counter()
        result = cluster(dinov2_embeddings.array("embeddings"), k, c.method, c.fine_k, c.train_sample, settings.seed,
                         c.backend, c.iterations)
        for note in result.notes:
            context.log.info(f"cluster_labels: {note}")
        sizes = np.bincount(result.labels, minlength=k)
        context.add_output_metadata({
            "k": k, "k_source": "run config" if config.k else "settings", "method": c.method, "backend": c.backend,
            "fine_k": result.fine_k, "images": int(len(result.labels)), "seconds": round(time.perf_counter() - started, 2),
            "sizes": MetadataValue.md("| cluster | images |\n|---:|---:|\n" + "\n".join(
                f"| {i} | {n:,} |" for i, n in enumerate(sizes))),
            "notes": MetadataValue.md("\n".join(f"- {n}" for n in result.notes) or "none"),
            "settings": settings_metadata(settings, "cluster_labels"),
        })
        return {"labels": result.labels, "centroids": result.centroids, "distances": result.distances,
                "image_ids": np.asarray(dinov2_embeddings.array("image_ids"))}

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


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"
