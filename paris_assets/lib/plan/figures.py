"""The planner's figures: the hardware, the rates and sizes measured on this machine, the assumptions, the stages."""

from __future__ import annotations

from typing import Any

import numpy as np

# --- the hardware ---------------------------------------------------------------------------------------------

A100 = {"name": "A100-SXM4-80GB", "tflops": 312.0, "hbm_gbs": 2039.0, "fp32_tflops": 19.5,
        "source": "NVIDIA A100 datasheet: 312 TFLOPS dense FP16/BF16 tensor core, 2,039 GB/s HBM2e (80 GB SXM)"}
DEFAULT_MFU = 0.35  # achieved share of peak for batched fp16 inference of ViTs and convnets; override with --mfu
CPUS_PER_GPU = 12  # an 8 x A100 node has 96 vCPUs (AWS p4d.24xlarge, GCP a2-highgpu-8g): 12 per GPU
PARTITION_SIZE = 100_000  # images per partition (issue #11): thousands of partitions at most, as Dagster likes
ID_BYTES = np.dtype("<U16").itemsize  # image_ids.npy: 16 hex digits as numpy str_ (lib.stages._finish)

# --- figures measured on this machine --------------------------------------------------------------------------

RAW_JPEG_BYTES = 80_477  # mean of 2,000 `bench_photos.laion_like` JPEGs (54 photographs, seed 0): ~0.5 MP, q75-95
CROP_JPEG_BYTES_256 = 31_956  # mean stored crop of those 2,000 through `lib.checks.process_image` (256 px, q95 4:4:4)
RAW_BYTES_SOURCE = ("measured: mean of `bench_photos.laion_like(photos, 2000, seed=0)` over the 54 photographs of "
                    "`bench_photos.photo_paths()` (the README's Plan a run section has the snippet)")
CROP_BYTES_SOURCE = ("measured: those 2,000 through `lib.checks.process_image` (default FilterParams); other sizes "
                     "scaled by (image_size / 256)^2 (assumed)")
TEXT_BYTES = {"url": 100, "alt_text": 60, "caption": 60}  # assumed UTF-8 lengths; no LAION rows on this machine
REPORT_BYTES = 6.2e6  # cluster_report/ on the demo at K=8 (report.json, report.html, 8 grids): it does not grow with N
TABLE_ROW_BYTES = 120  # assumed: ids, hashes and scores beside the text in a parquet row (before compression)
SCORES_ROW_BYTES = 42  # quality_scores' scores.parquet: 42.00-42.25 B a row, measured on 100k rows (source below)
SCORES_BYTES_SOURCE = ("measured: `lib.quality.scores_table` over 100,000 rows (stable_id-style hex ids, random "
                       "float32 scores; one partition's file) written by `DataFrame.to_parquet` as tables_io writes "
                       "it (snappy): 42.00 B a row all carried or all computed, 42.25 B half and half; the ids and "
                       "four float32 columns are incompressible, the source columns dictionary-encode to almost "
                       "nothing (test_plan writes it again)")

# Each CPU stage: seconds per image on one core (per-image stages), or how its measured wall time scales with N
# (global stages, which run as one process over all partitions).
CPU_FIGURES: dict[str, dict[str, Any]] = {
    "ingest": {"core_s_per_image": 2 / 150, "source":
               "notes.md: img2dataset over loopback, 2 processes, ~150 images/s at 1,000 samples per shard "
               "(the HTTP server on the same 2 cores); real downloads also wait on the network and remote hosts"},
    "filtered_images": {"core_s_per_image": 1 / 216, "source":
                        "README Speed: filter bench on a quiet machine, --images 8000, 216 images per CPU-second "
                        "(`python -m paris_assets.bench --only filter`): decode, checks, crop, pHash, JPEG, sha256"},
    "duplicate search": {"points": [(100_000, 0.5), (1_000_000, 20.5)], "source":
                         "README, near-duplicate grouping against n: resampled real pHashes at radius 6, one "
                         "thread, 0.5 s at 100k and 20.5 s at 1M (`python -m paris_assets.bench.dedup`); "
                         "extrapolated as the power law through those two points"},
    "cluster_labels": {"seconds_per_million": 104.0, "source":
                       "README Speed: 1M x 1024 f16 features, hierarchical, faiss, fine_k 1024, K 8: 92-104 s on "
                       "2 cores (`python -m paris_assets.bench --only clustering`); scaled linearly in N (an upper "
                       "bound: k-means trains on a fixed sample), more cores not credited"},
    "cluster_report": {"seconds_per_million": 10.8, "source":
                       "README Speed: exact silhouette, intra-cluster similarity, Davies-Bouldin on 20k, 1M x "
                       "1024 (bench_clustering); scaled linearly in N"},
    "expert_shards": {"bytes_per_s": 135e6, "source":
                      "README Speed: 20,000 samples with clip tokens written at 135-148 MB/s by one process "
                      "(`python -m paris_assets.bench --only shards`); the low end, scaled by the bytes written"},
    "router_pairs": {"bytes_per_s": 152.1e9 / 189 / 2, "source":
                     "no bench writes the router arrays: router_pairs_aligned read the same arrays at 11M rows, "
                     "152.1 GB in 189 s (README, `python -m paris_assets.bench.checks`); the copy reads and writes "
                     "each byte, so half that rate"},
}

