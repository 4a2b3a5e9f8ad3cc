"""The model stack: captions, clip_embeddings, dinov2_embeddings and latents. Each runs one model role over
the kept images (or captions) in resumable chunks, in the `gpu` pool, in this process or on Ray workers
(the engine the execution settings name, engines/)."""

import inspect
from dataclasses import dataclass
from typing import Callable, ContextManager

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, MetadataValue, asset

from ..engines import ModelLoader, engine_for
from ..io_managers import AssetFolder
from ..lib.run import stages
from ..lib.store import storage
from ..lib.store.arrays import open_array
from ..lib.store.chunks import ChunkStore, work_key
from ..media import Media, media_for
from ..models.profiles import model_metadata
from ..settings import Settings
from .common import code_version, part_of, parts_def, preview, settings_metadata, staging


def _store(settings: Settings, asset_name: str, upstream: AssetFolder, model, n_rows: int,
           part: str | None = None, role: str = "") -> ChunkStore:
    """Finished chunks from an earlier, interrupted run of the same inputs, model and settings: the key holds
    the resolved commit, device type and dtype of the model as loaded, so no chunk crosses a change of them.
    `role` names a second model's chunks of the same asset (T5 beside CLIP in a video's clip_embeddings)."""
    key = work_key(upstream.identity(), model.ref.model_id, model.revision, model.device.type, str(model.dtype),
                   code_version(settings, asset_name), settings.models.chunk_size)
    name = f"{asset_name}-{role}" if role else asset_name
    name = f"{name}-chunks-{part}" if part else f"{name}-chunks"  # a part's chunks outlive other parts' runs
    return ChunkStore(storage.staging_dir(settings.data_root, name, key=key), n_rows,
                      settings.models.chunk_size)


