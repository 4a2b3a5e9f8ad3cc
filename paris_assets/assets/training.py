"""expert_shards and router_pairs: what the K experts and their router train on. A failed blocking check of
cluster_report's quality gate stops them in the same run, and checks/gate.py stops them in any later run."""

import json
import time

import numpy as np
from dagster import AssetExecutionContext, AssetIn, AssetKey, AssetRecordsFilter, AssetsDefinition, MetadataValue, asset

from ..checks.gate import GateConfig, require_gate
from ..io_managers import AssetFolder, images_of
from ..lib.ingest.partitions import PARTS, sorted_parts
from ..lib.outputs.merkle import split_roots
from ..lib.outputs.shards import (
    ShardSource,
    heldout_mask,
    heldout_summary,
    manifest_entries,
    write_expert_shards,
    write_router_arrays,
    write_shards,
)
from ..lib.run.crops import read_crop_rows
from ..lib.store import storage
from ..media import media_for
from ..models.profiles import model_ref
from ..settings import Settings
from .common import PER_PART, code_version, settings_metadata, staging

STAGE_COUNTS = {"raw_images": ("requested", "downloaded", "failed"), "filtered_images": ("kept", "rejected"),
                "captions": ("rows",), "cluster_labels": ("k", "images")}


def _source(settings, filtered_images, captions, cluster_labels, latents, clip_embeddings, quality_scores,
            dinov2_embeddings) -> ShardSource:
    kept = filtered_images.table("kept")
    scores = quality_scores.table("scores")
    if not np.array_equal(scores["image_id"].to_numpy(dtype=str), kept["image_id"].to_numpy(dtype=str)):
        raise ValueError("quality_scores and filtered_images hold different images: materialise quality_scores again")
    kept = kept.assign(**{col: scores[col].to_numpy() for col in scores.columns if col != "image_id"})
    crops_url, media = filtered_images.url(""), media_for(settings)
    video = media.shard_fields(clip_embeddings, dinov2_embeddings)
    return ShardSource(
        kept=kept, captions=captions.table("captions", columns=["caption"])["caption"].tolist(),
        labels=np.asarray(cluster_labels.array("labels")), distances=np.asarray(cluster_labels.array("distances")),
        latents=latents.array("latents"), pooled=clip_embeddings.array("pooled"),
        tokens=clip_embeddings.array("tokens") if settings.shards.include_clip_tokens else None,
        jpg=(lambda rows: read_crop_rows(crops_url, kept, rows)) if media.include_crops else None,
        video=video)


def _rows_line_up(src: ShardSource) -> None:
    """Every per-sample array has one row per kept image, or nothing is written."""
    arrays = {"latents": src.latents, "pooled": src.pooled, "tokens": src.tokens}
    if src.video is not None:
        arrays.update(t5_tokens=src.video.t5_tokens, t5_mask=src.video.t5_mask, dinov2=src.video.dinov2)
    for name, array in arrays.items():
        if array is not None and len(array) != len(src.kept):
            raise ValueError(f"{name} has {len(array)} rows for {len(src.kept)} kept images: an upstream asset was "
                             "written part-way or for other settings; materialise it again")


def _aligned(filtered_images: AssetFolder, captions: AssetFolder, *folders: AssetFolder) -> None:
    """Every input must hold the same images in the same rows (kept.parquet's), or nothing is written."""
    kept = np.asarray(filtered_images.table("kept", columns=["image_id"])["image_id"].tolist(), dtype=str)
    tables = {"captions": np.asarray(captions.table("captions", columns=["image_id"])["image_id"].tolist(), dtype=str)}
    tables.update({str(folder.path): np.asarray(folder.array("image_ids"), dtype=str) for folder in folders})
    for name, ids in tables.items():
        if not np.array_equal(kept, ids):
            raise ValueError(f"{name} and filtered_images hold different images (or orders): an upstream asset was "
                             "re-materialised since; materialise the stale one (or everything downstream of "
                             "filtered_images)")


def _manifest(context, settings: Settings, clusters: dict, heldout: list, k: int, gate: dict, src: ShardSource) -> dict:
    parts = sorted_parts(context.instance.get_dynamic_partitions(PARTS)) if settings.partitions.size else [None]
    counts = {}
    for asset_name, keys in STAGE_COUNTS.items():
        counts[asset_name] = stage_counts(context.instance, asset_name, keys, parts if asset_name in PER_PART else [None])
    if settings.partitions.size:
        counts["parts"] = len(parts)
    media = media_for(settings)
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "media": media.name,
        **({"video": video_facts(src)} if src.video is not None else {}),
        "settings": settings.as_dict(),
        "models": {role: {"id": ref.model_id, "revision": ref.revision or "default"}
                   for role in media.manifest_roles for ref in [model_ref(settings, role)]},
        "counts": {**counts, "expert_samples": sum(s["samples"] for sh in clusters.values() for s in sh),
                   "heldout_samples": sum(s["samples"] for s in heldout)},
        "k": k,
        "gate": gate,
        "clusters": clusters,
        "heldout": heldout,
    }


