"""Video model wrappers on tiny models: the HunyuanVideo VAE and the T5 encoder, saved with save_pretrained and loaded
back from a local folder; shapes, dtypes, determinism, parity with a direct diffusers/transformers call."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from paris_assets.models.common import ModelRef
from paris_assets.models.t5_encoder import T5_V1_1_XXL, T5TextEncoder, tokenizer_ref
from paris_assets.models.tiny_video import TINY_VIDEO_VERSION, ensure_tiny_video_models
from paris_assets.models.video_latent_encoder import VideoLatentEncoder

SIDE = 32  # 4 latent pixels a side: enough for the shapes, quick on a CPU
TEXTS = ["a sunset over the sea", "stars at night over the quiet desert and the dark dunes", ""]


def clips(n: int, frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, frames, SIDE, SIDE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ensure_tiny_video_models(tmp_path_factory.mktemp("tiny_video"))


@pytest.fixture(scope="module")
def vae(tiny):
    return VideoLatentEncoder(ModelRef(tiny["video_latent_encoder"]), device="cpu").load()


@pytest.fixture(scope="module")
def t5(tiny):
    return T5TextEncoder(ModelRef(tiny["t5_encoder"]), device="cpu").load()


def test_tiny_folders_are_save_pretrained_outputs(tiny):
    folder = Path(tiny["video_latent_encoder"])
    assert {"config.json", "diffusion_pytorch_model.safetensors", "tiny.json"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "tiny.json").read_text()) == {"version": TINY_VIDEO_VERSION, "seed": 0}
    t5_files = {p.name for p in Path(tiny["t5_encoder"]).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= t5_files


@pytest.mark.parametrize("frames, latent_frames", [(17, 5), (33, 9), (1, 1)])
def test_latent_shapes_and_dtype(vae, frames, latent_frames):
    z = vae(clips(2, frames))
    assert z.shape == (2, 4, latent_frames, SIDE // 8, SIDE // 8) == (2, *vae.latent_shape(frames, SIDE, SIDE))
    assert z.dtype == np.float16 and np.isfinite(z).all()


def test_scaling_factor_is_read_from_the_config(tiny, vae, tmp_path):
    config = json.loads((Path(tiny["video_latent_encoder"]) / "config.json").read_text())
    assert vae.scaling_factor == config["scaling_factor"] == 0.476986
    copy = tmp_path / "vae"
    shutil.copytree(tiny["video_latent_encoder"], copy)
    config["scaling_factor"] = 1.0
    (copy / "config.json").write_text(json.dumps(config))
    unscaled = VideoLatentEncoder(ModelRef(str(copy)), device="cpu").load()
    x = clips(1, 9)
    assert unscaled.scaling_factor == 1.0
    np.testing.assert_allclose(vae(x).astype(np.float32), unscaled(x).astype(np.float32) * 0.476986, rtol=2e-3,
                               atol=2e-3)


def test_equals_a_direct_diffusers_call(tiny, vae):
    from diffusers import AutoencoderKLHunyuanVideo

    direct = AutoencoderKLHunyuanVideo.from_pretrained(tiny["video_latent_encoder"]).eval()
    x = clips(2, 17)
    pixels = torch.from_numpy(x).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    torch.testing.assert_close(vae.preprocess(x), pixels)
    with torch.no_grad():
        batched = direct.encode(pixels).latent_dist.mean * direct.config.scaling_factor
        direct.enable_slicing()  # as the wrapper runs it on a GPU: one clip at a time
        sliced = direct.encode(pixels).latent_dist.mean * direct.config.scaling_factor
    z = vae(x)
    np.testing.assert_array_equal(z, batched.numpy().astype(np.float16))  # on a CPU: the batch whole
    # A batch of 2 through one convolution differs from two of 1 only in float rounding (a float16 ulp here).
    np.testing.assert_allclose(z.astype(np.float32), sliced.numpy(), atol=1e-3, rtol=1e-3)


def test_mean_is_deterministic_and_independent_of_the_batch(vae):
    x = clips(3, 9)
    z = vae(x)
    np.testing.assert_array_equal(z, vae(x))
    # on a CPU the batch goes through whole: a clip alone differs by float rounding only
    np.testing.assert_allclose(z[1:2].astype(np.float32), vae(x[1:2]).astype(np.float32), atol=1e-3, rtol=1e-3)


def test_seeded_sample_per_row(tiny, vae):
    sampler = VideoLatentEncoder(ModelRef(tiny["video_latent_encoder"]), device="cpu", sample=True, seed=3).load()
    x = clips(3, 9)
    a, b, c = sampler(x, offset=0), sampler(x, offset=0), sampler(x, offset=64)
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, vae(x))
    # a row's noise follows its offset, not its batch (the mean, batched whole on a CPU, to float rounding)
    np.testing.assert_allclose(a[2:].astype(np.float32), sampler(x[2:], offset=2).astype(np.float32), atol=2e-3, rtol=2e-3)
    other_seed = VideoLatentEncoder(ModelRef(tiny["video_latent_encoder"]), device="cpu", sample=True, seed=4).load()
    assert not np.array_equal(a, other_seed(x, offset=0))


@pytest.mark.parametrize("frames", [16, 18, 0])
def test_refuses_clips_that_are_not_4k_plus_1_frames(vae, frames):
    with pytest.raises(ValueError, match=r"4k\+1 frames"):
        vae(np.zeros((1, frames, SIDE, SIDE, 3), np.uint8))
    with pytest.raises(ValueError, match=r"4k\+1 frames"):
        vae(torch.zeros(1, 3, frames, SIDE, SIDE))


def test_refuses_sides_and_layouts_it_cannot_encode(vae):
    with pytest.raises(ValueError, match="multiples of 8"):
        vae(np.zeros((1, 9, 36, SIDE, 3), np.uint8))
    with pytest.raises(ValueError, match=r"uint8 clips \(N, T, H, W, 3\)"):
        vae(np.zeros((9, SIDE, SIDE, 3), np.uint8))
    with pytest.raises(ValueError, match=r"pixels \(N, 3, T, H, W\)"):
        vae(torch.zeros(1, 9, 3, SIDE, SIDE))


def test_decode_round_trip_shape(vae):
    z = vae(clips(1, 9))
    video = vae.decode(z)
    assert video.shape == (1, 9, SIDE, SIDE, 3) and video.dtype == np.uint8


def test_save_pretrained_round_trip(vae, tmp_path):
    vae.model.save_pretrained(tmp_path / "vae")
    again = VideoLatentEncoder(ModelRef(str(tmp_path / "vae")), device="cpu").load()
    x = clips(1, 9)
    np.testing.assert_array_equal(vae(x), again(x))


def test_t5_states_and_mask(t5):
    states, mask = t5(TEXTS)
    assert states.shape == (3, 226, 32) and states.dtype == np.float16
    assert mask.shape == (3, 226) and mask.dtype == np.bool_
    lengths = [len(t5.tokenizer(text).input_ids) for text in TEXTS]  # words and the closing </s>
    assert mask.sum(axis=1).tolist() == lengths and lengths[2] == 1
    for row, n in enumerate(lengths):
        assert mask[row, :n].all() and not mask[row, n:].any()  # real tokens first, then padding
        assert not states[row, n:].any() and np.isfinite(states[row]).all()
    assert not np.array_equal(states[0, :2], states[1, :2])


def test_t5_real_positions_equal_an_unbatched_call(tiny, t5):
    from transformers import T5EncoderModel

    states, mask = t5(TEXTS)
    direct = T5EncoderModel.from_pretrained(tiny["t5_encoder"]).eval()
    for row, text in enumerate(TEXTS):
        alone, alone_mask = t5([text])
        np.testing.assert_array_equal(mask[row], alone_mask[0])
        np.testing.assert_allclose(states[row], alone[0], atol=2e-3, rtol=1e-3)
        ids = t5.tokenizer(text, return_tensors="pt").input_ids  # no padding at all
        with torch.no_grad():
            unpadded = direct(input_ids=ids).last_hidden_state[0].numpy()
        np.testing.assert_allclose(states[row, :len(unpadded)], unpadded, atol=2e-3, rtol=1e-3)


def test_t5_max_length_truncates_and_keeps_real_states(tiny, t5):
    short = T5TextEncoder(ModelRef(tiny["t5_encoder"]), device="cpu", max_length=8).load()
    texts = ["the sea at night", TEXTS[1]]
    states, mask = short(texts)
    assert states.shape == (2, 8, 32) and mask[1].all()  # the long caption is cut to 8 tokens, </s> included
    assert mask[0].sum() == 5  # four words and </s> fit: their states do not depend on the padding after them
    np.testing.assert_allclose(states[0, :5], t5(texts)[0][0, :5], atol=2e-3, rtol=1e-3)
    assert short.dims == (8, 32) and t5.dims == (226, 32)
    with pytest.raises(ValueError, match="max_length"):
        T5TextEncoder(ModelRef(tiny["t5_encoder"]), max_length=1)


def test_t5_half_precision_keeps_the_output_projections_in_float32(tiny, t5):
    half = T5TextEncoder(ModelRef(tiny["t5_encoder"]), device="cpu", dtype="float16").load()
    feed_forward = half.model.encoder.block[0].layer[1].DenseReluDense
    assert feed_forward.wi_0.weight.dtype == torch.float16 and feed_forward.wo.weight.dtype == torch.float32
    states, mask = half(TEXTS)
    np.testing.assert_array_equal(mask, t5(TEXTS)[1])
    np.testing.assert_allclose(states.astype(np.float32), t5(TEXTS)[0].astype(np.float32), atol=0.05)


def test_t5_save_pretrained_round_trip(t5, tmp_path):
    t5.model.save_pretrained(tmp_path / "t5")
    t5.tokenizer.save_pretrained(tmp_path / "t5")
    again = T5TextEncoder(ModelRef(str(tmp_path / "t5")), device="cpu").load()
    for a, b in zip(t5(TEXTS), again(TEXTS)):
        np.testing.assert_array_equal(a, b)


def test_tokenizer_lives_beside_the_pipeline_text_encoder():
    assert tokenizer_ref(T5_V1_1_XXL) == ModelRef("THUDM/CogVideoX-2b", None, "tokenizer")
    assert tokenizer_ref(ModelRef("x", "abc", "text_encoder_3")) == ModelRef("x", "abc", "tokenizer_3")
    assert tokenizer_ref(ModelRef("/tmp/tiny")) == ModelRef("/tmp/tiny")
