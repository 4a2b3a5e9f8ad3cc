"""cluster_labels and cluster_report: the partition every expert is trained on, and what explains it."""

import time

import numpy as np
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, Config, MetadataValue, asset

from ..io_managers import AssetFolder, AssetParts, images_of
from ..lib.clustering.kmeans import Clustering, assign, cluster, fine_stage, training_sample
from ..lib.clustering.report import make_report
from ..lib.dedup.protected import embedding_matches, phash_matches
from ..lib.dedup.semdedup import eps_table, semdedup
from ..lib.images.filtering import hex_to_u64
from ..lib.outputs.shards import heldout_mask
from ..lib.outputs.validation import inline_jpeg, side_by_side_png
from ..lib.quality.pruning import Pruning, nearest_per_row
from ..lib.quality.signals import quality_drops
from ..lib.run.crops import decode_crops, read_crop_rows
from ..lib.store import storage
from ..lib.store.arrays import select_rows
from ..media import media_for
from ..settings import TINY_FEATURES_NOTE, Settings
from .common import code_version, counts_table, md_escape, preview, settings_metadata, staging


class ClusterRunConfig(Config):
    k: int | None = None  # for this run only, instead of clustering.k (set it in the launchpad)


def build_cluster_labels(settings: Settings) -> AssetsDefinition:
    c, q = settings.clustering, settings.quality
    @asset(group_name="clustering", kinds={"faiss", "numpy"}, io_manager_key="arrays_io",
           ins={"dinov2_embeddings": AssetIn(), "filtered_images": AssetIn(), "quality_scores": AssetIn(),
                "clip_image_embeddings": AssetIn(), "protected_images": AssetIn()},
           code_version=code_version(settings, "cluster_labels"))
    def cluster_labels(context: AssetExecutionContext, config: ClusterRunConfig, dinov2_embeddings: AssetFolder,
                       filtered_images: AssetFolder, quality_scores: AssetFolder, clip_image_embeddings: AssetFolder,
                       protected_images: AssetFolder):
        """Each image's cluster (= its expert): two-stage k-means of the DINOv2 features into K partitions.
        labels.npy (N,) int32, centroids.npy (K, D) float32, distances.npy (N,) cosine distance to the assigned
        centroid, image_ids.npy, rows.npy (each image's row in kept.parquet, or in every part's kept rows one
        after the other). Before clustering it drops, each recorded in dropped.parquet (image_id, reason,
        detail naming the image kept or matched): duplicates across parts (partitions), low_aesthetic and
        computed punsafe (quality_scores), protected_eval (near an image of quality.protected or of the held-out
        split) and semantic_duplicate (SemDeDup, quality.semdedup), so no expert trains on them."""
        k = config.k or c.k
        started = time.perf_counter()
        out = staging(settings, "cluster_labels")
        ids = np.asarray(dinov2_embeddings.array("image_ids")).astype(str)
        pruning = Pruning(ids)
        parts = {}
        if isinstance(filtered_images, AssetParts):
            rows, duplicates = media_for(settings).fan_in(lambda col: filtered_images.column("kept", col))
            pruning = Pruning(ids, rows)
            pruning.record(duplicates)
            parts = {"parts": len(filtered_images.keys), "duplicates_across_parts": len(duplicates)}
        features = {"dinov2": dinov2_embeddings.array("embeddings"),
                    "clip_image": clip_image_embeddings.array("embeddings")}
        _drop_low_quality(pruning, quality_scores.table("scores"), q.min_aesthetic, settings.filter.max_punsafe)
        protected_meta = _drop_protected(pruning, settings, filtered_images, features, protected_images)
        semdedup_meta, fine = _semdedup(pruning, settings, k, features, filtered_images, out)
        rows = pruning.rows
        kept_features = select_rows(features["dinov2"], rows)
        previous = _previous_centroids(settings, k) if settings.partitions.assign_to_existing else None
        if previous is not None:
            labels, distances = assign(kept_features, previous[0])
            result = Clustering(labels, previous[0], distances, 0, [
                f"assigned to the {k} centroids of the previous clustering (partitions.assign_to_existing)"])
        else:
            result = cluster(kept_features, k, c.method, c.fine_k, c.train_sample, settings.seed, c.backend,
                             c.iterations, fine=fine)
        for note in result.notes:
            context.log.info(f"cluster_labels: {note}")
        image_ids = ids[rows]
        for name, value in {"labels": result.labels, "centroids": result.centroids, "distances": result.distances,
                            "image_ids": image_ids, "rows": rows}.items():
            np.save(out / f"{name}.npy", value)
        dropped = pruning.dropped()
        dropped.to_parquet(out / "dropped.parquet", index=False)
        sizes = np.bincount(result.labels, minlength=k)
        if previous is not None:
            parts["assigned_to_existing_centroids"] = int((~np.isin(image_ids, previous[1])).sum())
        context.add_output_metadata({
            "k": k, "k_source": "run config" if config.k else "settings", "method": c.method, "backend": c.backend,
            "fine_k": result.fine_k, "images": len(result.labels), "seconds": round(time.perf_counter() - started, 2),
            **parts, "dropped": len(dropped), **{f"dropped_{r}": n for r, n in pruning.counts().items()},
            "dropped_by_reason": counts_table(pruning.counts()), "dropped_preview": preview(dropped),
            **protected_meta, **semdedup_meta,
            "sizes": MetadataValue.md("| cluster | images |\n|---:|---:|\n" + "\n".join(
                f"| {i} | {n:,} |" for i, n in enumerate(sizes))),
            "notes": MetadataValue.md("\n".join(f"- {n}" for n in result.notes) or "none"),
            "settings": settings_metadata(settings, "cluster_labels"),
        })
        return out

    return cluster_labels