def video_facts(src: ShardSource) -> dict:
    """What a trainer of clips needs before opening a shard: the clips' rate and length and the per-sample shapes."""
    return {"fps": src.video.fps, "num_frames": src.video.num_frames, "latent_shape": list(src.latents.shape[1:]),
            "t5_tokens_shape": list(src.video.t5_tokens.shape[1:]), "dinov2_shape": list(src.video.dinov2.shape[1:])}


def stage_counts(instance, asset_name: str, keys: tuple[str, ...], parts: list[str | None]) -> dict:
    """The counts in an asset's latest materialisation metadata, summed over its parts ([None]: unpartitioned)."""
    total: dict = {}
    for part in parts:
        if part is None:
            event = instance.get_latest_materialization_event(AssetKey(asset_name))
        else:
            records = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey(asset_name), asset_partitions=[part]), limit=1).records
            event = records[0].event_log_entry if records else None
        meta = event.asset_materialization.metadata if event else {}
        for key in keys:
            if key in meta:
                total[key] = total.get(key, 0) + meta[key].value if part is not None else meta[key].value
    return total


def gate_metadata(gate: dict) -> dict:
    """What the UI shows about the gate these outputs were written under."""
    status = "ACCEPTED DESPITE FAILURES (accept_failed_gate)" if gate["accepted_failed_gate"] else "passed"
    return {"gate": status, "gate_cluster_report_run": str(gate["cluster_report_run_id"]),
            "gate_problems": MetadataValue.md("\n".join(f"- {p}" for p in gate["problems"]) or "none")}


def _prepare(context, settings: Settings, config: GateConfig, asset_name: str, cluster_labels: AssetFolder,
             filtered_images, captions, latents, clip_embeddings, dinov2_embeddings, quality_scores):
    """What expert_shards and router_pairs do first: refuse unless the gate passed, read each input for the
    images cluster_labels kept, check every input holds them in the same rows, and draw the held-out split
    (a seeded hash of image_id). Returns (source, gate, held-out mask, DINOv2 embeddings)."""
    gate = require_gate(context, settings, config, asset_name)
    filtered_images, captions, latents, clip_embeddings, dinov2_embeddings, quality_scores = images_of(
        cluster_labels, filtered_images, captions, latents, clip_embeddings, dinov2_embeddings, quality_scores)
    _aligned(filtered_images, captions, cluster_labels, latents, clip_embeddings, dinov2_embeddings)
    src = _source(settings, filtered_images, captions, cluster_labels, latents, clip_embeddings, quality_scores,
                  dinov2_embeddings)
    _rows_line_up(src)
    s = settings.shards
    held = heldout_mask(src.kept["image_id"], s.heldout_fraction, settings.heldout_max, settings.seed)
    return src, gate, held, dinov2_embeddings.array("embeddings")


