"""The run plan (lib/plan/planner.py, `python -m paris_assets.plan`): FLOPs against torch's own counter on the real configs,
bytes per image against what the real code writes, scaling with GPUs, partitions, the settings, the CLI."""

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from paris_assets.lib.plan import flops as F
from paris_assets.lib.plan import planner as P
from paris_assets.lib.quality.signals import scores_table
from paris_assets.lib.outputs.shards import ShardSource, write_router_arrays, write_shards
from paris_assets.models.clip_image_encoder import ClipImageEncoder
from paris_assets.models.common import ModelRef
from paris_assets.models.image_embedder import ImageEmbedder
from paris_assets.models.latent_encoder import LatentEncoder
from paris_assets.models.profiles import expected_shapes
from paris_assets.models.text_encoder import TextEncoder
from paris_assets.models.tiny import ensure_tiny_models
from paris_assets.plan_settings import inputs_from_settings
from paris_assets.settings import PROJECT_ROOT, parse_settings

N = 11_000_000
# CLIP ViT-L/14's image tower by hand, from the published architecture (not from PARIS_CONFIGS): a 14 x 14 x 3 -> 1024
# patch conv at 16 x 16 positions; 24 layers over 257 tokens of width 1024 (q, k, v, out 1024 x 1024 and an MLP
# 1024 -> 4096 -> 1024: 2 FLOPs a multiply-add per token, plus q.k and attention x v: 2 x 2 x 257 x 257 x 1024);
# the 1024 -> 768 projection of the CLS state.
CLIP_IMAGE_FLOPS = (2 * (14 * 14 * 3) * 1024 * 256
                    + 24 * (2 * 257 * (4 * 1024 * 1024 + 2 * 1024 * 4096) + 2 * 2 * 257 * 257 * 1024)
                    + 2 * 1024 * 768)  # = 162,025,537,536


def counted(model, **inputs) -> float:
    if isinstance(model, torch.nn.Module):
        model.requires_grad_(False)  # BLIP-2's query tokens trip FlopCounterMode's module tracker otherwise
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(**inputs)
    return float(counter.get_total_flops())


# --- FLOPs: the plan's formulas against FlopCounterMode on the real architectures (meta tensors, no weights) ---

@pytest.mark.parametrize("model_id", ["facebook/dinov2-large", "facebook/dinov2-base"])
def test_dinov2_flops_equal_torch_count(model_id):
    from transformers import Dinov2Config, Dinov2Model

    c = F.PARIS_CONFIGS[model_id]
    with torch.device("meta"):
        model = Dinov2Model(Dinov2Config(hidden_size=c["hidden_size"], num_hidden_layers=c["num_hidden_layers"],
                                         num_attention_heads=c["num_attention_heads"], mlp_ratio=c["mlp_ratio"],
                                         patch_size=c["patch_size"], image_size=518))
        torch_flops = counted(model, pixel_values=torch.empty(1, 3, c["crop_size"], c["crop_size"]))
    assert F.dinov2_cost(c)["flops"] == pytest.approx(torch_flops, rel=1e-9)


def test_clip_text_flops_equal_torch_count():
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    c = F.PARIS_CONFIGS["openai/clip-vit-large-patch14"]
    with torch.device("meta"):
        model = CLIPTextModelWithProjection(CLIPTextConfig(**c["text_config"], projection_dim=c["projection_dim"]))
        torch_flops = counted(model, input_ids=torch.zeros(1, 77, dtype=torch.long))
    assert F.clip_text_cost(c)["flops"] == pytest.approx(torch_flops, rel=1e-9)


def test_clip_image_flops_equal_the_hand_count_and_torch_count():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    c = F.PARIS_CONFIGS["openai/clip-vit-large-patch14"]
    cost = F.clip_image_cost(c)
    assert cost["flops"] == CLIP_IMAGE_FLOPS == 162_025_537_536
    assert cost["dim"] == 768
    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**c["vision_config"]))
        torch_flops = counted(model, pixel_values=torch.empty(1, 3, 224, 224))
    assert cost["flops"] == pytest.approx(torch_flops, rel=1e-9)


def test_clip_image_cost_refuses_a_checkpoint_without_an_image_tower():
    text_only = {k: v for k, v in F.PARIS_CONFIGS["openai/clip-vit-large-patch14"].items() if k != "vision_config"}
    with pytest.raises(ValueError, match="no vision_config"):
        F.clip_image_cost(text_only)


