"""Our wrappers against the reference code the consumers run, on the tiny models, the same inputs on both sides.

Exact equality throughout: both sides run the same float32 kernels on the same CPU, batch and inputs, and our
float16 outputs are compared with the reference's float32 result cast to float16, so any difference is a
difference of method (a mask, a preprocessing step, a constant), not of rounding."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from paris_assets.lib.demo.images import THEMES, draw_theme
from paris_assets.models.captioner import Captioner
from paris_assets.models.common import ModelNotAvailable, ModelRef
from paris_assets.models.image_embedder import ImageEmbedder
from paris_assets.models.latent_encoder import LatentEncoder
from paris_assets.models.text_encoder import TextEncoder
from paris_assets.models.tiny import ensure_tiny_models

# What the model stages see: 256 px crops from filtered_images, decoded to uint8 NHWC.
rng = np.random.default_rng(1)
CROPS = np.stack([draw_theme(THEMES[i % len(THEMES)], 256, 256, rng) for i in range(3)])
# Short, long (truncated at 77) and empty: padding positions are where a mask would change the states.
TEXTS = ["a sunset over the sea", " ".join(["golden waves under a bright moon"] * 20), ""]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ensure_tiny_models(tmp_path_factory.mktemp("tiny"))


def sd_pipeline(text_folder: str, vae_folder: str):
    """A StableDiffusionPipeline of tiny parts, with the tiny CLIP tokenizer and text encoder, as SD 1.x loads
    them: CLIPTextModel (the per-token states) from the same checkpoint."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), norm_num_groups=8, cross_attention_dim=32,
                                attention_head_dim=2, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    return StableDiffusionPipeline(vae=AutoencoderKL.from_pretrained(vae_folder),
                                   text_encoder=CLIPTextModel.from_pretrained(text_folder),
                                   tokenizer=CLIPTokenizer.from_pretrained(text_folder), unet=unet,
                                   scheduler=PNDMScheduler(steps_offset=1, skip_prk_steps=True), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


@pytest.mark.parametrize("use_attention_mask", [None, True], ids=["clip-config", "config-asks-for-a-mask"])
def test_clip_tokens_equal_stable_diffusion_encode_prompt(tiny, tmp_path, use_attention_mask):
    folder = tmp_path / "clip"
    shutil.copytree(tiny["text_encoder"], folder)
    if use_attention_mask:  # encode_prompt masks only for such text encoders; so must we
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "use_attention_mask": True}))
    ours = TextEncoder(ModelRef(str(folder)), device="cpu").load()
    tokens, pooled = ours(TEXTS)
    pipe = sd_pipeline(str(folder), tiny["latent_encoder"])
    with torch.no_grad():  # the pipeline's __call__ runs it under no_grad
        reference, _ = pipe.encode_prompt(TEXTS, device="cpu", num_images_per_prompt=1,
                                          do_classifier_free_guidance=False)
    assert reference.shape == tokens.shape == (3, 77, 32)
    np.testing.assert_array_equal(tokens, reference.numpy().astype(np.float16))

    # pooled: CLIP's text embedding, the projection of the end-of-text token's state in those very states
    ids = pipe.tokenizer(TEXTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    eos = (ids == pipe.tokenizer.eos_token_id).int().argmax(dim=1)
    with torch.no_grad():
        projected = ours.model.text_projection(reference[torch.arange(3), eos])
    np.testing.assert_array_equal(pooled, projected.numpy().astype(np.float16))


@pytest.mark.parametrize("scaling_factor, shift_factor", [(None, None), (0.13025, None), (1.5305, 0.0609)],
                         ids=["sd-vae-config", "other-scale", "scale-and-shift"])
def test_latents_equal_vae_image_processor_and_encode(tiny, tmp_path, scaling_factor, shift_factor):
    from diffusers import AutoencoderKL
    from diffusers.image_processor import VaeImageProcessor

    folder = tmp_path / "vae"
    shutil.copytree(tiny["latent_encoder"], folder)
    if scaling_factor is not None:  # another VAE's config: the factor must be read, not assumed
        config = json.loads((folder / "config.json").read_text())
        config.update(scaling_factor=scaling_factor, shift_factor=shift_factor)
        (folder / "config.json").write_text(json.dumps(config))
    latents = LatentEncoder(ModelRef(str(folder)), device="cpu").load()(CROPS)

    vae = AutoencoderKL.from_pretrained(folder)
    x = VaeImageProcessor().preprocess([Image.fromarray(crop) for crop in CROPS])
    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mean
    if vae.config.get("shift_factor") is None:  # Stable Diffusion's VAEs
        reference = mean * vae.config.scaling_factor
    else:  # SD3/Flux VAEs, as their pipelines encode
        reference = (mean - vae.config.shift_factor) * vae.config.scaling_factor
    assert latents.shape == (3, 4, 32, 32) and latents.dtype == np.float16
    np.testing.assert_array_equal(latents, reference.numpy().astype(np.float16))


def test_dinov2_equals_auto_image_processor_and_pooler_output(tiny):
    from transformers import AutoImageProcessor, Dinov2Model

    feats = ImageEmbedder(ModelRef(tiny["image_embedder"]), device="cpu").load()(CROPS)
    processor = AutoImageProcessor.from_pretrained(tiny["image_embedder"])
    model = Dinov2Model.from_pretrained(tiny["image_embedder"]).eval()
    with torch.no_grad():
        pooled = model(**processor(images=[Image.fromarray(c) for c in CROPS], return_tensors="pt")).pooler_output
    reference = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    np.testing.assert_array_equal(feats, reference)


WRAPPERS = {"captioner": Captioner, "text_encoder": TextEncoder, "image_embedder": ImageEmbedder,
            "latent_encoder": LatentEncoder}


@pytest.mark.parametrize("role", list(WRAPPERS))
def test_loads_in_the_dtype_asked_keeping_fp32_modules(tiny, role):
    """Saved in float32, loaded in float16: every weight float16 except the modules the model keeps in float32
    (BLIP-2's Q-Former and query tokens); a cast after loading would turn those to float16 as well."""
    kw = {"min_new_tokens": 2, "max_new_tokens": 3} if role == "captioner" else {}
    wrapper = WRAPPERS[role](ModelRef(tiny[role]), device="cpu", dtype="float16", **kw).load()
    keep = tuple(getattr(wrapper.model, "_keep_in_fp32_modules", None) or ())
    dtypes = {name: p.dtype for name, p in wrapper.model.named_parameters()}
    kept = {n for n in dtypes if any(n == k or n.startswith(k + ".") for k in keep)}
    assert {dtypes[n] for n in set(dtypes) - kept} == {torch.float16}
    assert {dtypes[n] for n in kept} <= {torch.float32}
    assert bool(kept) == (role == "captioner")
    out = wrapper(TEXTS if role == "text_encoder" else CROPS[:1])  # the mixed-precision model runs
    arrays = out if isinstance(out, tuple) else () if isinstance(out, list) else (out,)
    assert all(np.isfinite(a).all() for a in arrays) and len(out if role == "captioner" else out[0]) >= 1


def test_refuses_weights_that_are_not_safetensors(tiny, tmp_path):
    from transformers import Dinov2Model

    folder = tmp_path / "pickled"
    model = Dinov2Model.from_pretrained(tiny["image_embedder"])
    model.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # a pickle, as older repos ship
    shutil.copy(f"{tiny['image_embedder']}/preprocessor_config.json", folder)
    with pytest.raises(ModelNotAvailable, match="safetensors"):
        ImageEmbedder(ModelRef(str(folder)), device="cpu").load()
