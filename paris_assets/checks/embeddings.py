"""Blocking checks on the model stack's arrays, and the VAE reconstruction check on latents."""

import numpy as np
from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetIn, MetadataValue, asset_check

from ..assets.common import parts_def
from ..io_managers import AssetFolder
from ..lib.outputs.validation import check_arrays, inline_png, psnr, side_by_side_png
from ..lib.run.crops import decode_clips, decode_crops, read_crop_bytes
from ..models.profiles import build_model, expected_shapes, latent_role
from ..settings import Settings
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
                 description="Finite, 77 tokens of the model's width, and the kept images in kept.parquet's order"
                             + ("; T5 states (226 tokens of its width, zeros at padding) and their mask, each "
                                "caption's mask a run of real tokens then padding" if settings.media == "video" else "")
                             + ".")
    def clip_embeddings_valid(clip_embeddings: AssetFolder, filtered_images: AssetFolder) -> AssetCheckResult:
        expected = expected_shapes(settings)
        arrays = {"tokens": clip_embeddings.array("tokens"), "pooled": clip_embeddings.array("pooled")}
        shapes = {"tokens": expected["clip_tokens"], "pooled": expected["clip_pooled"]}
        if settings.media == "video":
            arrays.update(t5_tokens=clip_embeddings.array("t5_tokens"), t5_mask=clip_embeddings.array("t5_mask"))
            shapes.update(t5_tokens=expected["t5_tokens"], t5_mask=expected["t5_mask"])
        passed, facts = check_arrays(arrays, clip_embeddings.array("image_ids"), kept_ids(filtered_images), shapes)
        if settings.media == "video" and passed:
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
                 description=("Finite, (16, (T-1)/4+1, S/8, S/8) per clip" if settings.media == "video" else
                              "Finite, (4, 32, 32) per image") + ", the kept items in order; a fixed sample decoded "
                             "back with the VAE reaches the profile's PSNR, shown side by side.")
    def latents_valid(context: AssetCheckExecutionContext, latents: AssetFolder,
                      filtered_images: AssetFolder) -> AssetCheckResult:
        array = latents.array("latents")
        passed, facts = check_arrays({"latents": array}, latents.array("image_ids"), kept_ids(filtered_images),
                                     {"latents": expected_shapes(settings)["latents"]})
        if len(array):
            video = settings.media == "video"
            rows = np.unique(np.linspace(0, len(array) - 1, min(RECON_SAMPLE, len(array))).astype(int))
            kept = filtered_images.table("kept", columns=["image_id", "crop_shard"])
            decode = decode_clips if video else decode_crops
            originals = np.stack([decode(read_crop_bytes(filtered_images.url(""), kept, r, r + 1))[0] for r in rows])
            role = latent_role(settings)
            vae = build_model(settings, role).load()
            recon = vae.decode(np.asarray(array[rows]))
            scores = psnr(originals, recon)
            threshold = MIN_PSNR["paris" if getattr(settings.models, f"{role}_id") else settings.models.profile]
            grid = clip_grid_png(originals, recon) if video else side_by_side_png(originals, recon)
            facts.update(psnr_mean_db=round(float(scores.mean()), 2), psnr_min_db=round(float(scores.min()), 2),
                         psnr_threshold_db=threshold if np.isfinite(threshold) else "none (tiny profile)",
                         reconstructions=MetadataValue.md(inline_png(grid, "originals (top) and VAE reconstructions"
                                                                     + (", frames left to right" if video else ""))))
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


def clip_grid_png(originals: np.ndarray, reconstructions: np.ndarray, clips: int = 4, frames: int = 5) -> bytes:
    """media: video: for the first `clips` clips, `frames` evenly spaced frames side by side, each clip's row of
    originals above its row of reconstructions, as one PNG."""
    import io

    from PIL import Image

    at = np.unique(np.linspace(0, originals.shape[1] - 1, frames).astype(int))
    rows = [Image.open(io.BytesIO(side_by_side_png(o[at], r[at]))) for o, r in zip(originals[:clips], reconstructions)]
    grid = Image.new("RGB", (rows[0].width, sum(r.height for r in rows) + 4 * (len(rows) - 1)), "white")
    for i, row in enumerate(rows):
        grid.paste(row, (0, i * (row.height + 4)))
    buf = io.BytesIO()
    grid.save(buf, "PNG")
    return buf.getvalue()