def _drop_low_quality(pruning: Pruning, scores, min_aesthetic, max_punsafe) -> None:
    drops = quality_drops(scores.iloc[pruning.rows].reset_index(drop=True), min_aesthetic, max_punsafe)
    for reason, group in drops.groupby("reason", sort=False):
        pruning.drop(group["row"].to_numpy(), reason, group["detail"])


def _drop_protected(pruning: Pruning, settings: Settings, filtered_images, features: dict, protected_images) -> dict:
    """protected_eval: training images near the user's evaluation set (pHash radius or embedding similarity),
    then training images near a held-out image (by embedding; pHash copies never got this far: the filter and
    the fan-in already dropped them)."""
    p, meta = settings.quality.protected, {}
    threshold = p.min_similarity or (None if settings.models.profile == "tiny" else DEFAULT_MIN_SIMILARITY)
    meta["protected_min_similarity"] = threshold if threshold else f"off: {TINY_FEATURES_NOTE}"
    if len(protected_images.array("ids")):
        phash = hex_to_u64(filtered_images.column("kept", "phash"))[pruning.rows]
        train, other, dist = phash_matches(phash, np.asarray(protected_images.array("phash")), p.phash_radius)
        train, other, dist = nearest_per_row(train, other, dist, best="min")
        names = np.asarray(protected_images.array("ids")).astype(str)
        meta["protected_phash_matches"] = pruning.drop(
            train, "protected_eval", [f"pHash distance {d} to protected {names[o]}" for o, d in zip(other, dist)])
        if threshold:
            emb = select_rows(features[p.embedding], pruning.rows)
            train, other, sim = nearest_per_row(*embedding_matches(
                emb, np.asarray(protected_images.array("embeddings"), np.float32), threshold))
            meta["protected_embedding_matches"] = pruning.drop(
                train, "protected_eval", [f"{p.embedding} cosine {v:.3f} to protected {names[o]}"
                                          for o, v in zip(other, sim)])
    if p.heldout and threshold:
        s = settings.shards
        ids = pruning.image_ids[pruning.rows]
        held = heldout_mask(ids, s.heldout_fraction, settings.heldout_max, settings.seed)
        if held.any() and (~held).any():
            emb = select_rows(features[p.embedding], pruning.rows)
            train_pos, held_pos = np.flatnonzero(~held), np.flatnonzero(held)
            train, other, sim = nearest_per_row(*embedding_matches(
                select_rows(emb, train_pos), np.asarray(select_rows(emb, held_pos), np.float32), threshold))
            meta["protected_heldout_matches"] = pruning.drop(
                train_pos[train], "protected_eval",
                [f"{p.embedding} cosine {v:.3f} to held-out {ids[held_pos[o]]}" for o, v in zip(other, sim)])
    return meta


