"""Plan a run past this machine: per stage the work (GPU-hours, CPU core-hours), the storage each asset writes,
the partitions and the expected wall time, for N images on a cluster of G GPUs.

Where each number comes from:

- **Bytes per image** are the shapes and dtypes the code writes (read from the models' configs the way
  `models.profiles.expected_shapes` reads them), `.npy` members and tar blocks as `lib.shards` and `lib.tars`
  write them (a shard sample is built by `lib.shards.sample_fields` itself). Three figures are measured, not
  derived: the original JPEG, the stored crop and a scores.parquet row (below). Text lengths (URL, alt text,
  caption) are assumptions.
- **GPU throughput** is FLOPs per image / (peak x MFU). FLOPs count matrix products and convolutions as
  `torch.utils.flop_counter.FlopCounterMode` counts them (2 per multiply-add; norms and activations left out):
  transformers as 2 x matmul weights x tokens + 4 x tokens^2 x width per layer, the VAE encoder conv by conv
  from its config. The tests check each formula against FlopCounterMode on the real configs (meta tensors).
  BLIP-2's token-by-token generation is bounded by reading OPT's weights once per decoding step (a roofline:
  max(compute, weight bytes / HBM bandwidth / batch)), not by FLOPs.
- **CPU rates** are the figures measured on this 2-core machine and written in the README (cited per stage in
  `CPU_FIGURES`, and `PREPROCESS_CPU` for the decoding that feeds each GPU); `--rate stage=...` overrides any
  of them. The README's "Plan a run" lists every default with its source.

With `media: video` (PlanInputs.media) it plans clips: T5-v1.1-XXL (226 tokens) beside CLIP's text tower, the
causal HunyuanVideo VAE on num_frames x S x S as diffusers runs it (17-frame windows), DINOv2 and CLIP's image
tower on the first frame (one image a clip; three with embed_frames: keyframes), the clip filter's measured
rate, the stored mp4 measured, the source video assumed (VIDEO_FIGURES says which is which).

No torch, no Dagster: numbers in, a `Plan` out.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..outputs.shards import TAR_OVERHEAD, ShardSource, VideoFields, sample_fields
from .flops import (
    PARIS_CONFIGS,
    PARIS_IDS,
    PARIS_VIDEO_IDS,
    blip2_cost,
    clip_image_cost,
    clip_text_cost,
    dinov2_cost,
    t5_xxl_cost,
    vae_encoder_cost,
    video_vae_encoder_cost,
)

if TYPE_CHECKING:
    from ...settings import Settings

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


# --- inputs and the plan ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlanInputs:
    """Everything a plan depends on. `configs` maps role -> (model id, config dict)."""
    images: int
    gpus: int = 8
    cpus: int | None = None  # cores in all (ingest, filtering, decoding for the GPUs); None: gpus x cpus_per_gpu
    cpus_per_gpu: int = CPUS_PER_GPU
    partition_size: int = PARTITION_SIZE
    gpu_name: str = A100["name"]
    gpu_tflops: float = A100["tflops"]
    gpu_hbm_gbs: float = A100["hbm_gbs"]
    mfu: float = DEFAULT_MFU
    write_gbs: float | None = None  # aggregate write bandwidth to data_dir, GB/s; None: not modelled
    rates: dict[str, float] = field(default_factory=dict)  # stage -> images/s (per GPU, per core, or overall)
    configs: dict[str, tuple[str, dict]] = field(default_factory=lambda: {r: (i, PARIS_CONFIGS[i])
                                                                          for r, i in PARIS_IDS.items()})
    image_size: int = 256
    captions_blip2: bool = True
    max_new_tokens: int = 30
    caption_batch_size: int = 16
    loader_threads: int = 2  # models.loader_threads: threads decoding ahead of each GPU's model
    k: int = 8
    include_clip_tokens: bool = True
    include_jpg: bool = False
    max_samples_per_shard: int = 1000
    max_shard_bytes: int = 256 * 2 ** 20
    heldout_fraction: float = 0.01
    heldout_max: int = 10_000
    raw_bytes: int = RAW_JPEG_BYTES
    crop_bytes_256: int = CROP_JPEG_BYTES_256
    notes: tuple[str, ...] = ()
    # media: video (Paris 2.0): clips instead of images; `images` then counts clips
    media: str = "image"
    num_frames: int = 17  # video.num_frames (4k+1)
    fps: float = 8.0  # video.fps
    embed_frames: str = "first"  # video.embed_frames: first frame, or keyframes (first, middle, last)
    include_mp4: bool = False  # shards.include_mp4
    t5_tokens: int = 226  # T5's padded length (models/t5_encoder.MAX_LENGTH)
    # T5's float32 `wo` products: FP32 without TF32 (PyTorch's default for matmuls; this project leaves it)
    gpu_fp32_tflops: float = A100["fp32_tflops"]
    raw_video_bytes: int = int(VIDEO_FIGURES["source video"][0])
    clip_bytes_256: int = STORED_CLIP_BYTES_256  # a 17-frame clip at 256 px
    video_configs: dict[str, tuple[str, dict]] = field(default_factory=lambda: {
        r: (i, PARIS_CONFIGS[i]) for r, i in PARIS_VIDEO_IDS.items()})

    @property
    def video(self) -> bool:
        return self.media == "video"

    @property
    def stages(self) -> tuple[str, ...]:
        return VIDEO_STAGES if self.video else STAGES

    @property
    def total_cpus(self) -> int:
        return self.cpus if self.cpus is not None else self.gpus * self.cpus_per_gpu


@dataclass
class StageRow:
    stage: str
    runs_on: str  # "GPU" (data-parallel over gpus), "CPU" (over all cores), "one process" (a global step)
    partitions: int | str
    rate: float  # images/s per GPU, per core, or of the one process
    rate_unit: str
    rate_source: str
    gpu_hours: float
    core_hours: float
    wall_hours: float
    writes: str
    bound: str = ""  # what sets the wall time: GPU, CPU, decoding CPU, writes (--write-gbs), measured
    wall_is_lower_bound: bool = False  # ingest: the network and remote hosts are not modelled

    @property
    def partition_seconds(self) -> float | None:
        """Wall seconds of one partition when the whole cluster works on it (None for the fan-in steps)."""
        return self.wall_hours * 3600 / self.partitions if isinstance(self.partitions, int) else None


@dataclass
class AssetRow:
    asset: str
    rows: int  # images it holds (training samples for the shards and router arrays)
    bytes_per_row: float
    fixed_bytes: float
    total_bytes: float
    what: str


@dataclass
class Plan:
    inputs: PlanInputs
    stages: list[StageRow]
    assets: list[AssetRow]
    models: dict[str, dict]
    partitions: int
    heldout: int
    shards: dict[str, int]
    wall_hours_serial: float
    wall_hours_overlapped: float
    assumptions: list[tuple[str, str, str]]

    def stage(self, name: str) -> StageRow:
        return next(s for s in self.stages if s.stage == name)

    def asset(self, name: str) -> AssetRow:
        return next(a for a in self.assets if a.asset == name)

    def as_dict(self) -> dict:
        out = asdict(self)
        for row, stage in zip(out["stages"], self.stages):
            row["partition_seconds"] = stage.partition_seconds
        out["inputs"]["configs"] = {role: model_id for role, (model_id, _) in self.inputs.configs.items()}
        if self.inputs.video:
            out["inputs"]["video_configs"] = {role: model_id for role, (model_id, _) in
                                              self.inputs.video_configs.items()}
        else:  # an image plan's JSON as before
            for key in VIDEO_INPUTS:
                out["inputs"].pop(key)
        out["inputs"]["total_cpus"] = self.inputs.total_cpus
        out["totals"] = {"gpu_hours": sum(s.gpu_hours for s in self.stages),
                         "core_hours": sum(s.core_hours for s in self.stages),
                         "storage_bytes": sum(a.total_bytes for a in self.assets),
                         "wall_hours_serial": self.wall_hours_serial,
                         "wall_hours_overlapped": self.wall_hours_overlapped}
        return out


VIDEO_INPUTS = ("media", "num_frames", "fps", "embed_frames", "include_mp4", "t5_tokens", "gpu_fp32_tflops",
                "raw_video_bytes", "clip_bytes_256", "video_configs")


def model_costs(inputs: PlanInputs) -> dict[str, dict]:
    """Per GPU stage: its model, FLOPs per image (per clip with media: video), output widths, and the images/s
    per GPU they give."""
    peak = inputs.gpu_tflops * 1e12
    costs = {
        "dinov2_embeddings": dinov2_cost(inputs.configs["image_embedder"][1]),
        "clip_image_embeddings": clip_image_cost(inputs.configs["text_encoder"][1]),
        "clip_embeddings": clip_text_cost(inputs.configs["text_encoder"][1]),
    }
    configs = {**inputs.configs, **inputs.video_configs} if inputs.video else inputs.configs
    if inputs.video:
        frames = 3 if inputs.embed_frames == "keyframes" else 1
        for stage in ("dinov2_embeddings", "clip_image_embeddings"):  # the first frame (or three) of each clip
            costs[stage]["flops"] *= frames
            costs[stage]["how"] += " on the clip's first frame" if frames == 1 else " on 3 keyframes a clip"
        costs["t5_tokens"] = t5_xxl_cost(configs["t5_encoder"][1], inputs.t5_tokens)
        costs["latents"] = video_vae_encoder_cost(configs["video_latent_encoder"][1], inputs.num_frames,
                                                  inputs.image_size)
    else:
        costs["latents"] = vae_encoder_cost(inputs.configs["latent_encoder"][1], inputs.image_size)
    if inputs.captions_blip2 and not inputs.video:
        costs["captions"] = blip2_cost(inputs.configs["captioner"][1], inputs.max_new_tokens)
    for stage, cost in costs.items():
        cost["model_id"] = configs[(VIDEO_ROLE_OF if inputs.video else ROLE_OF)[stage]][0]
        seconds = cost["flops"] / (peak * inputs.mfu)
        if cost.get("fp32_flops"):  # T5's float32 products at the float32 rate
            seconds += cost["fp32_flops"] * (1 / (inputs.gpu_fp32_tflops * 1e12) - 1 / peak) / inputs.mfu
        if "flops_per_token" in cost:  # decoding: compute or weight reads, whichever is slower, per image
            step = max(cost["flops_per_token"] / (peak * inputs.mfu),
                       cost["weight_bytes"] / (inputs.gpu_hbm_gbs * 1e9 * inputs.caption_batch_size))
            cost["decode_s_per_token"] = step
            seconds += cost["new_tokens"] * step
        cost["images_per_s"] = 1.0 / seconds
    return costs


def duplicate_search_seconds(n: int) -> float:
    """The measured pHash grouping at n hashes (a clip has three: first, middle, last frame)."""
    (n0, t0), (n1, t1) = CPU_FIGURES["duplicate search"]["points"]
    exponent = math.log(t1 / t0) / math.log(n1 / n0)
    return t1 * (n / n1) ** exponent


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


def make_plan(inputs: PlanInputs) -> Plan:
    """The plan: model costs, bytes per asset, then each stage's work and wall time, and the assumptions."""
    n = inputs.images
    if n < 1 or inputs.gpus < 1 or inputs.partition_size < 1 or inputs.total_cpus < 1:
        raise ValueError("images, gpus, cpus and partition_size must be at least 1")
    if not 0 < inputs.mfu <= 1 or inputs.gpu_tflops <= 0 or inputs.gpu_hbm_gbs <= 0 or (inputs.write_gbs or 1) <= 0:
        raise ValueError("mfu must be in (0, 1]; gpu_tflops, gpu_hbm_gbs and write_gbs must be positive")
    unknown = set(inputs.rates) - set(inputs.stages)
    if unknown:
        raise ValueError(f"--rate for unknown stage(s) {sorted(unknown)}; stages: {', '.join(inputs.stages)}")
    if inputs.video and ((inputs.num_frames - 1) % 4 or inputs.image_size % 8):
        raise ValueError("media: video needs num_frames 4k+1 and image_size a multiple of 8")
    costs = model_costs(inputs)
    partitions = math.ceil(n / inputs.partition_size)
    held = min(round(n * inputs.heldout_fraction), inputs.heldout_max) if inputs.heldout_fraction > 0 else 0
    assets, shards = plan_assets(inputs, costs, held)
    stages = []
    written = {a.asset: a.total_bytes for a in assets}
    for stage in inputs.stages:
        if stage in PER_IMAGE_CPU:
            row = cpu_stage(inputs, stage, partitions)
        elif stage in GPU_STAGES + VIDEO_GPU_STAGES:
            row = gpu_stage(inputs, stage, partitions, costs.get(stage))
            if inputs.video and stage == "clip_embeddings":  # the asset's bytes are T5's: that row writes them
                row.writes = ""
            elif stage == "t5_tokens":
                row.writes = "clip_embeddings"
        else:
            row = global_stage(inputs, stage, written)
        if inputs.video:
            row.rate_unit = row.rate_unit.replace("images", "clips")
            if stage == "duplicate search" and row.bound != "--rate":
                row.rate_source += "; clips: 3 pHashes each (first, middle, last frame), so timed at 3 x N hashes"
        if inputs.write_gbs and row.runs_on in ("CPU", "GPU"):  # the global steps' figures include their writes
            writing = written.get(row.writes, 0.0) / (inputs.write_gbs * 1e9) / 3600
            if writing > row.wall_hours:
                row.wall_hours, row.bound = writing, f"writes at {inputs.write_gbs:g} GB/s"
        stages.append(row)
    per_image_cpu = sum(s.wall_hours for s in stages if s.stage in PER_IMAGE_CPU)
    gpu = sum(s.wall_hours for s in stages if s.runs_on == "GPU")
    global_steps = sum(s.wall_hours for s in stages if s.runs_on == "one process")
    return Plan(inputs, stages, assets, costs, partitions, held, shards,
                wall_hours_serial=sum(s.wall_hours for s in stages),
                wall_hours_overlapped=max(per_image_cpu, gpu) + global_steps,
                assumptions=assumptions(inputs, held))


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


