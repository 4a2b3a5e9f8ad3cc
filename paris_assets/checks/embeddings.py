"""Blocking checks on the model stack's arrays, and the VAE reconstruction check on latents."""

import numpy as np
from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetIn, MetadataValue, asset_check

from ..io_managers import AssetFolder
from ..lib.crops import decode_crops, read_crop_bytes
from ..lib.validation import check_arrays, inline_png, psnr, side_by_side_png
from ..models.profiles import build_model, expected_shapes
from ..settings import Settings
from ..assets.common import parts_def
from .common import check_result

# Reconstruction PSNR a VAE must reach, per profile: sd-vae-ft-mse gives ~25-30 dB on 256 px photos; the
# tiny profile's random weights reconstruct nothing, so there the check only demands a finite number.
MIN_PSNR = {"paris": 22.0, "tiny": float("-inf")}
RECON_SAMPLE = 8




def build_embedding_checks(settings: Settings) -> list:
    # Expected shapes come from the models' configs at check time, never at load: loading the definitions
    # must not need the hub.

    def kept_ids(filtered_images: AssetFolder):
        return filtered_images.column("kept", "image_id")

    @asset_check(asset="dinov2_embeddings", blocking=True, additional_ins={"filtered_images": AssetIn()},
                 partitions_def=parts_def(settings),
                 description="Finite, the model's width, unit L2 norm, and the kept images in kept.parquet's order.")
    def dinov2_embeddings_valid(dinov2_embeddings: AssetFolder, filtered_images: AssetFolder) -> AssetCheckResult:
        return check_result(*check_arrays({"embeddings": dinov2_embeddings.array("embeddings")},
                                     dinov2_embeddings.array("image_ids"), kept_ids(filtered_images),
                                     {"embeddings": expected_shapes(settings)["dinov2"]}, unit_norm=("embeddings",)))

    @asset_check(asset="clip_embeddings", blocking=True, additional_ins={"filtered_images": AssetIn()},
                 partitions_def=parts_def(settings),
                 description="Finite, 77 tokens of the model's width, and the kept images in kept.parquet's order.")
    def clip_embeddings_valid(clip_embeddings: AssetFolder, filtered_images: AssetFolder) -> AssetCheckResult:
        expected = expected_shapes(settings)
        return check_result(*check_arrays({"tokens": clip_embeddings.array("tokens"), "pooled": clip_embeddings.array("pooled")},
                                     clip_embeddings.array("image_ids"), kept_ids(filtered_images),
                                     {"tokens": expected["clip_tokens"], "pooled": expected["clip_pooled"]}))

    @asset_check(asset="clip_image_embeddings", blocking=True, additional_ins={"filtered_images": AssetIn()},
                 partitions_def=parts_def(settings),
                 description="Finite, the projection's width (768 for ViT-L/14, what the LAION heads read), unit L2 "
                             "norm (to float16's precision), and the kept images in kept.parquet's order.")
    def clip_image_embeddings_valid(clip_image_embeddings: AssetFolder, filtered_images: AssetFolder) -> AssetCheckResult:
        return check_result(*check_arrays({"embeddings": clip_image_embeddings.array("embeddings")},
                                          clip_image_embeddings.array("image_ids"), kept_ids(filtered_images),
                                          {"embeddings": expected_shapes(settings)["clip_image"]},
                                          unit_norm=("embeddings",), norm_tolerance=2e-3))

    @asset_check(asset="latents", blocking=True, additional_ins={"filtered_images": AssetIn()},
                 partitions_def=parts_def(settings),
                 description="Finite, (4, 32, 32) per image, the kept images in order; a fixed sample decoded back "
                             "with the VAE reaches the profile's PSNR, shown side by side.")
    def latents_valid(context: AssetCheckExecutionContext, latents: AssetFolder,
                      filtered_images: AssetFolder) -> AssetCheckResult:
        array = latents.array("latents")
        passed, facts = check_arrays({"latents": array}, latents.array("image_ids"), kept_ids(filtered_images),
                                     {"latents": expected_shapes(settings)["latents"]})
        if len(array):
            rows = np.unique(np.linspace(0, len(array) - 1, min(RECON_SAMPLE, len(array))).astype(int))
            kept = filtered_images.table("kept", columns=["image_id", "crop_shard"])
            originals = np.stack([decode_crops(read_crop_bytes(filtered_images.url(""), kept, r, r + 1))[0] for r in rows])
            vae = build_model(settings, "latent_encoder").load()
            recon = vae.decode(np.asarray(array[rows]))
            scores = psnr(originals, recon)
            threshold = MIN_PSNR[settings.models.profile] if not settings.models.latent_encoder_id else MIN_PSNR["paris"]
            facts.update(psnr_mean_db=round(float(scores.mean()), 2), psnr_min_db=round(float(scores.min()), 2),
                         psnr_threshold_db=threshold if np.isfinite(threshold) else "none (tiny profile)",
                         reconstructions=MetadataValue.md(inline_png(side_by_side_png(originals, recon),
                                                                     "originals (top) and VAE reconstructions")))
            if not np.isfinite(scores).all() or scores.mean() < threshold:
                facts["problems"].append(f"reconstruction PSNR {scores.mean():.1f} dB < {threshold} dB")
                passed = False
        return check_result(passed, facts)

    return [dinov2_embeddings_valid, clip_embeddings_valid, clip_image_embeddings_valid, latents_valid]