def build_expert_shards(settings: Settings) -> AssetsDefinition:
    s, media = settings.shards, media_for(settings)

    @asset(group_name="training", kinds={"webdataset"}, io_manager_key="shards_io", deps=["cluster_report"],
           ins={"cluster_labels": AssetIn(), "latents": AssetIn(), "clip_embeddings": AssetIn(), "captions": AssetIn(),
                "filtered_images": AssetIn(), "dinov2_embeddings": AssetIn(), "quality_scores": AssetIn()},
           code_version=code_version(settings, "expert_shards"))
    def expert_shards(context: AssetExecutionContext, config: GateConfig, cluster_labels: AssetFolder,
                      latents: AssetFolder, clip_embeddings: AssetFolder, captions: AssetFolder,
                      filtered_images: AssetFolder, dinov2_embeddings: AssetFolder, quality_scores: AssetFolder):
        """One folder per expert, expert_shards/cluster_<k>/shard-NNNNNN.tar: latent.npy, clip.npy,
        clip_tokens.npy, txt, json (and jpg) per image, shuffled within the cluster; per clip (media: video) also
        t5_tokens.npy, t5_mask.npy, dinov2.npy (and mp4 instead of jpg). Also writes the held-out split (chosen
        by a seeded hash of image_id, so stable across K) to heldout/ (same sample format + its router arrays)
        and, last, pipeline_manifest.json. Refuses to run unless cluster_report's quality gate passed (see
        checks/gate.py)."""
        src, gate, held, dinov2 = _prepare(context, settings, config, "expert_shards", cluster_labels, filtered_images,
                                           captions, latents, clip_embeddings, dinov2_embeddings, quality_scores)
        k = len(cluster_labels.array("centroids"))
        split = heldout_summary(src.labels, held, k)
        train_rows = [np.flatnonzero((src.labels == c) & ~held) for c in range(k)]

        held_dir = storage.staging_dir(settings.data_root, "heldout")
        held_shards = write_shards(src, np.flatnonzero(held), held_dir / "shards", s.max_samples_per_shard,
                                   s.max_shard_bytes)
        write_router_arrays(held_dir, np.flatnonzero(held), src, dinov2)
        storage.remove_file(settings.data_root, "pipeline_manifest.json")  # it would describe the old split
        storage.commit_folder(held_dir, settings.data_root, "heldout", extra={"run_id": context.run_id})

        out = staging(settings, "expert_shards")
        stats = write_expert_shards(src, train_rows, out, s.max_samples_per_shard, s.max_shard_bytes, settings.seed,
                                    context.log.info)
        clusters = {c: manifest_entries(shards, "expert_shards") for c, shards in stats["clusters"].items()}
        held_entries = manifest_entries(held_shards, "heldout")
        roots = split_roots(clusters, held_entries)  # what `python -m paris_assets.verify` checks a copy against
        (out / "pipeline_manifest.json").write_text(json.dumps(
            {**_manifest(context, settings, clusters, held_entries, k, gate, src), "heldout_split": split,
             "merkle_roots": roots}, indent=1, default=str))
        rows = "\n".join(f"| {c} | {sum(x['samples'] for x in sh):,} | {len(sh)} | "
                         f"{sum(x['bytes'] for x in sh) / 1e6:,.1f} |" for c, sh in stats["clusters"].items())
        context.add_output_metadata({
            **gate_metadata(gate), "media": media.name, "k": k, "samples": stats["samples"],
            "heldout_samples": int(held.sum()),
            "heldout_per_cluster": MetadataValue.json(split["per_cluster"]),
            "heldout_worst_deviation_images": split["worst_deviation_images"],
            "heldout_worst_deviation_share": split["worst_deviation_share"],
            "shards": sum(len(v) for v in stats["clusters"].values()),
            "merkle_roots": MetadataValue.json(roots),
            "samples_per_s": round(stats["samples_per_s"], 1), "mb_per_s": round(stats["mb_per_s"], 1),
            "clusters": MetadataValue.md("| cluster | samples | shards | MB |\n|---:|---:|---:|---:|\n" + rows),
            "settings": settings_metadata(settings, "expert_shards"),
            "browse": MetadataValue.text("make browse, then http://127.0.0.1:8765 (thumbnails, filters, and the "
                                         "shards' health against pipeline_manifest.json)"),
        })
        return out

    return expert_shards


def build_router_pairs(settings: Settings) -> AssetsDefinition:
    media = media_for(settings)

    @asset(group_name="training", kinds={"numpy"}, io_manager_key="arrays_io", deps=["cluster_report"],
           ins={"cluster_labels": AssetIn(), "latents": AssetIn(), "clip_embeddings": AssetIn(),
                "dinov2_embeddings": AssetIn(), "filtered_images": AssetIn(), "captions": AssetIn(),
                "quality_scores": AssetIn()},
           code_version=code_version(settings, "router_pairs"))
    def router_pairs(context: AssetExecutionContext, config: GateConfig, cluster_labels: AssetFolder,
                     latents: AssetFolder, clip_embeddings: AssetFolder, dinov2_embeddings: AssetFolder,
                     filtered_images: AssetFolder, captions: AssetFolder, quality_scores: AssetFolder):
        """The router's training arrays, row i of each the same image (held-out images left out): latents/,
        dinov2_embeddings/, clip_text_embeddings/ (pooled; chunked array folders), cluster_labels.npy,
        image_ids.npy; for clips latents are (C, T', h, w) and DINOv2 is the first frame's, as the Paris 2.0
        router reads them. Refuses to run unless cluster_report's quality gate passed."""
        src, gate, held, dinov2 = _prepare(context, settings, config, "router_pairs", cluster_labels, filtered_images,
                                           captions, latents, clip_embeddings, dinov2_embeddings, quality_scores)
        out = staging(settings, "router_pairs")
        shapes = write_router_arrays(out, np.flatnonzero(~held), src, dinov2)
        context.add_output_metadata({**gate_metadata(gate), "media": media.name, "rows": int((~held).sum()),
                                     "heldout_left_out": int(held.sum()),
                                     "shapes": MetadataValue.json(shapes),
                                     "settings": settings_metadata(settings, "router_pairs")})
        return out

    return router_pairs