def cpu_stage(inputs: PlanInputs, stage: str, partitions: int) -> StageRow:
    """ingest or filtered_images: per-image CPU work spread over every core."""
    override = inputs.rates.get(stage)
    rate = override or 1 / CPU_FIGURES[stage]["core_s_per_image"]
    source = CPU_FIGURES[stage]["source"]
    if inputs.video and stage == "filtered_images":
        rate, source = override or 1 / VIDEO_FIGURES["filter"][0], VIDEO_FIGURES["filter"][1]
    elif inputs.video:
        source += "; per file, as for images: a video's bytes are not modelled (the network is the bound)"
    core_h = inputs.images / rate / 3600
    return StageRow(stage, "CPU", partitions, rate, "images/s per core",
                    "--rate" if override else source, 0.0, core_h, core_h / inputs.total_cpus,
                    "raw_images" if stage == "ingest" else "filtered_images",
                    bound="CPU", wall_is_lower_bound=stage == "ingest" and not override)


def gpu_stage(inputs: PlanInputs, stage: str, partitions: int, cost: dict | None) -> StageRow:
    """A model stage, data-parallel over the GPUs; its wall is the GPUs' or the decoding CPUs', the slower."""
    if cost is None:
        return StageRow(stage, "no model", partitions, 0.0, "-", "captions.source: alt_text (no model)", 0.0, 0.0, 0.0,
                        stage)
    override = inputs.rates.get(stage)
    rate = override or cost["images_per_s"]
    decode = ""
    if "flops_per_token" in cost:
        decode = (f" + {cost['new_tokens']} tokens x {cost['decode_s_per_token'] * 1e6:,.0f} us (roofline: "
                  f"{cost['weight_bytes'] / 1e9:.2f} GB of OPT weights per step / {inputs.gpu_hbm_gbs:,.0f} GB/s / "
                  f"batch {inputs.caption_batch_size})")
    source = "--rate" if override else (f"{cost['model_id']}: {cost['flops'] / 1e9:,.1f} GFLOPs/"
                                        f"{'clip' if inputs.video else 'image'} "
                                        f"({cost['how']}){decode} at {inputs.mfu:.0%} of {inputs.gpu_tflops:g} TFLOPs")
    if cost.get("fp32_flops") and not override:
        source += (f"; {cost['fp32_flops'] / 1e9:,.1f} GFLOPs of it (the `wo` projections, which transformers keeps "
                   f"in float32 for T5) at {inputs.mfu:.0%} of {inputs.gpu_fp32_tflops:g} TFLOPs FP32 "
                   + ("(TF32 off, PyTorch's default; --gpu-fp32-tflops 156 plans TF32)"
                      if inputs.gpu_fp32_tflops == A100["fp32_tflops"] else "(--gpu-fp32-tflops)"))
    gpu_h = inputs.images / rate / 3600
    core_h = inputs.images * (video_preprocess(inputs, stage)[0] if inputs.video else PREPROCESS_CPU[stage][0]) / 3600
    # each GPU's model is fed by its own loader threads, on the cores of its node
    feeders = min(inputs.loader_threads, inputs.total_cpus / inputs.gpus)
    gpu_wall, cpu_wall = gpu_h / inputs.gpus, core_h / (feeders * inputs.gpus)
    bound = "GPU" if gpu_wall >= cpu_wall else f"decoding ({feeders:g} loader threads per GPU)"
    return StageRow(stage, "GPU", partitions, rate, "images/s per GPU", source, gpu_h, core_h,
                    max(gpu_wall, cpu_wall), stage, bound=bound)


