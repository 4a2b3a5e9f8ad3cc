"""The per-stage cost model: each model's images/s per GPU from its FLOPs, and each stage's work and wall time."""

from __future__ import annotations

import math

from .figures import (
    A100,
    CPU_FIGURES,
    PREPROCESS_CPU,
    ROLE_OF,
    VIDEO_FIGURES,
    VIDEO_PREPROCESS,
    VIDEO_ROLE_OF,
)
from .flops import (
    blip2_cost,
    clip_image_cost,
    clip_text_cost,
    dinov2_cost,
    t5_xxl_cost,
    vae_encoder_cost,
    video_vae_encoder_cost,
)
from .inputs import PlanInputs, StageRow


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