@pytest.mark.parametrize("image_size", [256, 512])
def test_vae_encoder_flops_equal_torch_count(image_size):
    from diffusers import AutoencoderKL

    c = F.PARIS_CONFIGS["stabilityai/sd-vae-ft-mse"]
    with torch.device("meta"):
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=tuple(c["block_out_channels"]),
                            layers_per_block=c["layers_per_block"], latent_channels=c["latent_channels"],
                            norm_num_groups=32, sample_size=256)
        torch_flops = counted(vae.encode, x=torch.empty(1, 3, image_size, image_size))
    cost = F.vae_encoder_cost(c, image_size)
    assert cost["flops"] == pytest.approx(torch_flops, rel=1e-9)
    assert cost["latent_shape"] == (4, image_size // 8, image_size // 8)


def test_blip2_compute_bound_part_equals_torch_count():
    """The vision tower, the Q-Former, the projection and OPT over the 32 query tokens + BOS, each counted on its
    own (the whole forward asks a meta tensor for .item()); OPT's count includes projecting those 33 positions to
    the vocabulary, which the plan counts per generated token instead."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, OPTConfig

    c = F.PARIS_CONFIGS["Salesforce/blip2-opt-2.7b"]
    text = OPTConfig(**c["text_config"], num_attention_heads=32)
    config = Blip2Config(vision_config={**c["vision_config"], "num_attention_heads": 16},
                         qformer_config={**c["qformer_config"], "num_attention_heads": 12},
                         text_config=text.to_dict(), num_query_tokens=c["num_query_tokens"])
    with torch.device("meta"):
        model = Blip2ForConditionalGeneration(config).requires_grad_(False)
        torch_flops = (counted(model.vision_model, pixel_values=torch.empty(1, 3, 224, 224))
                       + counted(model.qformer, query_embeds=torch.empty(1, 32, 768),
                                 encoder_hidden_states=torch.empty(1, 257, 1408))
                       + counted(model.language_projection, input=torch.empty(1, 32, 768))
                       + counted(model.language_model, inputs_embeds=torch.empty(1, 33, 2560)))
    cost = F.blip2_cost(c, new_tokens=30)
    lm_head = 33 * 2 * 2560 * 50272
    assert cost["flops"] == pytest.approx(torch_flops - lm_head, rel=1e-3)


# --- bytes per image: the plan against what the real wrappers and writers produce (tiny models) ---------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan-tiny")
    folders = ensure_tiny_models(root)
    configs = {role: (folder, P.read_config(folder)) for role, folder in folders.items()}
    inputs = P.PlanInputs(images=1000, configs=configs, captions_blip2=False)
    return root, folders, P.make_plan(inputs)


def test_array_bytes_per_image_equal_the_models_outputs(tiny):
    root, folders, plan = tiny
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
    dinov2 = ImageEmbedder(ModelRef(folders["image_embedder"]), "cpu").load()(images)
    latents = LatentEncoder(ModelRef(folders["latent_encoder"]), "cpu").load()(images)
    tokens, pooled = TextEncoder(ModelRef(folders["text_encoder"]), "cpu").load()(["a red sky", "sea", "a tree"])
    clip_image = ClipImageEncoder(ModelRef(folders["text_encoder"]), "cpu").load()(images)  # the same checkpoint
    ids = np.array(["0" * 16] * 3, dtype=np.str_)
    per = lambda *arrays: sum(a.nbytes for a in arrays) / 3
    assert plan.asset("dinov2_embeddings").bytes_per_row == per(dinov2, ids)
    assert plan.asset("latents").bytes_per_row == per(latents, ids)
    assert plan.asset("clip_embeddings").bytes_per_row == per(tokens, pooled, ids)
    assert plan.asset("clip_image_embeddings").bytes_per_row == per(clip_image, ids)
    # the shapes the plan derived from the configs are the ones the project's own check expects
    settings = parse_settings({"data_dir": str(root), "models": {"profile": "tiny"}}, base_dir=root)
    shapes = expected_shapes(settings)
    costs = plan.models
    assert shapes["dinov2"] == (costs["dinov2_embeddings"]["dim"],) == dinov2.shape[1:]
    assert shapes["latents"] == costs["latents"]["latent_shape"] == latents.shape[1:]
    assert shapes["clip_tokens"] == (77, costs["clip_embeddings"]["width"]) == tokens.shape[1:]
    assert shapes["clip_pooled"] == (costs["clip_embeddings"]["projection"],) == pooled.shape[1:]
    assert shapes["clip_image"] == (costs["clip_image_embeddings"]["dim"],) == clip_image.shape[1:]


def _source(plan: P.Plan, rows: int, with_tokens: bool = True) -> ShardSource:
    clip, latent, dim = plan.models["clip_embeddings"], plan.models["latents"]["latent_shape"], \
        plan.models["dinov2_embeddings"]["dim"]
    rng = np.random.default_rng(1)
    kept = pd.DataFrame({"image_id": [f"{i:016x}" for i in range(rows)], "url": ["h" * P.TEXT_BYTES["url"]] * rows,
                         "alt_text": ["x" * P.TEXT_BYTES["alt_text"]] * rows, "aesthetic": 5.25, "punsafe": 0.5,
                         "original_width": 640, "original_height": 480, "phash": "f" * 16})
    src = ShardSource(kept=kept, captions=["y" * P.TEXT_BYTES["caption"]] * rows,
                      labels=rng.integers(0, 8, rows).astype(np.int32), distances=rng.random(rows).astype(np.float32),
                      latents=rng.standard_normal((rows, *latent)).astype(np.float16),
                      pooled=rng.standard_normal((rows, clip["projection"])).astype(np.float16),
                      tokens=rng.standard_normal((rows, 77, clip["width"])).astype(np.float16) if with_tokens else None)
    src.dinov2 = rng.standard_normal((rows, dim)).astype(np.float32)
    return src


def test_shard_bytes_equal_the_written_tar(tiny, tmp_path):
    _, _, plan = tiny
    rows = 7
    shards = write_shards(_source(plan, rows), np.arange(rows), tmp_path / "cluster_0", 1000, 1 << 30)
    (shard,) = shards
    per_sample = plan.asset("expert_shards").bytes_per_row
    assert shard["bytes"] == (tmp_path / "cluster_0" / "shard-000000.tar").stat().st_size
    assert shard["bytes"] == math.ceil((per_sample * rows + 1024) / 10240) * 10240


def test_router_bytes_equal_the_written_arrays(tiny, tmp_path):
    _, _, plan = tiny
    rows = 9
    src = _source(plan, rows)
    write_router_arrays(tmp_path, np.arange(rows), src, src.dinov2)
    data = sum(np.load(f, mmap_mode="r").nbytes for f in tmp_path.rglob("*.npy"))  # .npy files and chunks
    assert plan.asset("router_pairs").bytes_per_row * rows == data


def test_measured_scores_row_bytes_hold(tmp_path):
    """quality_scores' row: scores_table over one partition's 100k rows, written as tables_io writes it."""
    n, rng = 100_000, np.random.default_rng(0)
    kept = pd.DataFrame({"image_id": [hashlib.sha1(f"https://example.com/{i}.jpg".encode()).hexdigest()[:16]
                                      for i in range(n)],
                         "aesthetic": rng.normal(5.5, 0.8, n), "punsafe": rng.beta(0.5, 20, n)})
    kept.loc[rng.random(n) < 0.5, ["aesthetic", "punsafe"]] = np.nan  # half carried, half computed
    computed = {"aesthetic": rng.normal(5.5, 0.8, n).astype(np.float32),
                "punsafe": rng.beta(0.5, 20, n).astype(np.float32)}
    scores_table(kept, computed).to_parquet(tmp_path / "scores.parquet", index=False)
    assert (tmp_path / "scores.parquet").stat().st_size / n == pytest.approx(P.SCORES_ROW_BYTES, rel=0.05)


def test_measured_jpeg_sizes_hold_on_the_bench_inputs():
    """The crop and original sizes were measured on the 54 cached photographs; scikit-learn's two, through the
    same laion_like + process_image, land near them (measured: +6 % originals, +23 % crops at 2,000 images)."""
    from paris_assets.bench.photos import laion_like, load_photo, sklearn_photos
    from paris_assets.lib.images.units import FilterParams, process_image

    blobs = laion_like([load_photo(p) for p in sklearn_photos()], 200, seed=0)
    crops = [process_image(b, FilterParams())[1] for b in blobs]
    assert np.mean([len(b) for b in blobs]) == pytest.approx(P.RAW_JPEG_BYTES, rel=0.15)
    assert np.mean([len(c) for c in crops if c]) == pytest.approx(P.CROP_JPEG_BYTES_256, rel=0.35)


# --- the plan's arithmetic ------------------------------------------------------------------------------------

def test_gpu_stages_scale_with_one_over_gpus_and_global_steps_do_not():
    small, large = (P.make_plan(P.PlanInputs(images=N, gpus=g, loader_threads=8)) for g in (16, 64))
    for stage in P.GPU_STAGES:
        assert small.stage(stage).gpu_hours == pytest.approx(large.stage(stage).gpu_hours)
        assert small.stage(stage).wall_hours == pytest.approx(4 * large.stage(stage).wall_hours)
    for stage in ("duplicate search", "cluster_labels", "cluster_report", "expert_shards", "router_pairs"):
        assert small.stage(stage).wall_hours == large.stage(stage).wall_hours > 0


def test_decoding_ahead_of_the_gpu_bounds_the_wall_when_too_few_threads_feed_it():
    """latents: 5.4 ms of CPU per image ahead of a 400 images/s GPU needs ~2.2 loader threads per GPU."""
    fed = P.make_plan(P.PlanInputs(images=N, gpus=64, loader_threads=4)).stage("latents")
    assert fed.bound == "GPU" and fed.wall_hours == pytest.approx(fed.gpu_hours / 64)
    two = P.make_plan(P.PlanInputs(images=N, gpus=64, loader_threads=2)).stage("latents")
    assert two.bound == "decoding (2 loader threads per GPU)"
    assert two.wall_hours == pytest.approx(two.core_hours / (2 * 64))
    assert two.wall_hours > fed.wall_hours
    starved = P.make_plan(P.PlanInputs(images=N, gpus=64, cpus=32, loader_threads=4)).stage("latents")
    assert starved.wall_hours == pytest.approx(starved.core_hours / 32)


def test_write_bandwidth_bounds_a_stage_only_when_given():
    free = P.make_plan(P.PlanInputs(images=N, gpus=64)).stage("clip_embeddings")  # no decoding: GPU-bound
    slow = P.make_plan(P.PlanInputs(images=N, gpus=64, write_gbs=2.0))
    clip = slow.stage("clip_embeddings")
    assert free.bound == "GPU" and clip.bound == "writes at 2 GB/s"
    assert clip.wall_hours == pytest.approx(slow.asset("clip_embeddings").total_bytes / 2e9 / 3600)
    assert clip.wall_hours > free.wall_hours
    baseline = P.make_plan(P.PlanInputs(images=N)).stage("expert_shards")
    assert slow.stage("expert_shards").wall_hours == baseline.wall_hours


@pytest.mark.parametrize("images,size,expected", [(11_000_000, 100_000, 110), (11_000_001, 100_000, 111),
                                                  (5, 100_000, 1), (1_000, 7, 143)])
def test_partitions_are_the_ceiling(images, size, expected):
    plan = P.make_plan(P.PlanInputs(images=images, partition_size=size))
    assert plan.partitions == expected
    assert plan.stage("latents").partitions == expected
    assert plan.stage("cluster_labels").partitions == "fan-in"


def test_storage_totals_are_bytes_per_row_times_rows():
    plan = P.make_plan(P.PlanInputs(images=N))
    assert plan.heldout == 10_000  # min(1 % of 11M, heldout_max)
    assert plan.asset("latents").total_bytes == N * (4 * 32 * 32 * 2 + 64)
    assert plan.asset("dinov2_embeddings").total_bytes == N * (1024 * 4 + 64)
    assert plan.asset("clip_embeddings").total_bytes == N * ((77 * 768 + 768) * 2 + 64)
    assert plan.asset("clip_image_embeddings").total_bytes == N * (768 * 2 + 64)
    assert plan.asset("quality_scores").total_bytes == N * P.SCORES_ROW_BYTES
    assert plan.asset("router_pairs").rows == plan.asset("expert_shards").rows == N - 10_000


def test_clip_image_embeddings_is_a_gpu_stage_the_totals_count():
    plan = P.make_plan(P.PlanInputs(images=N, gpus=64))
    row, totals = plan.stage("clip_image_embeddings"), plan.as_dict()["totals"]
    assert row.runs_on == "GPU" and row.partitions == 110
    assert row.gpu_hours == pytest.approx(N * CLIP_IMAGE_FLOPS / (312e12 * 0.35) / 3600)  # 4.5 h
    assert row.core_hours == pytest.approx(N * (1.44e-3 + 3.3e-3) / 3600)  # decoding + CLIPImageProcessor
    assert row.bound == "decoding (2 loader threads per GPU)"
    assert row.wall_hours == pytest.approx(row.core_hours / (2 * 64))
    gpu = [s for s in plan.stages if s.runs_on == "GPU"]
    others = sum(s.gpu_hours for s in gpu if s is not row)
    assert totals["gpu_hours"] == pytest.approx(others + row.gpu_hours) and row.gpu_hours > 4
    # overlapped wall: the GPU stages, this one among them, outlast ingest + filtering, then the global steps
    global_steps = sum(s.wall_hours for s in plan.stages if s.runs_on == "one process")
    assert plan.wall_hours_overlapped == pytest.approx(sum(s.wall_hours for s in gpu) + global_steps)
    stored = plan.asset("clip_image_embeddings").total_bytes + plan.asset("quality_scores").total_bytes
    assert totals["storage_bytes"] - stored == pytest.approx(
        sum(a.total_bytes for a in plan.assets if a.asset not in ("clip_image_embeddings", "quality_scores")))
    assert stored == N * (768 * 2 + 64 + P.SCORES_ROW_BYTES)


def test_duplicate_search_passes_through_the_measured_points():
    assert P.duplicate_search_seconds(100_000) == pytest.approx(0.5)
    assert P.duplicate_search_seconds(1_000_000) == pytest.approx(20.5)


def test_blip2_decoding_is_bound_by_weight_reads_until_the_batch_is_large():
    """Each decoding step reads OPT's 5.3 GB of fp16 weights once for the whole batch: below ~53 images a batch
    (A100, 35 %) the reads take longer than the arithmetic, above it the arithmetic does."""
    batches = (1, 16, 32, 64, 10**6)
    rates = [P.make_plan(P.PlanInputs(images=N, caption_batch_size=b)).stage("captions").rate for b in batches]
    assert rates[0] < rates[1] < rates[2] < rates[3]
    cost = F.blip2_cost(F.PARIS_CONFIGS["Salesforce/blip2-opt-2.7b"], 30)
    compute_only = (cost["flops"] + 30 * cost["flops_per_token"]) / (P.A100["tflops"] * 1e12 * P.DEFAULT_MFU)
    assert rates[3] == rates[4] == pytest.approx(1 / compute_only)


def test_a_rate_override_replaces_the_default_and_an_unknown_stage_is_refused():
    plan = P.make_plan(P.PlanInputs(images=1_000_000, gpus=10, rates={"latents": 1000.0}))
    assert plan.stage("latents").rate == 1000.0
    assert plan.stage("latents").gpu_hours == pytest.approx(1_000_000 / 1000 / 3600)
    with pytest.raises(ValueError, match="unknown stage"):
        P.make_plan(P.PlanInputs(images=10, rates={"latent": 1.0}))


def test_settings_shape_the_plan(tmp_path):
    base = P.make_plan(inputs_from_settings(parse_settings({"models": {"profile": "paris"}}), N, gpus=64))
    settings = parse_settings({
        "models": {"profile": "paris", "image_embedder_id": "facebook/dinov2-base"},
        "filter": {"image_size": 512}, "captions": {"source": "alt_text"}, "clustering": {"k": 16},
        "shards": {"include_clip_tokens": False}})
    plan = P.make_plan(inputs_from_settings(settings, N, gpus=64))
    assert base.stage("captions").gpu_hours > 0 and plan.stage("captions").gpu_hours == 0
    assert plan.asset("latents").bytes_per_row == 4 * 64 * 64 * 2 + 64
    assert plan.asset("dinov2_embeddings").bytes_per_row == 768 * 4 + 64
    assert plan.asset("cluster_labels").fixed_bytes == 16 * 768 * 4
    assert plan.models["dinov2_embeddings"]["model_id"] == "facebook/dinov2-base"
    assert 4 < plan.models["latents"]["flops"] / base.models["latents"]["flops"] < 4.2  # pixels x4, attention x16
    no_tokens = plan.asset("expert_shards").bytes_per_row - (base.asset("expert_shards").bytes_per_row
                                                             + 4 * 64 * 64 * 2 - 4 * 32 * 32 * 2)
    assert no_tokens == -P.tar_member_bytes(128 + 77 * 768 * 2)  # clip_tokens.npy left out, the bigger latent in
    assert not plan.inputs.notes  # the paris profile needs no stand-ins
    tiny = inputs_from_settings(parse_settings({}), N)
    assert "tiny" in tiny.notes[0] and "blip2" in tiny.notes[0]


# --- the command line -----------------------------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "paris_assets.plan", *args], capture_output=True, text=True,
                          check=False, cwd=PROJECT_ROOT, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                               "PARIS_CONFIG": str(PROJECT_ROOT / "paris.yaml")})


def test_cli_prints_every_stage_and_asset():
    result = run_cli("--images", "11000000", "--gpus", "64")
    assert result.returncode == 0, result.stderr
    rows = {line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ")}
    assert set(P.STAGES) <= rows
    assert {"raw_images", "filtered_images", "clip_image_embeddings", "quality_scores", "expert_shards", "heldout",
            "router_pairs"} <= rows
    assert "110 partitions" in result.stdout and "64 x A100" in result.stdout


def test_cli_json_parses_and_agrees_with_the_library(tmp_path):
    config = tmp_path / "paris.yaml"
    config.write_text("models: {profile: paris}\n")
    result = run_cli("--images", "11000000", "--gpus", "64", "--json", "--config", str(config),
                     "--partition-size", "250000", "--rate", "latents=900")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [s["stage"] for s in data["stages"]] == list(P.STAGES)
    assert {"clip_image_embeddings", "quality_scores"} <= {a["asset"] for a in data["assets"]}
    assert data["partitions"] == 44
    latents = next(s for s in data["stages"] if s["stage"] == "latents")
    assert latents["rate"] == 900 and latents["rate_source"] == "--rate"
    expected = P.make_plan(inputs_from_settings(parse_settings({"models": {"profile": "paris"}}), N, gpus=64,
                                                  partition_size=250_000, rates={"latents": 900.0}))
    assert data["totals"]["storage_bytes"] == pytest.approx(expected.as_dict()["totals"]["storage_bytes"])
    assert data["totals"]["gpu_hours"] == pytest.approx(expected.as_dict()["totals"]["gpu_hours"])


def test_cli_refuses_a_bad_rate():
    result = run_cli("--images", "10", "--rate", "latent=5")
    assert result.returncode == 2
    assert "STAGE=IMAGES_PER_S" in result.stderr
    result = run_cli("--images", "10", "--mfu", "35")
    assert result.returncode == 2
    assert "mfu must be in (0, 1]" in result.stderr


# --- media: video: clips instead of images --------------------------------------------------------------------

M = 1_000_000
VIDEO = {"media": "video", "models": {"profile": "paris"}}


def test_t5_xxl_flops_equal_torch_count():
    """T5-v1.1-XXL's encoder at 226 tokens, from PARIS_CONFIGS; counted without a mask (a meta tensor cannot build
    transformers' padding mask, and the mask changes no matmul: padding positions are computed all the same)."""
    from transformers import T5Config, T5EncoderModel

    c = F.PARIS_CONFIGS["THUDM/CogVideoX-2b"]
    config = T5Config(**{k: c[k] for k in ("d_model", "d_kv", "num_heads", "d_ff", "num_layers", "vocab_size",
                                           "feed_forward_proj")})
    with torch.device("meta"):
        torch_flops = counted(T5EncoderModel(config), input_ids=torch.zeros(1, 226, dtype=torch.long))
    cost = F.t5_xxl_cost(c)
    assert cost["flops"] == pytest.approx(torch_flops, rel=1e-9)
    # by hand: 24 layers x (2 x 226 x (4 x 4096^2 + 3 x 4096 x 10240) + 4 x 226^2 x 4096): 2.11 TFLOPs a caption
    assert cost["flops"] == 24 * (2 * 226 * (4 * 4096 ** 2 + 3 * 4096 * 10240) + 4 * 226 ** 2 * 4096) == 2_113_075_150_848
    assert (cost["tokens"], cost["width"]) == (226, 4096)
    assert cost["fp32_flops"] == 2 * 24 * 226 * 10240 * 4096  # `wo`, which transformers keeps in float32


@pytest.mark.parametrize("frames,size,tiling", [(17, 256, True), (33, 64, False), (9, 320, True)])
def test_video_vae_encoder_flops_equal_torch_count(frames, size, tiling):
    """AutoencoderKLHunyuanVideo.encode as diffusers runs it: 17 frames are two windows (0-16 and 12-16), 33 three;
    above 256 px the GPU wrapper's spatial tiles (4 of them at 320 px)."""
    from diffusers import AutoencoderKLHunyuanVideo

    c = F.PARIS_CONFIGS["hunyuanvideo-community/HunyuanVideo"]
    with torch.device("meta"):
        vae = AutoencoderKLHunyuanVideo(latent_channels=c["latent_channels"],
                                        block_out_channels=tuple(c["block_out_channels"]),
                                        layers_per_block=c["layers_per_block"]).requires_grad_(False)
        if tiling:
            vae.enable_tiling()
        torch_flops = counted(vae.encode, x=torch.empty(1, 3, frames, size, size))
    cost = F.video_vae_encoder_cost(c, frames, size, spatial_tiling=tiling)
    assert cost["flops"] == pytest.approx(torch_flops, rel=1e-9)
    assert cost["latent_shape"] == (16, (frames - 1) // 4 + 1, size // 8, size // 8)
    if (frames, size) == (17, 256):
        assert cost["windows"] == [17, 5] and cost["tiles"] == 1 and 13.5e12 < cost["flops"] < 13.6e12


def test_video_plan_lists_its_stages_and_totals_are_sane():
    plan = P.make_plan(inputs_from_settings(parse_settings(VIDEO), M, gpus=64))
    assert [s.stage for s in plan.stages] == list(P.VIDEO_STAGES)
    assert plan.heldout == 2048  # the video cap
    t5, latents = plan.stage("t5_tokens"), plan.stage("latents")
    # T5's float32 `wo` products (455 GFLOPs of the 2.11 TFLOPs) at the A100's 19.5 TFLOPs FP32: 22.7 h, not 5.4
    fp32 = 2 * 24 * 226 * 10240 * 4096
    assert t5.gpu_hours == pytest.approx(M * ((2_113_075_150_848 - fp32) / (312e12 * 0.35)
                                              + fp32 / (19.5e12 * 0.35)) / 3600)
    all_fp16 = P.make_plan(inputs_from_settings(parse_settings(VIDEO), M, gpus=64, gpu_fp32_tflops=312.0))
    assert all_fp16.stage("t5_tokens").gpu_hours == pytest.approx(M * 2_113_075_150_848 / (312e12 * 0.35) / 3600)
    assert t5.writes == "clip_embeddings" and plan.stage("clip_embeddings").writes == ""
    assert latents.gpu_hours == pytest.approx(M * plan.models["latents"]["flops"] / (312e12 * 0.35) / 3600)
    assert latents.gpu_hours > t5.gpu_hours > plan.stage("dinov2_embeddings").gpu_hours > 0
    # the image models see one frame a clip: the same FLOPs as one image
    image = P.make_plan(P.PlanInputs(images=M, gpus=64))
    for stage in ("dinov2_embeddings", "clip_image_embeddings", "clip_embeddings"):
        assert plan.stage(stage).gpu_hours == pytest.approx(image.stage(stage).gpu_hours)
    assert plan.stage("filtered_images").core_hours == pytest.approx(M * 0.270 / 3600)  # 270 ms CPU a real clip
    assert plan.stage("captions").runs_on == "no model"
    totals = plan.as_dict()["totals"]
    assert totals["gpu_hours"] == pytest.approx(sum(s.gpu_hours for s in plan.stages))
    assert 55 < totals["gpu_hours"] < 65  # the VAE's 34.5 h and T5's 22.7 h are most of it
    assert plan.wall_hours_overlapped <= plan.wall_hours_serial
    assert plan.asset("clip_embeddings").bytes_per_row == (77 * 768 + 768) * 2 + 64 + 226 * 4096 * 2 + 226
    assert plan.asset("latents").bytes_per_row == 16 * 5 * 32 * 32 * 2 + 64
    assert plan.asset("router_pairs").bytes_per_row == 16 * 5 * 32 * 32 * 2 + 4 + 1024 * 4 + 768 * 2 + 64
    assert plan.asset("filtered_images").bytes_per_row > P.STORED_CLIP_BYTES_256
    assert plan.asset("raw_images").bytes_per_row > 3e6
    assert 1.8e12 < plan.asset("clip_embeddings").total_bytes < 2.1e12  # T5 states: 1.85 MB a clip
    assert "t5_tokens.npy 1,851,520 B" in plan.asset("expert_shards").what
    # PlanInputs alone plans the same clips (captions_blip2 is ignored: clips keep their source text)
    direct = P.make_plan(P.PlanInputs(images=M, gpus=64, media="video", heldout_max=2048))
    assert direct.as_dict()["totals"] == pytest.approx(plan.as_dict()["totals"], rel=0.05)
    assert direct.stage("t5_tokens").gpu_hours == t5.gpu_hours and direct.stage("captions").runs_on == "no model"
    # the video fields stay out of an image plan's JSON
    assert "media" in plan.as_dict()["inputs"] and "media" not in image.as_dict()["inputs"]


def test_video_settings_shape_the_plan():
    longer = parse_settings({**VIDEO, "video": {"num_frames": 33, "embed_frames": "keyframes"},
                             "shards": {"include_mp4": True}})
    base = P.make_plan(inputs_from_settings(parse_settings(VIDEO), M))
    plan = P.make_plan(inputs_from_settings(longer, M))
    assert plan.models["latents"]["latent_shape"] == (16, 9, 32, 32)
    assert plan.models["latents"]["windows"] == [17, 17, 9]
    assert plan.stage("dinov2_embeddings").gpu_hours == pytest.approx(3 * base.stage("dinov2_embeddings").gpu_hours)
    assert "mp4" in plan.asset("expert_shards").what and "mp4" not in base.asset("expert_shards").what
    tiny = inputs_from_settings(parse_settings({"media": "video"}), M)
    assert "THUDM/CogVideoX-2b" in tiny.notes[0] and "sd-vae" not in tiny.notes[0] and "blip2" not in tiny.notes[0]
    with pytest.raises(ValueError, match="unknown stage"):
        P.make_plan(P.PlanInputs(images=10, rates={"t5_tokens": 1.0}))  # an image plan has no T5


def _video_source(plan: P.Plan, rows: int) -> ShardSource:
    from paris_assets.lib.outputs.shards import VideoFields

    src = _source(plan, rows)
    t5 = plan.models["t5_tokens"]
    rng = np.random.default_rng(2)
    for key in ("duration", "source_fps", "window_start", "window_end", "motion"):
        src.kept[key] = rng.random(rows) * 10
    src.kept["rotation"], src.kept["codec"] = 0, "h264"
    src.video = VideoFields(t5_tokens=rng.standard_normal((rows, t5["tokens"], t5["width"])).astype(np.float16),
                            t5_mask=rng.random((rows, t5["tokens"])) < 0.1, dinov2=src.dinov2, fps=8.0, num_frames=17)
    return src


def test_video_shard_bytes_equal_the_written_tar(tmp_path):
    plan = P.make_plan(inputs_from_settings(parse_settings(VIDEO), M))
    rows = 5
    (shard,) = write_shards(_video_source(plan, rows), np.arange(rows), tmp_path / "cluster_0", 1000, 1 << 30)
    per_sample = plan.asset("expert_shards").bytes_per_row
    assert shard["bytes"] == (tmp_path / "cluster_0" / "shard-000000.tar").stat().st_size
    assert shard["bytes"] == math.ceil((per_sample * rows + 1024) / 10240) * 10240


def test_measured_stored_clip_size_holds_on_dagster_world():
    """The stored clip's bytes were measured on the video demo's clips (47.9 KB); the real footage the bench uses,
    Dagster_world.mp4 (shipped in dagster-webserver), through process_video at 17 x 256 px: 41.4 KB."""
    import dagster_webserver

    from paris_assets.lib.video.decode import VideoParams, process_video

    path = next(Path(dagster_webserver.__file__).parent.rglob("Dagster_world.mp4"))
    _, mp4 = process_video(path.read_bytes(), VideoParams(image_size=256, fps=8, num_frames=17))
    assert len(mp4) == pytest.approx(P.STORED_CLIP_BYTES_256, rel=0.3)


def test_cli_prints_the_clip_plan(tmp_path):
    config = tmp_path / "video.yaml"
    config.write_text("media: video\nmodels: {profile: paris}\n")
    result = run_cli("--images", "1000000", "--gpus", "64", "--config", str(config), "--rate", "t5_tokens=100")
    assert result.returncode == 0, result.stderr
    rows = {line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ")}
    assert set(P.VIDEO_STAGES) <= rows
    assert "1,000,000 clips" in result.stdout and "media: video (17 frames at 8 fps" in result.stdout
    assert "- t5_tokens: --rate" in result.stdout and "hunyuanvideo-community/HunyuanVideo: 13,558.4 GFLOPs/clip" \
        in result.stdout
