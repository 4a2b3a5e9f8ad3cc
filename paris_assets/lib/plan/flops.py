"""FLOPs per image of the paris profile's models, counted from their configs: matrix products and convolutions as
`torch.utils.flop_counter.FlopCounterMode` counts them (2 per multiply-add; norms and activations left out).
Transformers as 2 x matmul weights x tokens + 4 x tokens^2 x width per layer (the ViTs, DINOv2, CLIP's image tower
and BLIP-2's, plus their patch embedding), the VAE encoder conv by conv.
test_plan recounts each with FlopCounterMode on these very configs (meta tensors). Used by lib/plan/planner.
"""

from __future__ import annotations

import math
from typing import Any

# --- the real models' configs, as their config.json files at the pinned commits say ---------------------------
# Only the fields the plan reads. Transcribed from each repository's config.json (and the DINOv2 processor's
# preprocessor_config.json; CLIP's processor resizes the shorter side to 224 and centre-crops 224, its tower's
# image_size); the tests recount their FLOPs with torch's FlopCounterMode on these very configs.

PARIS_CONFIGS: dict[str, dict[str, Any]] = {
    "facebook/dinov2-large": {"model_type": "dinov2", "hidden_size": 1024, "num_hidden_layers": 24,
                              "num_attention_heads": 16, "mlp_ratio": 4, "patch_size": 14, "num_channels": 3,
                              "crop_size": 224},
    "facebook/dinov2-base": {"model_type": "dinov2", "hidden_size": 768, "num_hidden_layers": 12,
                             "num_attention_heads": 12, "mlp_ratio": 4, "patch_size": 14, "num_channels": 3,
                             "crop_size": 224},
    "openai/clip-vit-large-patch14": {"model_type": "clip", "projection_dim": 768, "text_config": {
        "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
        "max_position_embeddings": 77, "vocab_size": 49408}, "vision_config": {
        "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
        "image_size": 224, "patch_size": 14, "num_channels": 3, "projection_dim": 768}},
    "stabilityai/sd-vae-ft-mse": {"_class_name": "AutoencoderKL", "in_channels": 3, "latent_channels": 4,
                                  "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
                                  "mid_block_add_attention": True, "use_quant_conv": True, "scaling_factor": 0.18215},
    "Salesforce/blip2-opt-2.7b": {"model_type": "blip-2", "num_query_tokens": 32,
                                  "vision_config": {"hidden_size": 1408, "intermediate_size": 6144,
                                                    "num_hidden_layers": 39, "image_size": 224, "patch_size": 14},
                                  "qformer_config": {"hidden_size": 768, "intermediate_size": 3072,
                                                     "num_hidden_layers": 12, "cross_attention_frequency": 2,
                                                     "encoder_hidden_size": 1408},
                                  "text_config": {"hidden_size": 2560, "ffn_dim": 10240, "num_hidden_layers": 32,
                                                  "vocab_size": 50272, "word_embed_proj_dim": 2560}},
}
PARIS_IDS = {"captioner": "Salesforce/blip2-opt-2.7b", "text_encoder": "openai/clip-vit-large-patch14",
             "image_embedder": "facebook/dinov2-large", "latent_encoder": "stabilityai/sd-vae-ft-mse"}

# media: video (Paris 2.0). Neither config could be read here (no hub access, no cached copy), so:
# - HunyuanVideo's VAE: diffusers' AutoencoderKLHunyuanVideo class defaults (0.42.1), which are the values the
#   hub folder's config.json is said to hold in models/video_latent_encoder.py (16 latent channels, 8x spatial, 4x
#   temporal, scaling_factor 0.476986) and which Tencent's own VAE config repeats (block_out_channels
#   [128, 256, 512, 512], layers_per_block 2, latent_channels 16); mid-block attention on is the class default,
#   assumed. `frame_tile`/`frame_stride`/`tile`/`tile_stride` are not config but the wrapper's encode path:
#   diffusers encodes clips longer than 16 frames in 17-frame windows every 12 (framewise encoding, on by
#   default), and VideoLatentEncoder turns spatial tiling on for GPUs (256 px tiles every 192 above 256 px).
# - T5-v1.1-XXL's encoder (CogVideoX-2b's text_encoder/): the published google/t5-v1_1-xxl config (d_model 4096,
#   d_kv 64 x 64 heads, d_ff 10240 gated-GELU, 24 layers, vocab 32128), which the project's README and
#   models/t5_encoder.py give for this copy; max_length is CogVideoX's 226.
PARIS_VIDEO_CONFIGS: dict[str, dict[str, Any]] = {
    "hunyuanvideo-community/HunyuanVideo": {
        "_class_name": "AutoencoderKLHunyuanVideo", "in_channels": 3, "latent_channels": 16,
        "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "mid_block_add_attention": True,
        "spatial_compression_ratio": 8, "temporal_compression_ratio": 4, "scaling_factor": 0.476986,
        "frame_tile": 16, "frame_stride": 12, "tile": 256, "tile_stride": 192},
    "THUDM/CogVideoX-2b": {"model_type": "t5", "d_model": 4096, "d_kv": 64, "num_heads": 64, "d_ff": 10240,
                           "num_layers": 24, "vocab_size": 32128, "feed_forward_proj": "gated-gelu",
                           "max_length": 226},
}
PARIS_CONFIGS.update(PARIS_VIDEO_CONFIGS)
PARIS_VIDEO_IDS = {"video_latent_encoder": "hunyuanvideo-community/HunyuanVideo", "t5_encoder": "THUDM/CogVideoX-2b"}