def video_preprocess(inputs: PlanInputs, stage: str) -> tuple[float, str]:
    """CPU seconds a clip ahead of a GPU stage with media: video: decoding what the model sees of the stored clip
    (every frame for the VAE, the first frame or the whole clip for keyframes), then the model's preprocessing;
    decoding scaled by pixels and frames from the 17 x 256 x 256 figures (assumed)."""
    scale = (inputs.image_size / 256) ** 2
    clip = VIDEO_PREPROCESS["decode_clip"][0] * scale * inputs.num_frames / 17
    if stage == "latents":
        vae = VIDEO_PREPROCESS["vae_preprocess"][0] * scale * inputs.num_frames / 17
        return clip + vae, f"decode_clip {clip * 1e3:.1f} ms + VideoLatentEncoder.preprocess {vae * 1e3:.1f} ms"
    if stage in ("dinov2_embeddings", "clip_image_embeddings"):
        keyframes = inputs.embed_frames == "keyframes"
        decode = clip if keyframes else VIDEO_PREPROCESS["first_frame"][0] * scale
        processor = {"dinov2_embeddings": 2.24e-3, "clip_image_embeddings": 3.3e-3}[stage]  # PREPROCESS_CPU's
        frames = 3 if keyframes else 1
        return decode + frames * processor, (f"{'decode_keyframes' if keyframes else 'decode_first_frames'} "
                                             f"{decode * 1e3:.1f} ms + the processor {processor * 1e3:.2f} ms"
                                             + (" x 3" if keyframes else ""))
    return 0.0, "tokenising a caption: not measured; left out"