def role_model(settings: Settings, role: str, label: str, n_rows: int, log=print) -> ContextManager:
    """The role's model for a stage, from the configured engine (engines/): loaded here, or a pool of workers
    standing in for it, each loading its own copy from only what loading the role reads (engines/loader.py)."""
    chunks = -(-n_rows // settings.models.chunk_size)
    return engine_for(settings.execution).model_pool(ModelLoader.for_role(settings, role), label, chunks, log)


def _run(context, settings: Settings, asset_name: str, role: str, upstream: AssetFolder, table: pd.DataFrame,
         stage, batch_size: int, out=None, second: bool = False, **stage_kwargs):
    """Load the role's model, run `stage` over `table` in resumable chunks into a staged folder (or `out`, when a
    `second` model adds its arrays to the first one's folder: its metadata keys are prefixed with the role),
    record metadata; returns (staged folder, stats)."""
    part = part_of(context)
    if len(table) == 0 and part:  # a part whose every image was rejected: an empty output, the part is done
        context.log.warning(f"{asset_name}: part {part} has no kept image (see filtered_images' rejected.parquet)")
        context.add_output_metadata({"rows": 0, "settings": settings_metadata(settings, asset_name)})
        return empty_output(settings, asset_name, staging(settings, asset_name, part)), {"rows": 0}
    if len(table) == 0:
        raise ValueError(f"{asset_name}: no images to process: filtered_images kept none (see its "
                         "rejected.parquet and dropped_<reason> counts); fix the source or the filter settings")
    with role_model(settings, role, asset_name, len(table), context.log.info) as model:
        store = _store(settings, asset_name, upstream, model, len(table), part, role if second else "")
        out = out or staging(settings, asset_name, part)
        stats = stage(table, model=model, store=store, out_dir=out, batch_size=batch_size,
                      threads=settings.models.loader_threads, log=context.log.info, **stage_kwargs)
        store.remove()
        _metadata(context, settings, asset_name, model, stats, batch_size, prefix=f"{role}_" if second else "")
    return out, stats


def empty_output(settings: Settings, asset_name: str, out):
    """The asset's files with no row: what a part without kept images holds, so the fan-in reads it like any."""
    np.save(out / "image_ids.npy", np.empty(0, dtype="<U1"))
    if asset_name == "captions":
        stages.captions_table(pd.DataFrame({"image_id": [], "alt_text": []}), []).to_parquet(
            out / "captions.parquet", index=False)
    media = media_for(settings)
    arrays = media.arrays(asset_name)
    shapes = media.expected_shapes() if arrays else {}
    for name, key, dtype in arrays:
        np.save(out / f"{name}.npy", np.empty((0, *shapes[key]), dtype))
    return out


def _metadata(context, settings, asset_name, model, stats, batch_size, prefix: str = "") -> None:
    meta = {
        **engine_for(settings.execution).metadata(stats),
        **model_metadata(model),
        "batch_size": batch_size,
        "rows": stats["rows"],
        "rows_computed": stats["rows_computed"],
        "chunks": stats["chunks"], "chunks_reused": stats["chunks_reused"],
        "images_per_s": stats["rows_per_s"] or 0.0,
        "model_time_share": stats["model_share"] or 0.0,
        "shapes": MetadataValue.json(stats.get("shapes", {})),
        "settings": settings_metadata(settings, asset_name),
    }
    context.add_output_metadata({f"{prefix}{key}": value for key, value in meta.items()})


def t5_lengths(mask, block: int = 1 << 20) -> dict:
    """What the T5 mask says of the captions: the padded length, real tokens (with </s>) on average and at most,
    and how many captions were cut at the length. Read a block of rows at a time (11M rows are 2.5 GB of mask)."""
    real = np.concatenate([np.asarray(mask[i:i + block]).sum(axis=1) for i in range(0, len(mask), block)])
    return {"t5_max_length": int(mask.shape[1]), "t5_tokens_mean": round(float(real.mean()), 1),
            "t5_tokens_max": int(real.max()), "t5_truncated": int((real == mask.shape[1]).sum())}


# the stage each text role runs in clip_embeddings, and what it adds to the metadata beside the first role's
TEXT_STAGES = {"text_encoder": stages.encode_texts, "t5_encoder": stages.encode_t5}
TEXT_METADATA = {"t5_encoder": lambda out: t5_lengths(open_array(str(out / "t5_mask")))}


def _captions(context: AssetExecutionContext, settings: Settings, media: Media, filtered_images: AssetFolder):
    """One caption per kept image: BLIP-2 re-captions (empty ones fall back to the alt text), or the alt text
    itself (captions.source). captions.parquet: image_id, caption, alt_text, caption_source."""
    kept = filtered_images.table("kept")
    if settings.captions.source == "alt_text":
        table = stages.captions_table(kept, None)
        context.add_output_metadata({"caption_source": "alt_text", "rows": len(table),
                                     "preview": preview(table), "settings": settings_metadata(settings, "captions")})
        return {"captions": table}  # the tables IO manager writes captions.parquet
    out, stats = _run(context, settings, "captions", media.roles("captions")[0], filtered_images, kept,
                      stages.caption_images, settings.models.caption_batch_size, crops_url=filtered_images.url(""))
    table = pd.read_parquet(out / "captions.parquet")
    context.add_output_metadata({"caption_source": "blip2",
                                 "fallback_to_alt_text": stats.get("fallback_to_alt_text", 0), "preview": preview(table)})
    return out


def _clip_embeddings(context: AssetExecutionContext, settings: Settings, media: Media, captions: AssetFolder):
    """CLIP ViT-L/14 text embeddings of the captions: tokens/ (N, 77, 768) float16, what the experts
    condition on; pooled/ (N, 768) float16, what the router reads (chunked array folders); image_ids.npy."""
    table = captions.table("captions")
    first, *more = media.roles("clip_embeddings")
    out, _ = _run(context, settings, "clip_embeddings", first, captions, table, TEXT_STAGES[first],
                  settings.models.text_batch_size)
    for role in more if len(table) else ():  # T5 beside CLIP for clips: its arrays go into the same folder
        _run(context, settings, "clip_embeddings", role, captions, table, TEXT_STAGES[role],
             settings.models.text_batch_size, out=out, second=True)
        context.add_output_metadata(TEXT_METADATA[role](out))
    return out


def _over_crops(context, settings: Settings, media: Media, asset_name: str, filtered_images: AssetFolder, stage,
                batch_size: int, **stage_kwargs):
    """The asset's model over the kept crops (or clips): (staged folder, stats)."""
    kept = filtered_images.table("kept", columns=["image_id", "crop_shard"])
    return _run(context, settings, asset_name, media.roles(asset_name)[0], filtered_images, kept, stage, batch_size,
                crops_url=filtered_images.url(""), **stage_kwargs)


def _dinov2_embeddings(context: AssetExecutionContext, settings: Settings, media: Media, filtered_images: AssetFolder):
    """DINOv2 image features of the kept crops, what the clustering reads: embeddings/ (N, 1024) float32,
    a chunked array folder, L2-normalised (768 with dinov2-base); image_ids.npy."""
    out, _ = _over_crops(context, settings, media, "dinov2_embeddings", filtered_images, stages.embed_images,
                         settings.models.image_batch_size, frames=media.frames)
    context.add_output_metadata({"pooling": settings.models.dinov2_pooling})
    return out


def _latents(context: AssetExecutionContext, settings: Settings, media: Media, filtered_images: AssetFolder):
    """Stable Diffusion VAE latents of the kept crops, what the experts are trained on: latents/
    (N, 4, 32, 32) float16, a chunked array folder, already scaled by the VAE's scaling_factor (0.18215); image_ids.npy."""
    out, stats = _over_crops(context, settings, media, "latents", filtered_images, stages.encode_latents,
                             settings.models.latent_batch_size, clips=media.clips)
    context.add_output_metadata({"sampling": settings.models.latent_sampling,
                                 **{k: stats[k] for k in ("scaling_factor", "shift_factor") if k in stats}})
    return out


def _clip_image_embeddings(context: AssetExecutionContext, settings: Settings, media: Media,
                           filtered_images: AssetFolder):
    """CLIP ViT-L/14 image embeddings of the kept crops (the text encoder's checkpoint, its image tower):
    embeddings/ (N, 768) float16, L2-normalised, a chunked array folder; image_ids.npy. What LAION's
    aesthetic and NSFW heads read (quality_scores), and what SemDeDup or decontamination may compare."""
    out, _ = _over_crops(context, settings, media, "clip_image_embeddings", filtered_images, stages.embed_images,
                         settings.models.image_batch_size, label="clip_image_embeddings", frames=media.frames)
    return out


@dataclass(frozen=True)
class ModelAsset:
    """One asset of the model stack: the folder it reads, how it is stored, and what computes it
    (context, settings, media, upstream folder), whose docstring is the description the UI shows."""

    name: str
    upstream: str
    kinds: frozenset[str]
    io_manager: str
    compute: Callable


MODEL_ASSETS = (
    ModelAsset("captions", "filtered_images", frozenset({"pytorch", "parquet"}), "tables_io", _captions),
    ModelAsset("clip_embeddings", "captions", frozenset({"pytorch", "numpy"}), "arrays_io", _clip_embeddings),
    ModelAsset("dinov2_embeddings", "filtered_images", frozenset({"pytorch", "numpy"}), "arrays_io",
               _dinov2_embeddings),
    ModelAsset("latents", "filtered_images", frozenset({"pytorch", "numpy"}), "arrays_io", _latents),
    ModelAsset("clip_image_embeddings", "filtered_images", frozenset({"pytorch", "numpy"}), "arrays_io",
               _clip_image_embeddings),
)


def build_model_asset(settings: Settings, spec: ModelAsset) -> AssetsDefinition:
    """The asset of one spec, in the `gpu` pool, described and kinded by the settings' media."""
    media = media_for(settings)

    def compute(context: AssetExecutionContext, **inputs):
        return spec.compute(context, settings, media, inputs[spec.upstream])

    compute.__doc__ = spec.compute.__doc__
    # what Dagster reads of the function: the input keeps its name and its type (AssetFolder) in the UI
    compute.__signature__ = inspect.Signature([
        inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=AssetExecutionContext),
        inspect.Parameter(spec.upstream, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=AssetFolder)])
    return asset(name=spec.name, group_name="embeddings", kinds=media.kinds(set(spec.kinds)),
                 io_manager_key=spec.io_manager, description=media.description(spec.name), pool="gpu",
                 ins={spec.upstream: AssetIn()}, code_version=code_version(settings, spec.name),
                 partitions_def=parts_def(settings))(compute)


def build_model_assets(settings: Settings) -> list[AssetsDefinition]:
    """captions, clip_embeddings, dinov2_embeddings, latents and clip_image_embeddings."""
    return [build_model_asset(settings, spec) for spec in MODEL_ASSETS]
