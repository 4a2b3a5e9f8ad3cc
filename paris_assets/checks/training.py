"""Blocking checks on expert_shards and router_pairs: the data the experts train on is what the manifest says."""

from dagster import AssetCheckResult, AssetIn, asset_check

from ..io_managers import AssetFolder, images_of
from ..lib.outputs.shards import heldout_mask
from ..lib.outputs.validation import check_arrays, verify_training_outputs
from ..media import expected_shapes, media_for
from ..settings import Settings
from .common import check_result


def expected_members(settings: Settings) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shard member -> (shape, dtype) every sample must decode to under these settings: any latent rank (a clip's
    latent is (C, T', h, w)), and for clips the T5 states, their mask and the first frame's DINOv2."""
    shapes = expected_shapes(settings)
    expect = {"latent.npy": (shapes["latents"], "float16"), "clip.npy": (shapes["clip_pooled"], "float16")}
    if settings.shards.include_clip_tokens:
        expect["clip_tokens.npy"] = (shapes["clip_tokens"], "float16")
    return {**expect, **media_for(settings).shard_members(shapes)}


def build_training_checks(settings: Settings) -> list:
    s = settings.shards

    def split(cluster_labels: AssetFolder, filtered_images: AssetFolder):
        kept = images_of(cluster_labels, filtered_images)[0].strings("kept", "image_id")
        held = heldout_mask(kept, s.heldout_fraction, settings.heldout_max, settings.seed)
        return kept, held

    @asset_check(asset="expert_shards", blocking=True,
                 additional_ins={"cluster_labels": AssetIn(), "filtered_images": AssetIn()},
                 description="Every shard in the manifest exists with its sha256 and sample count, no unlisted file, "
                             "every kept image exactly once, and each cluster decodes with plain webdataset.")
    def shards_match_manifest(expert_shards: AssetFolder, cluster_labels: AssetFolder,
                              filtered_images: AssetFolder) -> AssetCheckResult:
        kept, held = split(cluster_labels, filtered_images)
        return check_result(*verify_training_outputs(settings.data_root, kept, kept[held], expected_members(settings)))

    @asset_check(asset="router_pairs", blocking=True,
                 additional_ins={"cluster_labels": AssetIn(), "filtered_images": AssetIn()},
                 description="Equal lengths, finite, and the same images as the expert shards (held-out left out).")
    def router_pairs_aligned(router_pairs: AssetFolder, cluster_labels: AssetFolder,
                             filtered_images: AssetFolder) -> AssetCheckResult:
        kept, held = split(cluster_labels, filtered_images)
        names = ("latents", "cluster_labels", "dinov2_embeddings", "clip_text_embeddings")
        return check_result(*check_arrays({n: router_pairs.array(n) for n in names}, router_pairs.array("image_ids"),
                                     kept[~held], {}))

    return [shards_match_manifest, router_pairs_aligned]