# CPU seconds per image that feed a GPU stage: decoding the stored crop, then the model's own preprocessing.
PREPROCESS_CPU = {
    "dinov2_embeddings": (1.44e-3 + 2.24e-3, "decode_crops 1.44 ms + DINOv2's BitImageProcessor (to 224) 2.24 ms"),
    "latents": (1.44e-3 + 3.94e-3, "decode_crops 1.44 ms + diffusers VaeImageProcessor 3.94 ms"),
    "captions": (1.44e-3 + 2.24e-3, "decode_crops 1.44 ms + a 224 px processor, DINOv2's figure standing in"),
    "clip_image_embeddings": (1.44e-3 + 3.3e-3, ("decode_crops 1.44 ms + CLIPImageProcessor at openai/clip-vit-"
                                                 "large-patch14's settings (shorter side 224 bicubic, centre crop "
                                                 "224) 3.3 ms, built directly: the tiny profile's is 32 px")),
    "clip_embeddings": (0.0, "tokenising a caption: not measured (the tiny tokenizer is not CLIP's); left out"),
}
PREPROCESS_SOURCE = ("measured here: CPU time, one thread, 512 demo crops (256 px), `lib.crops.decode_crops` and "
                     "`model.preprocess` in batches of 64 with the tiny profile's processors, which keep the paris "
                     "geometry (the README's Plan a run section has the snippet)")

GPU_STAGES = ("captions", "dinov2_embeddings", "clip_image_embeddings", "clip_embeddings", "latents")
STAGES = ("ingest", "filtered_images", "captions", "dinov2_embeddings", "clip_image_embeddings", "clip_embeddings",
          "latents", "duplicate search", "cluster_labels", "cluster_report", "expert_shards", "router_pairs")
# media: video: clip_embeddings runs CLIP's text tower and T5-v1.1-XXL; T5 is its own row (t5_tokens, the folder
# it writes) because it costs 160x CLIP's text tower (2.11 TFLOPs a caption against 13 GFLOPs). No captions model:
# clips keep their source text (captions_blip2 is ignored)
VIDEO_STAGES = ("ingest", "filtered_images", "captions", "dinov2_embeddings", "clip_image_embeddings",
                "clip_embeddings", "t5_tokens", "latents", "duplicate search", "cluster_labels", "cluster_report",
                "expert_shards", "router_pairs")
VIDEO_GPU_STAGES = ("dinov2_embeddings", "clip_image_embeddings", "clip_embeddings", "t5_tokens", "latents")
PER_IMAGE_CPU = ("ingest", "filtered_images")
# clip_image_embeddings loads CLIP's image tower from the text encoder's checkpoint (models.profiles.SAME_CHECKPOINT)
ROLE_OF = {"captions": "captioner", "clip_embeddings": "text_encoder", "dinov2_embeddings": "image_embedder",
           "clip_image_embeddings": "text_encoder", "latents": "latent_encoder"}
VIDEO_ROLE_OF = {**ROLE_OF, "t5_tokens": "t5_encoder", "latents": "video_latent_encoder"}

# --- media: video: figures measured on this machine, and the assumptions -------------------------------------

STORED_CLIP_BYTES_256 = 47_892  # mean stored clip (17 x 256 x 256, H.264 4:4:4 CRF 18) of the demo's 216
VIDEO_FIGURES: dict[str, tuple[float, str]] = {
    "stored clip": (STORED_CLIP_BYTES_256, (
        "measured: mean `lib.video.encode_clip` mp4 of the video demo's 216 stored clips (data-video/filtered_images, "
        "17 x 256 x 256 at 8 fps, CRF 18 yuv444p): 47,892 B; Dagster_world.mp4 through `process_video` (its two "
        "17-frame windows at 0 s and 5 s): 41,398 and 38,178 B. Textured web footage runs larger (encode_clip's "
        "docstring: 70-206 KB for 33 frames of real videos, so ~35-100 KB at 17); other sizes and lengths scaled "
        "by pixels x frames (assumed)")),
    "source video": (3_000_000, (
        "assumed: a few MB per downloaded web clip (no web crawl here; the demo's 2-3 s clips average 55 KB, "
        "Dagster_world.mp4 is 2.4 MB for ~10 s of 1080p)")),
    "filter": (0.270, (
        "README Speed: `process_video` (`python -m paris_assets.bench --only video`), 2 processes, 256 px, 17 frames "
        "at 8 fps: 4 real videos (Dagster_world.mp4, OpenCV's vtest, Megamind, tree) 4.5 clips/s, 270 ms CPU a "
        "clip; the 2-3 s demo clips 7.9 clips/s, 145 ms CPU of which 86 ms is encoding the stored clip. The real "
        "videos' figure: web sources are longer and larger than the demo's")),
    "kept columns": (80, ("assumed: kept.parquet's clip columns (duration, source_fps, rotation, codec, pix_fmt, "
                          "window, cuts, motion, two more pHashes), before compression")),
}
# CPU seconds per clip ahead of each GPU stage: decoding the stored clip (all of it for the VAE, the first frame
# for the image models), then the model's preprocessing. Measured here, one thread, CPU time (process_time).
VIDEO_PREPROCESS = {
    "decode_clip": (32.3e-3, ("`lib.video.decode_clip` of a 17 x 256 x 256 stored clip: 32.3 ms (200 demo clips, "
                              "two rounds: 32.7, 32.0)")),
    "first_frame": (6.2e-3, "`lib.crops.decode_first_frames`: 6.2 ms a clip (the same clips: 6.0, 6.3)"),
    "vae_preprocess": (33e-3, ("`VideoLatentEncoder.preprocess` (uint8 -> float32 in [-1, 1], NCTHW), batch of 16 "
                               "clips of 17 x 256 x 256, one torch thread: 29-42 ms a clip")),
}
VIDEO_PREPROCESS_SOURCE = ("measured here: CPU time, one thread, on the video demo's stored clips (256 px, 17 "
                           "frames); the image processors' figures are PREPROCESS_CPU's")
