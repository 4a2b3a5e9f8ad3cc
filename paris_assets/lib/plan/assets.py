"""The storage model: the bytes each asset writes per row, a shard sample's tar members, and the shard counts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..outputs.shards import TAR_OVERHEAD, ShardSource, VideoFields, sample_fields
from .figures import ID_BYTES, REPORT_BYTES, SCORES_ROW_BYTES, TABLE_ROW_BYTES, TEXT_BYTES, VIDEO_FIGURES
from .inputs import AssetRow, PlanInputs


def tar_member_bytes(size: int) -> int:
    """A member of a USTAR tar as lib.tars writes it: a 512-byte header and the data padded to 512."""
    return 512 + (size + 511) // 512 * 512


def tar_file_bytes(member_sizes: list[int]) -> int:
    """The whole tar file: members, two zero blocks, padded to tarfile's 10,240-byte record."""
    raw = sum(tar_member_bytes(s) for s in member_sizes) + 1024
    return (raw + 10239) // 10240 * 10240


def shard_sample(inputs: PlanInputs, costs: dict) -> dict[str, int]:
    """Member name -> bytes of one expert-shard sample, built by lib.shards.sample_fields from arrays of the
    real shapes and text of the assumed lengths."""
    clip, latent = costs["clip_embeddings"], costs["latents"]["latent_shape"]
    kept = pd.DataFrame({"image_id": ["0" * 16], "url": ["u" * TEXT_BYTES["url"]],
                         "alt_text": ["a" * TEXT_BYTES["alt_text"]], "aesthetic": [6.5], "punsafe": [0.01],
                         "original_width": [1024], "original_height": [768], "phash": ["0" * 16]})
    src = ShardSource(kept=kept, captions=["c" * TEXT_BYTES["caption"]], labels=np.zeros(1, np.int32),
                      distances=np.full(1, 0.123456, np.float32),
                      latents=np.zeros((1, *latent), np.float16), pooled=np.zeros((1, clip["projection"]), np.float16),
                      tokens=np.zeros((1, clip["tokens"], clip["width"]), np.float16) if inputs.include_clip_tokens
                      else None)
    jpg = b"\0" * crop_bytes(inputs) if inputs.include_jpg else None
    if inputs.video:  # a clip's sample: T5 states and mask, first-frame DINOv2, the clip's facts in its json
        t5, dim = costs["t5_tokens"], costs["dinov2_embeddings"]["dim"]
        for key in ("duration", "source_fps", "window_start", "window_end", "motion"):
            kept[key] = [12.345678]
        kept["rotation"], kept["codec"] = [0], ["h264"]
        src.video = VideoFields(t5_tokens=np.zeros((1, t5["tokens"], t5["width"]), np.float16),
                                t5_mask=np.zeros((1, t5["tokens"]), bool), dinov2=np.zeros((1, dim), np.float32),
                                fps=inputs.fps, num_frames=inputs.num_frames)
        jpg = b"\0" * crop_bytes(inputs) if inputs.include_mp4 else None
    return {name: len(value) for name, value in sample_fields(src, 0, jpg).items()}


def crop_bytes(inputs: PlanInputs) -> int:
    """The stored crop (a JPEG), or with media: video the stored clip (an mp4), scaled from the 256 px figure by
    pixels (and frames)."""
    if inputs.video:
        return round(inputs.clip_bytes_256 * (inputs.image_size / 256) ** 2 * inputs.num_frames / 17)
    return round(inputs.crop_bytes_256 * (inputs.image_size / 256) ** 2)



