"""Plan a run past this machine: work, storage, partitions and wall time per stage (lib/plan/planner.py says how).

    python -m paris_assets.plan --images 11000000 --gpus 64 [--config paris.yaml] [--partition-size 100000]
        [--cpus N | --cpus-per-gpu 12] [--gpu-tflops 312] [--gpu-hbm-gbs 2039] [--gpu-fp32-tflops 19.5]
        [--mfu 0.35] [--write-gbs 5]
        [--rate latents=900 --rate filtered_images=250 ...] [--json]

The settings file (PARIS_CONFIG or paris.yaml, or --config) decides the image size, captions (BLIP-2 or alt
text), the models, K and the shard settings; with `media: video` (e.g. PARIS_CONFIG=paris-video.yaml) it plans
clips (--images then counts clips): T5-XXL, the HunyuanVideo VAE on num_frames x S x S, the clip filter. `--rate stage=images_per_s` replaces a stage's default: images/s per
GPU for the model stages, per core for ingest and filtered_images, of the one process for the global steps.
"""

from __future__ import annotations

import argparse
import json
import sys

from tabulate import tabulate

from .lib.plan.planner import (
    A100,
    CPUS_PER_GPU,
    DEFAULT_MFU,
    PARTITION_SIZE,
    STAGES,
    VIDEO_STAGES,
    Plan,
    make_plan,
)
from .plan_settings import inputs_from_settings
from .settings import SettingsError, load_settings


