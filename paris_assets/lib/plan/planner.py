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
from pathlib import Path

from .assets import crop_bytes, plan_assets, shard_sample, tar_file_bytes, tar_member_bytes
from .figures import (
    A100,
    CPU_FIGURES,
    CPUS_PER_GPU,
    CROP_BYTES_SOURCE,
    CROP_JPEG_BYTES_256,
    DEFAULT_MFU,
    GPU_STAGES,
    ID_BYTES,
    PARTITION_SIZE,
    PER_IMAGE_CPU,
    PREPROCESS_CPU,
    PREPROCESS_SOURCE,
    RAW_BYTES_SOURCE,
    RAW_JPEG_BYTES,
    REPORT_BYTES,
    ROLE_OF,
    SCORES_BYTES_SOURCE,
    SCORES_ROW_BYTES,
    STAGES,
    STORED_CLIP_BYTES_256,
    TABLE_ROW_BYTES,
    TEXT_BYTES,
    VIDEO_FIGURES,
    VIDEO_GPU_STAGES,
    VIDEO_PREPROCESS,
    VIDEO_PREPROCESS_SOURCE,
    VIDEO_ROLE_OF,
    VIDEO_STAGES,
)
from .inputs import VIDEO_INPUTS, AssetRow, Plan, PlanInputs, StageRow
from .stages import cpu_stage, duplicate_search_seconds, global_stage, gpu_stage, model_costs, video_preprocess

# the names this module offered before the figures, the rows, the cost and storage models had their own modules
__all__ = [
    "A100", "CPU_FIGURES", "CPUS_PER_GPU", "CROP_BYTES_SOURCE", "CROP_JPEG_BYTES_256", "DEFAULT_MFU", "GPU_STAGES",
    "ID_BYTES", "PARTITION_SIZE", "PER_IMAGE_CPU", "PREPROCESS_CPU", "PREPROCESS_SOURCE", "RAW_BYTES_SOURCE",
    "RAW_JPEG_BYTES", "REPORT_BYTES", "ROLE_OF", "SCORES_BYTES_SOURCE", "SCORES_ROW_BYTES", "STAGES",
    "STORED_CLIP_BYTES_256", "TABLE_ROW_BYTES", "TEXT_BYTES", "VIDEO_FIGURES", "VIDEO_GPU_STAGES", "VIDEO_INPUTS",
    "VIDEO_PREPROCESS", "VIDEO_PREPROCESS_SOURCE", "VIDEO_ROLE_OF", "VIDEO_STAGES", "AssetRow", "Plan", "PlanInputs",
    "StageRow", "assumptions", "bytes_assumptions", "cpu_stage", "crop_bytes", "duplicate_search_seconds",
    "feeding_assumption", "global_stage", "gpu_stage", "make_plan", "model_costs", "plan_assets", "read_config",
    "shard_sample", "tar_file_bytes", "tar_member_bytes", "video_preprocess",
]


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


# --- a local model folder (the CLI reads the settings file: paris_assets/plan_settings.py) ---------------------

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