def _semdedup(pruning: Pruning, settings: Settings, k: int, features: dict, filtered_images, out) -> tuple[dict, ...]:
    """SemDeDup inside the fine clusters of the clustering's first stage, whose centroids the coarse step then
    reuses (clustering.method hierarchical); (metadata, fine centroids for the coarse step or None)."""
    sd, c = settings.quality.semdedup, settings.clustering
    if not sd.enabled:
        return {}, None
    dino = select_rows(features["dinov2"], pruning.rows)
    fine, _ = fine_stage(training_sample(dino, c.train_sample, settings.seed), k, c.fine_k, settings.seed,
                         c.backend, c.iterations)
    fine_labels, _ = assign(dino, fine)
    x = dino if sd.embedding == "dinov2" else select_rows(features["clip_image"], pruning.rows)
    centroids = fine if sd.embedding == "dinov2" else _centroids_of(x, fine_labels, len(fine))
    table = eps_table(x, fine_labels, centroids, sorted(set(sd.eps_table) | {sd.eps}), keep=sd.keep)
    result = semdedup(x, fine_labels, centroids, sd.eps, keep=sd.keep)
    ids = pruning.image_ids[pruning.rows]
    pairs = list(zip(pruning.rows[result.removed], pruning.rows[result.partner]))
    why = "farther from" if sd.keep == "paper" else "closer to"
    grid = _pairs_grid(filtered_images, pairs[:8], out / "semdedup_pairs.png")
    pruning.drop(result.removed, "semantic_duplicate",
                 [f"{sd.embedding} cosine {v:.3f} to {ids[p]} "
                  + (f"(kept: {why} its fine centroid)" if result.keep[p] else "(itself removed: a chain)")
                  for p, v in zip(result.partner, result.similarity)])
    rows = "\n".join(f"| {e:g} | {n:,} | {f:.4f} |" for e, n, f in table)
    coarse_reuses = fine if c.method == "hierarchical" else None
    return {"semdedup_removed": len(result.removed),
            "semdedup_eps": MetadataValue.md("| eps | removed | fraction |\n|---:|---:|---:|\n" + rows),
            "semdedup_pairs": MetadataValue.md(grid or "(no pair removed)")}, coarse_reuses


def _centroids_of(x, labels: np.ndarray, n: int) -> np.ndarray:
    """Unit mean of each fine cluster's rows in another embedding (SemDeDup on CLIP image features)."""
    sums = np.zeros((n, x.shape[1]), np.float64)
    for start in range(0, len(labels), 65536):
        np.add.at(sums, labels[start:start + 65536], np.asarray(x[start:start + 65536], np.float64))
    return (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _pairs_grid(filtered_images, pairs: list, path) -> str | None:
    """Removed images on top, each above the partner it duplicates; saved beside the labels and inlined."""
    if not pairs:
        return None
    kept = filtered_images.table("kept", columns=["image_id", "crop_shard"])
    removed, partners = (decode_crops(read_crop_rows(filtered_images.url(""), kept, [int(p[i]) for p in pairs]))
                         for i in (0, 1))
    path.write_bytes(side_by_side_png(removed, partners))
    return ("removed (top) above the partner it duplicates (below)\n\n"
            + inline_jpeg(path.read_bytes(), "SemDeDup pairs"))


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
        dinov2_embeddings, captions, filtered_images = images_of(cluster_labels, dinov2_embeddings, captions,
                                                                 filtered_images)
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


DEFAULT_MIN_SIMILARITY = 0.95  # quality.protected.min_similarity with real models: SemDeDup's duplicates are this close


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
