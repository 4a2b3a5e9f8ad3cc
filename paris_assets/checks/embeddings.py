"""Blocking checks on the model stack's arrays, and the VAE reconstruction check on latents."""

import numpy as np
from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetIn, MetadataValue, asset_check

from ..assets.common import parts_def
from ..io_managers import AssetFolder
from ..lib.outputs.validation import check_arrays, inline_png, psnr
from ..lib.run.crops import read_crop_bytes
from ..media import expected_shapes, media_for
from ..models.profiles import build_model
from ..settings import Settings
from .common import check_result

# Reconstruction PSNR a VAE must reach, per profile: sd-vae-ft-mse gives ~25-30 dB on 256 px photos; the
# tiny profile's random weights reconstruct nothing, so there the check only demands a finite number.
MIN_PSNR = {"paris": 22.0, "tiny": float("-inf")}
RECON_SAMPLE = 8




def build_embedding_checks(settings: Settings) -> list:
    # Expected shapes come from the models' configs at check time, never at load: loading the definitions
    # must not need the hub.
    media = media_for(settings)

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
                 description="Finite, 77 tokens of the model's width, and the kept images in kept.parquet's order"
                             + media.text_check_note + ".")
    def clip_embeddings_valid(clip_embeddings: AssetFolder, filtered_images: AssetFolder) -> AssetCheckResult:
        expected = expected_shapes(settings)
        specs = media.arrays("clip_embeddings")  # CLIP's tokens and pooled, and for clips T5's states and mask
        arrays = {name: clip_embeddings.array(name) for name, _key, _dtype in specs}
        shapes = {name: expected[key] for name, key, _dtype in specs}
        passed, facts = check_arrays(arrays, clip_embeddings.array("image_ids"), kept_ids(filtered_images), shapes)
        if "t5_mask" in arrays and passed:
            problems = t5_mask_problems(arrays["t5_mask"], arrays["t5_tokens"])
            facts["problems"].extend(problems)
            passed = not problems
        return check_result(passed, facts)

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
                 description=f"Finite, {media.latent_check_note}, the kept items in order; a fixed sample decoded "
                             "back with the VAE reaches the profile's PSNR, shown side by side.")
    def latents_valid(context: AssetCheckExecutionContext, latents: AssetFolder,
                      filtered_images: AssetFolder) -> AssetCheckResult:
        array = latents.array("latents")
        passed, facts = check_arrays({"latents": array}, latents.array("image_ids"), kept_ids(filtered_images),
                                     {"latents": expected_shapes(settings)["latents"]})
        if len(array):
            rows = np.unique(np.linspace(0, len(array) - 1, min(RECON_SAMPLE, len(array))).astype(int))
            kept = filtered_images.table("kept", columns=["image_id", "crop_shard"])
            originals = np.stack([media.decode_stored(read_crop_bytes(filtered_images.url(""), kept, r, r + 1))[0]
                                  for r in rows])
            role = media.latent_role
            vae = build_model(settings, role).load()
            recon = vae.decode(np.asarray(array[rows]))
            scores = psnr(originals, recon)
            threshold = MIN_PSNR["paris" if getattr(settings.models, f"{role}_id") else settings.models.profile]
            grid, caption = media.reconstruction_grid(originals, recon)
            facts.update(psnr_mean_db=round(float(scores.mean()), 2), psnr_min_db=round(float(scores.min()), 2),
                         psnr_threshold_db=threshold if np.isfinite(threshold) else "none (tiny profile)",
                         reconstructions=MetadataValue.md(inline_png(grid, caption)))
            if not np.isfinite(scores).all() or scores.mean() < threshold:
                facts["problems"].append(f"reconstruction PSNR {scores.mean():.1f} dB < {threshold} dB")
                passed = False
        return check_result(passed, facts)

    return [dinov2_embeddings_valid, clip_embeddings_valid, clip_image_embeddings_valid, latents_valid]


def t5_mask_problems(mask, states, block: int = 4096) -> list[str]:
    """Each row's mask must be True for a first run of tokens (at least </s>) and False after, and the states
    zero wherever the mask is False: what a consumer's cross-attention relies on. Read in blocks of rows."""
    problems = []
    for start in range(0, len(mask), block):
        m = np.asarray(mask[start:start + block], dtype=bool)
        real = m.sum(axis=1)
        ordered = m == (np.arange(m.shape[1]) < real[:, None])
        bad = np.flatnonzero(~ordered.all(axis=1) | (real == 0))
        if len(bad):
            problems.append(f"t5_mask row {start + bad[0]}: not a run of real tokens then padding "
                            f"({len(bad)} rows in rows {start}-{start + len(m) - 1})")
        padded = np.abs(np.asarray(states[start:start + block], dtype=np.float32)).max(axis=2)[~m]
        if padded.size and padded.max() != 0:
            problems.append(f"t5_tokens: non-zero states at padding in rows {start}-{start + len(m) - 1}")
    return problems[:50]
