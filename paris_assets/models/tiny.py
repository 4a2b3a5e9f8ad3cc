"""The `tiny` profile: the real architecture classes with tiny configs and seeded random weights.

Built once into `<data_dir>/models/tiny/<role>/` with `save_pretrained`, then loaded through exactly the same
`from_pretrained` code as the real models. Offline, a few MB, and their outputs carry no meaning: they exercise
shapes, dtypes, batching and storage, not semantics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

TINY_VERSION = 4  # bump when a config below changes, so stale tiny models are rebuilt
ROLES = ("captioner", "text_encoder", "image_embedder", "latent_encoder")

_WORDS = ("a the of and with in on at over under sky sun sea waves forest trees city night lights stars moon "
          "sand dunes desert bubbles checkerboard pattern tiles blue green red golden dark bright soft calm "
          "photo picture image view landscape beautiful quiet vivid simple wide colourful round").split()


def tiny_dir(data_root: str | Path, role: str) -> Path:
    return Path(data_root) / "models" / "tiny" / role


def ensure_tiny_models(data_root: str | Path, seed: int = 0) -> dict[str, str]:
    """Build any missing tiny model (or one from an older TINY_VERSION); returns role -> folder."""
    return build_stamped(data_root, BUILDERS, TINY_VERSION, seed)


def build_stamped(data_root: str | Path, builders: dict, version: int, seed: int) -> dict[str, str]:
    """Each role's folder built by its builder with seeded weights and stamped with `version`, unless a folder
    of that version is already there; built beside it and renamed in. Returns role -> folder."""
    import shutil

    folders = {}
    for role, build in builders.items():
        folder = tiny_dir(data_root, role)
        stamp = folder / "tiny.json"
        if not (stamp.exists() and json.loads(stamp.read_text()).get("version") == version):
            tmp = folder.with_name(folder.name + ".tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            torch.manual_seed(seed)
            build(tmp)
            (tmp / "tiny.json").write_text(json.dumps({"version": version, "seed": seed}))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        folders[role] = str(folder)
    return folders


def _clip_tokenizer():
    from transformers import CLIPTokenizer

    byte_chars = [chr(c) for c in range(33, 127)]
    vocab: dict[str, int] = {}
    for token in byte_chars + [c + "</w>" for c in byte_chars]:
        vocab.setdefault(token, len(vocab))
    merges = []
    for word in _WORDS:  # whole words as merges, so captions are a few tokens each
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            vocab.setdefault(pieces[0], len(vocab))
    merges = list(dict.fromkeys(merges))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    # 77 like CLIP's own: diffusers' encode_prompt pads to the tokenizer's model_max_length
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token="<|endoftext|>", model_max_length=77)


def build_text_encoder(folder: Path) -> None:
    """Both towers, like openai/clip-vit-large-patch14: the text encoder and clip_image_embeddings load their
    halves of the same checkpoint (CLIPTextModelWithProjection / CLIPVisionModelWithProjection)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = _clip_tokenizer()
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, projection_dim=768)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8, projection_dim=768)  # 768 as ViT-L/14: LAION's heads read exactly this width
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=768)).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # CLIP's own preprocessing (shorter side, centre crop, CLIP's mean/std) at the tiny tower's 32 px
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


def build_image_embedder(folder: Path) -> None:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    # The real preprocessing geometry (shorter side 256, centre crop 224), tiny width and depth.
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          patch_size=14, image_size=224)
    Dinov2Model(config).eval().save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, do_center_crop=True,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                      do_convert_rgb=True).save_pretrained(folder)


def build_latent_encoder(folder: Path) -> None:
    from diffusers import AutoencoderKL

    # Four down blocks, like sd-vae-ft-mse, so 256 px maps to 32x32 latents.
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(8, 16, 16, 16), sample_size=256)
    _calibrate_latent_scale(vae.eval())
    vae.save_pretrained(folder)


def _calibrate_latent_scale(vae) -> None:
    """Scale the encoder's output so that latents x scaling_factor (0.18215) have about unit std, as SD's do.

    Random weights give latents a hundred times too small; then every noise level buries them and nothing
    downstream (the router above all) has a signal to learn from. One fixed batch of demo pictures sets it."""
    import numpy as np

    from ..lib.demo.images import THEMES, draw_theme

    rng = np.random.default_rng(0)
    images = np.stack([draw_theme(THEMES[i % len(THEMES)], 256, 256, rng) for i in range(8)])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mean
        scale = 1.0 / (vae.config.scaling_factor * float(mean.std()))
        channels = vae.config.latent_channels  # quant_conv's first half is the mean, the second the log-variance
        vae.quant_conv.weight[:channels] *= scale
        vae.quant_conv.bias[:channels] *= scale


def _bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "</s>", "<s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([" ".join(_WORDS)] * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def build_captioner(folder: Path) -> None:
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor, OPTConfig

    tokenizer = _bpe_tokenizer()
    num_query_tokens = 4
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    text = OPTConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=2,
                     max_position_embeddings=128, word_embed_proj_dim=32, pad_token_id=tokenizer.pad_token_id,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = Blip2Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        qformer_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "intermediate_size": 64, "encoder_hidden_size": 32, "vocab_size": 100},
        text_config=text.to_dict(), num_query_tokens=num_query_tokens, image_token_index=image_token)
    Blip2ForConditionalGeneration(config).eval().save_pretrained(folder)
    processor = Blip2Processor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer,
                               num_query_tokens=num_query_tokens)
    processor.save_pretrained(folder)


BUILDERS = {
    "captioner": build_captioner,
    "text_encoder": build_text_encoder,
    "image_embedder": build_image_embedder,
    "latent_encoder": build_latent_encoder,
}