def global_stage(inputs: PlanInputs, stage: str, written: dict[str, float]) -> StageRow:
    """A step over all partitions at once, in one process: its measured wall time, scaled to N."""
    n, figure, override = inputs.images, CPU_FIGURES[stage], inputs.rates.get(stage)
    if override:
        seconds = n / override
    elif stage == "duplicate search":  # a clip carries three pHashes (first, middle, last frame)
        seconds = duplicate_search_seconds(3 * n if inputs.video else n)
    elif "seconds_per_million" in figure:
        seconds = figure["seconds_per_million"] * n / 1e6
    elif stage == "expert_shards":
        seconds = (written["expert_shards"] + written["heldout"]) / figure["bytes_per_s"]
    else:
        seconds = written["router_pairs"] / figure["bytes_per_s"]
    return StageRow(stage, "one process", "fan-in", n / seconds, "images/s (1 process)",
                    "--rate" if override else figure["source"], 0.0, seconds / 3600, seconds / 3600,
                    "filtered_images (rejected rows)" if stage == "duplicate search" else stage,
                    bound="--rate" if override else "measured, 1 process")


def assumptions(inputs: PlanInputs, held: int) -> list[tuple[str, str, str]]:
    """(what, value, where it comes from) for every figure the stage rows do not cite themselves."""
    rows = [
        ("GPU", f"{inputs.gpu_name}: {inputs.gpu_tflops:g} TFLOPs fp16, {inputs.gpu_hbm_gbs:,.0f} GB/s",
         A100["source"] if inputs.gpu_tflops == A100["tflops"] else "--gpu-tflops / --gpu-hbm-gbs"),
        ("MFU", f"{inputs.mfu:.0%}", ("assumed for batched fp16 inference (--mfu); BLIP-2 decoding is bounded by "
                                      "weight reads instead (roofline)")),
        ("CPU cores", (f"{inputs.total_cpus:,} for ingest, filtering and decoding ahead of the GPUs "
                       f"({inputs.cpus_per_gpu} per GPU unless --cpus)"),
         "8 x A100 nodes carry 96 vCPUs (AWS p4d.24xlarge, GCP a2-highgpu-8g)"),
        *bytes_assumptions(inputs),
        ("scores.parquet row", (f"{SCORES_ROW_BYTES} B (quality_scores; its two MLP heads' compute is not "
                                "planned: ~2.3 MFLOPs an image)"), SCORES_BYTES_SOURCE),
        ("text", ", ".join(f"{k} {v} B" for k, v in TEXT_BYTES.items()), "assumed (no LAION rows here)"),
        ("held out", f"{held:,} {'clips' if inputs.video else 'images'}",
         f"min(heldout_fraction {inputs.heldout_fraction} x N, heldout_max {inputs.heldout_max:,})"),
        feeding_assumption(inputs),
        ("wall time", ("serial: stages one after another; overlapped: ingest and filtering of later partitions "
                       "beside the GPU stages of earlier ones, then the global steps"), "the stage rows"),
    ]
    return rows + [("note", note, "settings") for note in inputs.notes]


