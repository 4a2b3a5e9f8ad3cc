"""Tiny stand-ins for the video roles: AutoencoderKLHunyuanVideo and T5EncoderModel with tiny configs, seeded
random weights, saved with `save_pretrained` into `<data_dir>/models/tiny/<role>/` and loaded back through the same
`from_pretrained` code as the real ones (see tiny.py; offline, no hub)."""

from __future__ import annotations

from pathlib import Path

import torch

from .t5_encoder import MAX_LENGTH
from .tiny import _WORDS, build_stamped

TINY_VIDEO_VERSION = 3  # bump when a config below changes, so stale tiny models are rebuilt
VIDEO_ROLES = ("video_latent_encoder", "t5_encoder")


def ensure_tiny_video_models(data_root: str | Path, seed: int = 0) -> dict[str, str]:
    """Build any missing tiny video model (or one from an older TINY_VIDEO_VERSION); returns role -> folder."""
    return build_stamped(data_root, {role: BUILDERS[role] for role in VIDEO_ROLES}, TINY_VIDEO_VERSION, seed)


def build_video_latent_encoder(folder: Path) -> None:
    from diffusers import AutoencoderKLHunyuanVideo

    # Four down blocks like the real VAE (8x spatial, 4x temporal): (1, 3, 17, 64, 64) -> (1, 4, 5, 8, 8). No
    # mid-block attention: over a 256 px clip's 5x32x32 latent positions it took 60 % of the CPU time (3.4 against
    # 1.3 s a clip here), and random attention weights test nothing the convolutions do not.
    vae = AutoencoderKLHunyuanVideo(latent_channels=4, block_out_channels=(4, 8, 8, 8), layers_per_block=1,
                                    norm_num_groups=2, mid_block_add_attention=False)
    _calibrate_latent_scale(vae.eval())
    vae.save_pretrained(folder)


def _calibrate_latent_scale(vae) -> None:
    """Scale the encoder's mean so latents x scaling_factor have about unit std, as the real VAE's do (random
    weights give latents far too small for any noise level to leave a signal; see tiny._calibrate_latent_scale).
    One fixed batch of panning demo pictures sets it."""
    import numpy as np

    from ..lib.demo.images import THEMES, draw_theme

    rng = np.random.default_rng(0)
    clips = []
    for i in range(4):
        still = draw_theme(THEMES[i % len(THEMES)], 96, 64, rng)
        clips.append(np.stack([still[:, 2 * t:2 * t + 64] for t in range(9)]))  # a 9-frame pan to the right
    x = torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1)
    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mean
        scale = 1.0 / (vae.config.scaling_factor * float(mean.std()))
        channels = vae.config.latent_channels  # quant_conv's first half is the mean, the second the log-variance
        vae.quant_conv.weight[:channels] *= scale
        vae.quant_conv.bias[:channels] *= scale


def t5_tokenizer():
    """A real `T5Tokenizer` (Unigram, `<pad>`=0, `</s>`=1, `<unk>`=2, `</s>` appended) over the demo words and
    single characters, built offline."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + word, -1.0) for word in dict.fromkeys(_WORDS)]  # whole words: a few tokens per caption
    chars = [chr(c) for c in range(33, 127)]
    vocab += [(c, -5.0) for c in chars] + [("\u2581" + c, -5.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=MAX_LENGTH)  # as the real tokenizer's


def build_t5_encoder(folder: Path) -> None:
    from transformers import T5Config, T5EncoderModel

    tokenizer = t5_tokenizer()
    # T5-v1.1's shape in miniature: gated-GELU feed-forward, untied embeddings, relative position buckets.
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
    T5EncoderModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)


BUILDERS = {
    "video_latent_encoder": build_video_latent_encoder,
    "t5_encoder": build_t5_encoder,
}