# --- FLOPs from configs ----------------------------------------------------------------------------------------

def transformer_flops(layers: int, width: int, ffn: int, tokens: int, context: int | None = None) -> float:
    """Forward FLOPs of `layers` pre-norm transformer layers over `tokens` tokens: 2 x (4 width^2 + 2 width ffn)
    per token for the projections and MLP, and 4 x tokens x context x width for the attention products."""
    context = tokens if context is None else context
    return float(layers * (2 * tokens * (4 * width * width + 2 * width * ffn) + 4 * tokens * context * width))


def vit_flops(layers: int, width: int, ffn: int, image: int, patch: int, channels: int = 3) -> float:
    """A ViT over an image x image input: the patch embedding (a patch x patch conv with stride patch) and
    `layers` transformer layers over the patches + the CLS token."""
    patches = (image // patch) ** 2
    return 2 * channels * patch * patch * width * patches + transformer_flops(layers, width, ffn, patches + 1)


def dinov2_cost(config: dict) -> dict:
    """DINOv2 at its processor's crop: patch embedding + ViT layers over patches + CLS; output (hidden,) float32."""
    width, patch, crop = config["hidden_size"], config["patch_size"], config.get("crop_size", 224)
    flops = vit_flops(config["num_hidden_layers"], width, int(width * config.get("mlp_ratio", 4)), crop, patch,
                      config.get("num_channels", 3))
    return {"flops": flops, "dim": width, "how": f"ViT-{width}x{config['num_hidden_layers']} layers over "
            f"{(crop // patch) ** 2}+1 tokens ({crop} px crop / {patch} px patches)"}


def clip_image_cost(config: dict) -> dict:
    """CLIP's image tower (CLIPVisionModelWithProjection) at its image_size, which its processor's centre crop
    matches: patch embedding + ViT layers over patches + CLS, then the projection of the CLS state; output
    (projection,). Raises when the checkpoint holds no vision tower (clip_image_embeddings loads it from there)."""
    vis = config.get("vision_config")
    if not vis:
        raise ValueError("the text encoder's checkpoint has no vision_config: clip_image_embeddings loads CLIP's "
                         "image tower from it; name a two-tower CLIP checkpoint in models.text_encoder_id")
    width, layers, image, patch = vis["hidden_size"], vis["num_hidden_layers"], vis["image_size"], vis["patch_size"]
    projection = vis.get("projection_dim", config.get("projection_dim", width))
    flops = vit_flops(layers, width, vis["intermediate_size"], image, patch, vis.get("num_channels", 3))
    flops += 2 * width * projection
    return {"flops": flops, "dim": projection, "how": f"vision ViT {width}x{layers} layers over "
            f"{(image // patch) ** 2}+1 tokens ({image} px centre crop / {patch} px patches) + projection to "
            f"{projection}"}


def clip_text_cost(config: dict) -> dict:
    """CLIP text tower on 77 tokens plus the projection of the end-of-text state."""
    text = config.get("text_config", config)
    width, tokens = text["hidden_size"], text.get("max_position_embeddings", 77)
    projection = config.get("projection_dim", text.get("projection_dim", width))
    flops = transformer_flops(text["num_hidden_layers"], width, text["intermediate_size"], tokens)
    flops += 2 * width * projection
    return {"flops": flops, "width": width, "tokens": tokens, "projection": projection,
            "how": f"text transformer {width}x{text['num_hidden_layers']} layers over {tokens} tokens + projection"}


def vae_encoder_cost(config: dict, image_size: int) -> dict:
    """AutoencoderKL.encode at image_size x image_size, conv by conv (diffusers' Encoder: conv_in, resnets of
    two 3x3 convs plus a 1x1 shortcut where channels change, a stride-2 downsample after every block but the
    last, a mid block of resnet-attention-resnet, conv_out to 2 x latent channels, quant_conv)."""
    channels, per_block = list(config["block_out_channels"]), config["layers_per_block"]
    latent = config["latent_channels"]

    def conv(cin: int, cout: int, k: int, side: int) -> int:  # multiply-adds of a conv producing side x side
        return cin * cout * k * k * side * side

    side, macs, cin = image_size, conv(config.get("in_channels", 3), channels[0], 3, image_size), channels[0]
    for i, cout in enumerate(channels):
        for _ in range(per_block):
            shortcut = conv(cin, cout, 1, side) if cin != cout else 0
            macs += conv(cin, cout, 3, side) + conv(cout, cout, 3, side) + shortcut
            cin = cout
        if i < len(channels) - 1:
            side //= 2
            macs += conv(cout, cout, 3, side)
    c, tokens = channels[-1], side * side
    macs += 2 * (2 * conv(c, c, 3, side))
    if config.get("mid_block_add_attention", True):
        macs += 4 * c * c * tokens + 2 * tokens * tokens * c
    macs += conv(c, 2 * latent, 3, side)
    if config.get("use_quant_conv", True):
        macs += conv(2 * latent, 2 * latent, 1, side)
    return {"flops": 2.0 * macs, "latent_shape": (latent, side, side),
            "how": f"encoder convs {channels} x {per_block} per block at {image_size} px -> {latent}x{side}x{side}"}


def blip2_cost(config: dict, new_tokens: int) -> dict:
    """BLIP-2 captioning: the vision ViT, the Q-Former and OPT's prefill of the query tokens (+ BOS) are
    compute-bound ('flops'); each generated token costs 'flops_per_token' and reads OPT's fp16 weights once per
    decoding step ('weight_bytes'), shared by the batch."""
    vis, q, txt = config["vision_config"], config["qformer_config"], config["text_config"]
    queries = config.get("num_query_tokens", 32)
    patches = (vis["image_size"] // vis["patch_size"]) ** 2
    v_width, q_width, t_width = vis["hidden_size"], q["hidden_size"], txt["hidden_size"]
    flops = vit_flops(vis["num_hidden_layers"], v_width, vis["intermediate_size"], vis["image_size"],
                      vis["patch_size"])
    flops += transformer_flops(q["num_hidden_layers"], q_width, q["intermediate_size"], queries)
    cross_layers = math.ceil(q["num_hidden_layers"] / q.get("cross_attention_frequency", 2))
    enc = q.get("encoder_hidden_size", v_width)
    flops += cross_layers * (2 * queries * 2 * q_width * q_width + 2 * (patches + 1) * 2 * enc * q_width
                             + 4 * queries * (patches + 1) * q_width)
    flops += 2 * queries * q_width * t_width  # language_projection
    prefill = queries + 1
    layer_weights = 4 * t_width * t_width + 2 * t_width * txt["ffn_dim"]
    flops += transformer_flops(txt["num_hidden_layers"], t_width, txt["ffn_dim"], prefill)
    vocab = txt["vocab_size"]
    context = prefill + new_tokens / 2
    per_token = (txt["num_hidden_layers"] * (2 * layer_weights + 4 * context * t_width)
                 + 2 * txt.get("word_embed_proj_dim", t_width) * vocab)
    weight_bytes = 2 * (txt["num_hidden_layers"] * layer_weights + vocab * txt.get("word_embed_proj_dim", t_width))
    return {"flops": float(flops), "flops_per_token": float(per_token), "weight_bytes": float(weight_bytes),
            "new_tokens": new_tokens,
            "how": f"ViT {v_width}x{vis['num_hidden_layers']} + Q-Former + OPT {t_width}x{txt['num_hidden_layers']} "
                   f"prefill of {prefill} tokens, then {new_tokens} new tokens (max_new_tokens, an upper bound)"}


def t5_encoder_cost(config: dict, tokens: int | None = None) -> dict:
    """A T5 encoder (T5EncoderModel) over `tokens` positions, padding included (the mask does not skip work):
    per layer q, k, v, o (d_model x heads*d_kv each), the feed-forward (two input projections when gated, one
    otherwise, and the output), and 4 x tokens^2 x heads*d_kv for the attention products; the relative position
    bias is an add, not counted. Output (tokens, d_model) per caption."""
    tokens = tokens or config.get("max_length", 226)
    width, inner, ffn = config["d_model"], config["num_heads"] * config["d_kv"], config["d_ff"]
    gated = str(config.get("feed_forward_proj", "relu")).startswith("gated")
    per_token = 2 * (4 * width * inner + (3 if gated else 2) * width * ffn)
    flops = config["num_layers"] * (tokens * per_token + 4 * tokens * tokens * inner)
    # transformers keeps T5's `wo` (d_ff -> d_model) in float32 when the rest is float16 (_keep_in_fp32_modules):
    # those products run at the GPU's float32 rate, not its fp16 tensor-core rate
    fp32 = 2 * config["num_layers"] * tokens * ffn * width
    return {"flops": float(flops), "fp32_flops": float(fp32), "tokens": tokens, "width": width,
            "weights": config["num_layers"] * (4 * width * inner + (3 if gated else 2) * width * ffn),
            "how": f"T5 encoder {width}x{config['num_layers']} layers, d_ff {ffn}{' gated' if gated else ''}, "
                   f"over {tokens} tokens (padding included)"}


def t5_xxl_cost(config: dict, tokens: int | None = None) -> dict:
    """T5-v1.1-XXL's encoder at CogVideoX's 226 tokens: 2.11 TFLOPs a caption (2 x 4.63e9 matmul weights x 226
    tokens + 20 GFLOPs of attention products), 13x DINOv2-large on an image."""
    return t5_encoder_cost(config, tokens)


def _hunyuan_encoder_macs(config: dict, frames: int, height: int, width: int) -> tuple[int, tuple[int, int, int]]:
    """Multiply-adds of HunyuanVideoEncoder3D + quant_conv on one (frames, height, width) window, and the latent
    (t, h, w) it gives. Causal convs pad the time axis in front (k - 1) and the sides by k // 2, so a stride-1 conv
    keeps the size; a downsampling conv (k 3, stride 2, no extra padding) gives (n - 1) // 2 + 1."""
    channels, per_block = list(config["block_out_channels"]), config["layers_per_block"]
    spatial_downs = int(math.log2(config.get("spatial_compression_ratio", 8)))
    time_downs = int(math.log2(config.get("temporal_compression_ratio", 4)))
    if config.get("temporal_compression_ratio", 4) != 4:
        raise ValueError("video_vae_encoder_cost: only temporal_compression_ratio 4 (HunyuanVideo's) is modelled")
    t, h, w = frames, height, width

    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k ** 3 * t * h * w

    cin = channels[0]
    macs = conv(config.get("in_channels", 3), cin, 3)
    last = len(channels) - 1
    for i, cout in enumerate(channels):
        for _ in range(per_block):
            macs += conv(cin, cout, 3) + conv(cout, cout, 3) + (conv(cin, cout, 1) if cin != cout else 0)
            cin = cout
        down_hw = i < spatial_downs
        down_t = i >= last - time_downs and i != last
        if down_hw or down_t:
            t = (t - 1) // 2 + 1 if down_t else t
            h, w = ((h - 1) // 2 + 1, (w - 1) // 2 + 1) if down_hw else (h, w)
            macs += conv(cout, cout, 3)
    c, tokens = channels[-1], t * h * w
    macs += 2 * (2 * conv(c, c, 3))  # the mid block's two resnets
    if config.get("mid_block_add_attention", True):  # one head of width c over every latent position (causal mask
        macs += 4 * c * c * tokens + 2 * tokens * tokens * c  # applied as an additive mask: the full product)
    latent = config["latent_channels"]
    macs += conv(c, 2 * latent, 3) + conv(2 * latent, 2 * latent, 1)  # conv_out, quant_conv
    return macs, (t, h, w)


def video_vae_encoder_cost(config: dict, frames: int, size: int, spatial_tiling: bool = True) -> dict:
    """AutoencoderKLHunyuanVideo.encode of one (frames, size, size) clip as diffusers runs it: windows of
    frame_tile + 1 frames every frame_stride when the clip is longer than frame_tile (17 frames: frames 0-16 and
    12-16), and, with `spatial_tiling` (VideoLatentEncoder turns it on for GPUs), tiles of `tile` px every
    `tile_stride` when a side is larger than `tile`. Output (C, (T-1)/4+1, S/8, S/8)."""
    frame_tile, frame_stride = config.get("frame_tile", 16), config.get("frame_stride", 12)
    tile, tile_stride = config.get("tile", 256), config.get("tile_stride", 192)
    windows = ([min(frame_tile + 1, frames - i) for i in range(0, frames, frame_stride)] if frames > frame_tile
               else [frames])
    sides = ([min(tile, size - i) for i in range(0, size, tile_stride)] if spatial_tiling and size > tile
             else [size])
    macs = sum(_hunyuan_encoder_macs(config, t, h, w)[0] for t in windows for h in sides for w in sides)
    spatial, temporal = config.get("spatial_compression_ratio", 8), config.get("temporal_compression_ratio", 4)
    shape = (config["latent_channels"], (frames - 1) // temporal + 1, size // spatial, size // spatial)
    return {"flops": 2.0 * macs, "latent_shape": shape, "windows": windows, "tiles": len(sides) ** 2,
            "how": f"causal 3-D encoder convs {config['block_out_channels']} x {config['layers_per_block']} per "
                   f"block on {frames}x{size}x{size} as {len(windows)} frame window(s) {windows}"
                   + (f" x {len(sides) ** 2} spatial tiles" if len(sides) > 1 else "")
                   + f" -> {'x'.join(map(str, shape))}"}