def feeding_assumption(inputs: PlanInputs) -> tuple[str, str, str]:
    """The CPU work ahead of each GPU stage, per image or per clip, and where the figures come from."""
    if inputs.video:
        return ("GPU feeding", "; ".join(f"{k}: {video_preprocess(inputs, k)[1]}" for k in VIDEO_GPU_STAGES),
                VIDEO_PREPROCESS_SOURCE + "; " + "; ".join(v[1] for v in VIDEO_PREPROCESS.values()))
    return "GPU feeding", "; ".join(f"{k}: {v[1]}" for k, v in PREPROCESS_CPU.items()), PREPROCESS_SOURCE


def bytes_assumptions(inputs: PlanInputs) -> list[tuple[str, str, str]]:
    """The original and stored bytes: images' measured JPEGs, or clips' assumed sources and measured mp4s."""
    if not inputs.video:
        return [("original image", f"{inputs.raw_bytes:,} B", RAW_BYTES_SOURCE),
                ("stored crop", f"{crop_bytes(inputs):,} B at {inputs.image_size} px", CROP_BYTES_SOURCE)]
    return [("source video", f"{inputs.raw_video_bytes:,} B", VIDEO_FIGURES["source video"][1]),
            ("stored clip", f"{crop_bytes(inputs):,} B at {inputs.num_frames} x {inputs.image_size} px",
             VIDEO_FIGURES["stored clip"][1]),
            ("kept.parquet clip columns", f"{VIDEO_FIGURES['kept columns'][0]:g} B", VIDEO_FIGURES["kept columns"][1]),
            ("clip", (f"{inputs.num_frames} frames at {inputs.fps:g} fps, {inputs.image_size} px; T5 padded to "
                      f"{inputs.t5_tokens} tokens; DINOv2 and CLIP image on "
                      f"{'3 keyframes' if inputs.embed_frames == 'keyframes' else 'the first frame'}"), "settings"),
            ("video models", ", ".join(f"{role}: {model_id}" for role, (model_id, _) in inputs.video_configs.items()),
             ("lib/plan/flops.PARIS_VIDEO_CONFIGS (class defaults and the published T5-v1.1-XXL config; not read from the "
              "hub here)"))]