def parse_rate(text: str) -> tuple[str, float]:
    stage, sep, value = text.partition("=")
    if not sep or stage not in STAGES + VIDEO_STAGES:
        raise argparse.ArgumentTypeError(f"expected STAGE=IMAGES_PER_S with STAGE one of: {', '.join(STAGES)} "
                                         f"(media: video adds t5_tokens)")
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the rate must be a number of images per second") from None
    if rate <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the rate must be positive")
    return stage, rate


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m paris_assets.plan", description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, required=True, help="images through every stage (kept images); clips "
                   "with media: video")
    p.add_argument("--gpus", type=int, default=8, help="GPUs for the model stages (default 8)")
    p.add_argument("--cpus", type=int, help="CPU cores in all: ingest, filtering, decoding for the GPUs "
                   "(default gpus x cpus-per-gpu)")
    p.add_argument("--cpus-per-gpu", type=int, default=CPUS_PER_GPU, help=f"default {CPUS_PER_GPU} (96 per 8-GPU node)")
    p.add_argument("--partition-size", type=int, help=f"images per partition (default {PARTITION_SIZE:,})")
    p.add_argument("--gpu-name", default=A100["name"])
    p.add_argument("--gpu-tflops", type=float, default=A100["tflops"], help="peak fp16 TFLOPs (default A100: 312)")
    p.add_argument("--gpu-hbm-gbs", type=float, default=A100["hbm_gbs"], help="HBM GB/s (default A100 80GB: 2039)")
    p.add_argument("--gpu-fp32-tflops", type=float, default=A100["fp32_tflops"], help="FP32 TFLOPs for T5's float32 "
                   "products, media: video (default A100 without TF32: 19.5; with TF32 on: 156)")
    p.add_argument("--write-gbs", type=float, help="aggregate write bandwidth to data_dir in GB/s (default: not "
                   "modelled); a stage's wall is then at least what it writes / this")
    p.add_argument("--mfu", type=float, default=DEFAULT_MFU, help=f"achieved share of peak (default {DEFAULT_MFU})")
    p.add_argument("--rate", type=parse_rate, action="append", default=[], metavar="STAGE=IMAGES_PER_S",
                   help="images (clips) per second for a stage")
    p.add_argument("--config", help="settings file (default: $PARIS_CONFIG or paris.yaml)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    return p


def hours(h: float) -> str:
    if h == 0:
        return "-"
    if h < 1 / 60:
        return f"{h * 3600:.0f} s"
    if h < 1:
        return f"{h * 60:.1f} min"
    return f"{h:,.1f} h"


def size(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"


def rate(value: float, unit: str, video: bool) -> str:
    """A stage's rate; clips' slow stages (a few clips/s per GPU or core) with a decimal."""
    digits = 1 if video and value < 100 else 0
    return f"{value:,.{digits}f} {unit.replace('images/s', '/s').replace('clips/s', '/s')}"


def render(plan: Plan) -> str:
    i = plan.inputs
    items = "clips" if i.video else "images"
    head = (f"Plan: {i.images:,} {items}, {i.gpus} x {i.gpu_name} ({i.gpu_tflops:g} TFLOPs fp16 at {i.mfu:.0%} MFU), "
            f"{i.total_cpus:,} CPU cores, {plan.partitions:,} partitions of {i.partition_size:,} {items}, "
            f"image_size {i.image_size}, captions {'BLIP-2' if i.captions_blip2 and not i.video else 'alt text'}, K={i.k}")
    if i.video:
        head += (f", media: video ({i.num_frames} frames at {i.fps:g} fps; T5 {i.t5_tokens} tokens; image models on "
                 f"{'3 keyframes' if i.embed_frames == 'keyframes' else 'the first frame'})")
    written = {a.asset: size(a.total_bytes) for a in plan.assets}
    stage_rows = [[s.stage, s.runs_on, f"{s.partitions:,}" if isinstance(s.partitions, int) else s.partitions,
                   rate(s.rate, s.rate_unit, i.video) if s.rate else "-", hours(s.gpu_hours),
                   hours(s.core_hours), (">= " if s.wall_is_lower_bound else "") + hours(s.wall_hours), s.bound or "-",
                   f"{s.partition_seconds:,.1f} s" if s.partition_seconds else "-", written.get(s.writes, "-")]
                  for s in plan.stages]
    totals = plan.as_dict()["totals"]
    stage_rows.append(["total", "", "", "", hours(totals["gpu_hours"]), hours(totals["core_hours"]),
                       hours(plan.wall_hours_serial), f"overlapped: {hours(plan.wall_hours_overlapped)}", "",
                       size(totals["storage_bytes"])])
    stages = tabulate(stage_rows, headers=["stage", "runs on", "partitions", f"rate ({items})", "GPU-hours",
                                           "core-hours", "wall", "bound by", "per partition", "writes"],
                      tablefmt="github", disable_numparse=True)
    asset_rows = [[a.asset, f"{a.rows:,}", f"{a.bytes_per_row:,.0f}", size(a.total_bytes), a.what] for a in plan.assets]
    assets = tabulate(asset_rows, headers=["asset", "rows", "bytes/row", "total", "what"], tablefmt="github",
                      disable_numparse=True)
    sources = "\n".join(f"- {s.stage}: {s.rate_source}" for s in plan.stages)
    assumptions = "\n".join(f"- {name}: {value} ({source})" for name, value, source in plan.assumptions)
    shards = (f"Shards: <= {plan.shards['samples_per_shard']:,} samples each (shards.max_samples_per_shard / "
              f"max_shard_bytes), at most {plan.shards['expert_shards_at_most']:,} expert shards and "
              f"{plan.shards['heldout_shards']:,} held-out shards.")
    return "\n\n".join([head, stages, assets, shards, "Where each rate comes from:\n" + sources,
                        "Assumptions:\n" + assumptions])


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    overrides = {"gpus": args.gpus, "cpus": args.cpus, "cpus_per_gpu": args.cpus_per_gpu, "gpu_name": args.gpu_name,
                 "gpu_tflops": args.gpu_tflops, "gpu_hbm_gbs": args.gpu_hbm_gbs, "mfu": args.mfu,
                 "write_gbs": args.write_gbs, "rates": dict(args.rate)}
    if args.partition_size is not None:
        overrides["partition_size"] = args.partition_size
    if args.gpu_fp32_tflops != A100["fp32_tflops"]:
        overrides["gpu_fp32_tflops"] = args.gpu_fp32_tflops
    try:
        plan = make_plan(inputs_from_settings(settings, args.images, **overrides))
    except ValueError as exc:
        print(f"plan: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(plan.as_dict(), indent=2, default=str) if args.json else render(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
