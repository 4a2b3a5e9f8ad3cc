"""quality_scores: LAION's aesthetic and NSFW heads over the CLIP image embeddings, beside the source's own
scores. A separate asset from clip_image_embeddings, so new head weights re-score without re-embedding."""

from pathlib import Path

import numpy as np
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, MetadataValue, asset

from ..io_managers import AssetFolder
from ..lib.dedup.protected import read_protected
from ..lib.ingest.urls import UrlPolicy
from ..lib.quality.signals import AESTHETIC_BINS, PUNSAFE_BINS, histogram, scores_table
from ..lib.run.crops import decode_crops
from ..models import heads
from ..models.profiles import load_model, tiny_root
from ..settings import Settings
from .common import code_version, counts_table, parts_def, preview, settings_metadata, staging

EMBEDDING_ROLES = {"clip_image": "clip_image_encoder", "dinov2": "image_embedder"}

HEAD_URLS = {"aesthetic": heads.AESTHETIC_URL, "nsfw": heads.NSFW_URL}


def load_heads(settings: Settings) -> dict:
    """The two heads: from quality.<kind>_weights (a path or URL), else the paris profile's public files, else
    (tiny profile) seeded random MLPs of the same shapes."""
    q, tiny = settings.quality, settings.models.profile == "tiny"
    cache = Path(tiny_root(settings)) / "models" / "heads"
    loaded = {}
    for kind in ("aesthetic", "nsfw"):
        given = getattr(q, f"{kind}_weights")
        source = settings.resolve(given) if given and "://" not in given else given
        if source is None and not tiny:
            source = HEAD_URLS[kind]
        loaded[kind] = heads.load_head(kind, source, tiny=tiny and source is None, seed=settings.seed, cache_dir=cache)
        loaded[kind].source = source or f"tiny profile: seeded random {kind} head"  # shown in the metadata
    return loaded


def build_quality_scores(settings: Settings) -> AssetsDefinition:
    @asset(group_name="embeddings", kinds={"pytorch", "parquet"}, io_manager_key="tables_io",
           ins={"clip_image_embeddings": AssetIn(), "filtered_images": AssetIn()},
           code_version=code_version(settings, "quality_scores"), partitions_def=parts_def(settings))
    def quality_scores(context: AssetExecutionContext, clip_image_embeddings: AssetFolder, filtered_images: AssetFolder):
        """Per kept image: aesthetic (LAION improved aesthetic predictor) and punsafe (LAION CLIP NSFW detector),
        each as the value used, its source (carried | computed) and the computed value; scores.parquet.
        cluster_labels drops on them (quality.min_aesthetic, filter.max_punsafe on computed values)."""
        kept = filtered_images.table("kept", columns=["image_id", "aesthetic", "punsafe"])
        ids = np.asarray(clip_image_embeddings.array("image_ids"), dtype=str)
        if not np.array_equal(ids, kept["image_id"].to_numpy(dtype=str)):
            raise ValueError("clip_image_embeddings and filtered_images hold different images: materialise "
                             "clip_image_embeddings again")
        embeddings = clip_image_embeddings.array("embeddings")
        loaded = load_heads(settings)
        computed = {"aesthetic": heads.score(loaded["aesthetic"], embeddings),
                    "punsafe": heads.score(loaded["nsfw"], embeddings)}
        table = scores_table(kept, computed, settings.quality.prefer)
        context.add_output_metadata({
            "rows": len(table),
            "aesthetic_histogram": _histogram_md(table["aesthetic"], AESTHETIC_BINS),
            "punsafe_histogram": _histogram_md(table["punsafe"], PUNSAFE_BINS),
            "aesthetic_carried": int((table["aesthetic_source"] == "carried").sum()),
            "punsafe_carried": int((table["punsafe_source"] == "carried").sum()),
            "heads": MetadataValue.json({kind: {"source": head.source,
                                                "sha256": heads.head_identity(head)}
                                         for kind, head in loaded.items()}),
            "preview": preview(table), "settings": settings_metadata(settings, "quality_scores"),
        })
        return {"scores": table}

    return quality_scores


def _histogram_md(values, edges) -> MetadataValue:
    rows = "\n".join(f"| {lo:g}–{hi:g} | {n:,} |" for lo, hi, n in histogram(values.to_numpy(), edges))
    return MetadataValue.md("| range | images |\n|---|---:|\n" + rows)


def build_protected_images(settings: Settings) -> AssetsDefinition:
    p = settings.quality.protected

    @asset(group_name="ingest", kinds={"pytorch", "numpy"}, io_manager_key="arrays_io", pool="gpu",
           code_version=code_version(settings, "protected_images"))
    def protected_images(context: AssetExecutionContext):
        """The user's evaluation set (quality.protected.path: a folder of images or a table of URLs), read and
        cropped as the filter crops training images: ids.npy, phash.npy (N,) uint64, embeddings.npy (N, D)
        float32 (quality.protected.embedding's model), failures.parquet (id, reason, detail). cluster_labels drops
        every training image near one of them (protected_eval), so FID on this set is not inflated. With no
        path set it is empty (and cheap): the held-out split is still protected (quality.protected.heldout)."""
        out = staging(settings, "protected_images")
        if not p.path:
            for name, empty in {"ids": np.empty(0, "<U1"), "phash": np.empty(0, np.uint64),
                                "embeddings": np.empty((0, 0), np.float32)}.items():
                np.save(out / f"{name}.npy", empty)
            context.add_output_metadata({"images": 0, "protected": "off: quality.protected.path is not set"})
            return out
        f, ingest = settings.filter, settings.ingest
        found = read_protected(settings.resolve(p.path) if "://" not in p.path else p.path, p.url_col,
                               UrlPolicy(ingest.refused_networks, ingest.refused_hosts), f.image_size,
                               ingest.max_image_pixels, ingest.timeout, ingest.threads)
        model = load_model(settings, EMBEDDING_ROLES[p.embedding])
        batch = settings.models.image_batch_size
        embeddings = np.concatenate([np.asarray(model(model.preprocess(decode_crops(found.crops[i:i + batch]))),
                                                np.float32) for i in range(0, len(found.crops), batch)])
        np.save(out / "ids.npy", np.asarray(found.ids, dtype=str))
        np.save(out / "phash.npy", np.asarray(found.phash, dtype=np.uint64))
        np.save(out / "embeddings.npy", embeddings)
        found.failures.to_parquet(out / "failures.parquet", index=False)
        context.add_output_metadata({
            "images": len(found.ids), "failed": len(found.failures),
            "failed_by_reason": counts_table(found.failures["reason"].value_counts().to_dict()),
            "embedding": p.embedding, "embedding_dim": int(embeddings.shape[1]),
            "settings": settings_metadata(settings, "protected_images")})
        return out

    return protected_images