# --- from the settings file ------------------------------------------------------------------------------------

def read_config(folder: str | Path) -> dict:
    """A local model folder's config.json (plus the DINOv2 processor's crop size when it is there)."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    processor = folder / "preprocessor_config.json"
    if processor.exists():
        crop = json.loads(processor.read_text()).get("crop_size")
        if isinstance(crop, dict):
            config["crop_size"] = crop.get("height", 224)
    return config


def role_config(settings: Settings, role: str, ids: dict[str, str] = PARIS_IDS) -> tuple[str, dict, bool]:
    """(model id, config, whether a paris model stands in for a tiny one) for a role: an override the plan knows
    or a local folder, else the paris profile's model (the tiny profile's models have no throughput worth
    planning, so the paris ones stand in for them)."""
    override = getattr(settings.models, f"{role}_id")
    if override:
        if override in PARIS_CONFIGS:
            return override, PARIS_CONFIGS[override], False
        local = Path(settings.resolve(override))
        if (local / "config.json").exists():
            return override, read_config(local), False
        raise ValueError(f"models.{role}_id {override!r}: no config known to the plan and no local "
                         f"config.json; plan with the default and pass --rate for its stage")
    return ids[role], PARIS_CONFIGS[ids[role]], settings.models.profile == "tiny"


def inputs_from_settings(settings: Settings, images: int, **overrides) -> PlanInputs:
    """PlanInputs shaped by the settings file: image size, captions on or off, the models, K, shard settings,
    the held-out split, batch sizes, and with media: video the clip (fps, num_frames, embed_frames, include_mp4)
    and the video models; `overrides` (gpus, mfu, rates ...) as given on the command line."""
    configs, stand_ins, video = {}, [], settings.media == "video"
    unused = ("latent_encoder", "captioner") if video else ()  # clips: the video VAE; alt text, never BLIP-2
    for role in PARIS_IDS:
        model_id, config, stand_in = role_config(settings, role)
        configs[role] = (model_id, config)
        if stand_in and role not in unused and (role != "captioner" or settings.captions.source == "blip2"):
            stand_ins.append(model_id)
    video_fields = {}
    if video:
        video_configs = {}
        for role in PARIS_VIDEO_IDS:
            model_id, config, stand_in = role_config(settings, role, PARIS_VIDEO_IDS)
            video_configs[role] = (model_id, config)
            stand_ins += [model_id] if stand_in else []
        video_fields = {"media": "video", "num_frames": settings.video.num_frames, "fps": settings.video.fps,
                        "embed_frames": settings.video.embed_frames, "include_mp4": settings.shards.include_mp4,
                        "video_configs": video_configs}
    notes = [(f"models.profile is tiny (random weights, no throughput worth planning): planned with the paris "
              f"profile's {', '.join(stand_ins)}")] if stand_ins else []
    if "partition_size" not in overrides and settings.partitions.size:
        overrides["partition_size"] = settings.partitions.size
    s = settings.shards
    return PlanInputs(images=images, configs=configs, image_size=settings.filter.image_size,
                      captions_blip2=settings.captions.source == "blip2",
                      max_new_tokens=settings.captions.max_new_tokens,
                      caption_batch_size=settings.models.caption_batch_size, k=settings.clustering.k,
                      loader_threads=settings.models.loader_threads,
                      include_clip_tokens=s.include_clip_tokens, include_jpg=s.include_jpg,
                      max_samples_per_shard=s.max_samples_per_shard, max_shard_bytes=s.max_shard_bytes,
                      heldout_fraction=s.heldout_fraction, heldout_max=settings.heldout_max, notes=tuple(notes),
                      **video_fields, **overrides)
