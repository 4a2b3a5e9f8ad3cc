"""Model wrappers on the tiny profile: shapes, dtypes, determinism, and the save_pretrained round trip."""

import json

import numpy as np
import pytest

from paris_assets.models.captioner import Captioner
from paris_assets.models.common import ModelNotAvailable, ModelRef
from paris_assets.models.image_embedder import DINOV2_LARGE, ImageEmbedder
from paris_assets.models.latent_encoder import LatentEncoder
from paris_assets.models.text_encoder import TextEncoder
from paris_assets.models.tiny import ensure_tiny_models

IMAGES = np.random.default_rng(0).integers(0, 255, (3, 256, 256, 3), dtype=np.uint8)
TEXTS = ["a sunset over the sea", "stars at night", ""]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ensure_tiny_models(tmp_path_factory.mktemp("tiny"))


def make(role, folder, **kw):
    cls = {"captioner": Captioner, "text_encoder": TextEncoder, "image_embedder": ImageEmbedder,
           "latent_encoder": LatentEncoder}[role]
    return cls(ModelRef(str(folder)), device="cpu", **kw).load()


def outputs(role, model):
    if role == "captioner":
        return model(IMAGES)
    if role == "text_encoder":
        return model(TEXTS)
    return model(IMAGES)


def same(a, b) -> bool:
    if isinstance(a, tuple):
        return all(np.array_equal(x, y) for x, y in zip(a, b))
    return a == b if isinstance(a, list) else np.array_equal(a, b)


def test_image_embedder(tiny):
    for pooling in ("cls", "mean"):
        feats = make("image_embedder", tiny["image_embedder"], pooling=pooling)(IMAGES)
        assert feats.shape == (3, 32) and feats.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)


def test_latent_encoder(tiny):
    vae = make("latent_encoder", tiny["latent_encoder"])
    z = vae(IMAGES)
    assert z.shape == (3, 4, 32, 32) and z.dtype == np.float16
    assert vae.decode(z).shape == (3, 256, 256, 3)
    sampler = make("latent_encoder", tiny["latent_encoder"], sample=True, seed=3)
    a, b, c = sampler(IMAGES, offset=0), sampler(IMAGES, offset=0), sampler(IMAGES, offset=64)
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, z)


def test_text_encoder(tiny):
    tokens, pooled = make("text_encoder", tiny["text_encoder"])(TEXTS)
    assert tokens.shape == (3, 77, 32) and pooled.shape == (3, 768)
    assert tokens.dtype == pooled.dtype == np.float16
    assert not np.array_equal(pooled[0], pooled[1])


def test_captioner(tiny):
    captions = make("captioner", tiny["captioner"], min_new_tokens=4, max_new_tokens=6)(IMAGES)
    assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)


@pytest.mark.parametrize("role", ["captioner", "text_encoder", "image_embedder", "latent_encoder"])
def test_deterministic_and_save_pretrained_round_trip(tiny, tmp_path, role):
    kw = {"min_new_tokens": 4, "max_new_tokens": 6} if role == "captioner" else {}
    first = make(role, tiny[role], **kw)
    a = outputs(role, first)
    assert same(a, outputs(role, first))
    first.model.save_pretrained(tmp_path / role)
    helper = getattr(first, "processor", None) or getattr(first, "tokenizer", None)
    if hasattr(helper, "save_pretrained"):  # the VAE's VaeImageProcessor is built from the model's config
        helper.save_pretrained(tmp_path / role)
    assert same(outputs(role, make(role, tmp_path / role, **kw)), a)


def test_missing_weights_offline_say_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailable) as err:
        ImageEmbedder(DINOV2_LARGE, device="cpu").load()
    message = str(err.value)
    assert "facebook/dinov2-large" in message and "make models" in message
    assert "hf download facebook/dinov2-large --revision 47b73eefe95e8d44ec3623f8890bd894b6ea2d6c" in message
    assert "models.profile: tiny" in message


def test_text_encoder_refuses_a_tokenizer_that_is_not_77_tokens(tiny, tmp_path):
    import shutil

    folder = tmp_path / "long"
    shutil.copytree(tiny["text_encoder"], folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 512}))
    with pytest.raises(ValueError, match="pads to 512 tokens"):
        make("text_encoder", folder)