def plan_assets(inputs: PlanInputs, costs: dict, held: int) -> tuple[list[AssetRow], dict[str, int]]:
    """Each asset's rows and bytes per row, from the shapes and dtypes the code writes; and the shard counts."""
    n, train, ids = inputs.images, inputs.images - held, ID_BYTES
    clip, dim, latent = costs["clip_embeddings"], costs["dinov2_embeddings"]["dim"], costs["latents"]["latent_shape"]
    clip_image = costs["clip_image_embeddings"]["dim"]
    latent_bytes = int(np.prod(latent)) * 2
    members = shard_sample(inputs, costs)
    sample_tar = sum(tar_member_bytes(s) for s in members.values())
    cut_need = sum(s + TAR_OVERHEAD for s in members.values())  # what lib.shards counts when it cuts a shard
    per_shard = max(1, min(inputs.max_samples_per_shard, inputs.max_shard_bytes // cut_need))
    shards = {"samples_per_shard": per_shard, "expert_shards_at_most": math.ceil(train / per_shard) + inputs.k,
              "heldout_shards": math.ceil(held / per_shard) if held else 0}
    router_row = latent_bytes + 4 + dim * 4 + clip["projection"] * 2 + ids
    text_row = TEXT_BYTES["url"] + TEXT_BYTES["alt_text"] + TABLE_ROW_BYTES
    clip_row = (clip["tokens"] * clip["width"] + clip["projection"]) * 2 + ids
    clip_what = f"tokens ({clip['tokens']}, {clip['width']}) f16 + pooled ({clip['projection']},) f16 + id"
    raw = (inputs.raw_bytes, "original bytes (jpg)")
    stored = (tar_member_bytes(crop_bytes(inputs)) + text_row,
              f"{inputs.image_size} px crop JPEG q95 in crops/*.tar, kept.parquet row")
    if inputs.video:
        t5 = costs["t5_tokens"]
        clip_row += t5["tokens"] * t5["width"] * 2 + t5["tokens"]
        clip_what += f" + t5_tokens ({t5['tokens']}, {t5['width']}) f16 + t5_mask ({t5['tokens']},) bool"
        raw = (inputs.raw_video_bytes, "source video (mp4, size assumed)")
        stored = (stored[0] + int(VIDEO_FIGURES["kept columns"][0]),
                  (f"{inputs.num_frames} x {inputs.image_size} px H.264 mp4 (measured) in crops/*.tar, kept.parquet "
                   f"row with the clip's columns"))
    assets = [
        AssetRow("raw_images", n, raw[0] + 3 * 1024 + text_row, 0, 0,
                 f"{raw[1]} + txt + json members per sample, samples.parquet row"),
        AssetRow("filtered_images", n, stored[0], 0, 0, stored[1]),
        AssetRow("captions", n, TEXT_BYTES["caption"] + TEXT_BYTES["alt_text"] + 16 + 10, 0, 0,
                 "captions.parquet row: image_id, caption, alt_text, caption_source"),
        AssetRow("clip_embeddings", n, clip_row, 0, 0, clip_what),
        AssetRow("dinov2_embeddings", n, dim * 4 + ids, 0, 0, f"({dim},) f32 + id"),
        AssetRow("clip_image_embeddings", n, clip_image * 2 + ids, 0, 0, f"({clip_image},) f16 + id"),
        AssetRow("quality_scores", n, SCORES_ROW_BYTES, 0, 0,
                 "scores.parquet row: image_id; aesthetic, punsafe as value f32, source, computed f32 (measured)"),
        AssetRow("latents", n, latent_bytes + ids, 0, 0, f"({', '.join(map(str, latent))}) f16 + id"),
        AssetRow("cluster_labels", n, 4 + 4 + ids, inputs.k * dim * 4, 0,
                 f"label i32 + distance f32 + id; centroids ({inputs.k}, {dim}) f32"),
        AssetRow("cluster_report", 0, 0, REPORT_BYTES, 0, "report.json/html and K grids: a fixed size"),
        AssetRow("expert_shards", train, sample_tar, 0, 0,
                 "tar sample: " + ", ".join(f"{k} {v:,} B" for k, v in members.items())
                 + f"; <= {per_shard:,} per shard"),
        AssetRow("heldout", held, sample_tar + router_row, 0, 0, "held-out samples: shards + their own router arrays"),
        AssetRow("router_pairs", train, router_row, 0, 0,
                 f"latent f16 + label i32 + dinov2 ({dim},) f32 + pooled CLIP ({clip['projection']},) f16 + id"),
    ]
    for a in assets:
        a.total_bytes = a.bytes_per_row * a.rows + a.fixed_bytes
    return assets, shards
