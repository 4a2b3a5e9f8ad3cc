"""models/heads: the LAION aesthetic and NSFW heads load their upstream layouts, download once, and score in blocks."""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from paris_assets.models.heads import (CATEGORICAL, AestheticHead, NsfwHead, _lookup, encode_vocab, head_identity,
                                       load_head, score)
from paris_assets.lib.ingest.http_server import serve_directory

# The keys and shapes of sac+logos+ava1-l14-linearMSE.pth, written out rather than taken from AestheticHead.
UPSTREAM_AESTHETIC = {"layers.0.weight": (1024, 768), "layers.0.bias": (1024,), "layers.2.weight": (128, 1024),
                      "layers.2.bias": (128,), "layers.4.weight": (64, 128), "layers.4.bias": (64,),
                      "layers.6.weight": (16, 64), "layers.6.bias": (16,), "layers.7.weight": (1, 16),
                      "layers.7.bias": (1,)}
# Keras layer -> weight shapes of clip_autokeras_binary_nsfw (Dense kernels are (in, out)).
UPSTREAM_NSFW = {"normalization": {"mean": (768,), "variance": (768,), "count": ()},
                 "dense": {"kernel": (768, 64), "bias": (64,)}, "dense_1": {"kernel": (64, 512), "bias": (512,)},
                 "dense_2": {"kernel": (512, 256), "bias": (256,)}, "dense_3": {"kernel": (256, 1), "bias": (1,)}}


def embeddings(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 768)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def upstream_aesthetic_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) * 0.05 for k, shape in UPSTREAM_AESTHETIC.items()}


def keras_nsfw_arrays(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    arrays = {layer: {w: rng.normal(scale=0.1, size=shape).astype(np.float32) for w, shape in weights.items()}
              for layer, weights in UPSTREAM_NSFW.items()}
    arrays["normalization"]["variance"] = rng.uniform(0.0004, 0.01, size=768).astype(np.float32)
    arrays["normalization"]["count"] = np.array(1000, dtype=np.int64)
    return arrays


def keras_reference(arrays: dict, x: np.ndarray) -> np.ndarray:
    """The Keras graph in numpy, with every categorical column unknown (index 0), as an .h5 leaves them."""
    x = x.astype(np.float64).copy()
    x[:, list(CATEGORICAL)] = 0
    n = arrays["normalization"]
    h = (x - n["mean"]) / np.sqrt(n["variance"])
    for layer in ("dense", "dense_1", "dense_2"):
        h = np.maximum(h @ arrays[layer]["kernel"] + arrays[layer]["bias"], 0)
    logit = h @ arrays["dense_3"]["kernel"] + arrays["dense_3"]["bias"]
    return (1 / (1 + np.exp(-logit))).ravel()


def write_keras_h5(path: Path, arrays: dict, nested: bool) -> None:
    """Keras 2.8's h5 layout: save_weights at the root, model.save under model_weights/."""
    import h5py

    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if nested else f
        names = ["input_1", "multi_category_encoding", "normalization", "dense", "re_lu", "dense_1", "re_lu_1",
                 "dense_2", "re_lu_2", "dense_3", "classification_head_1"]
        root.attrs["layer_names"] = [n.encode() for n in names]
        root.attrs["backend"], root.attrs["keras_version"] = b"tensorflow", b"2.8.0"
        for name in names:
            group = root.create_group(name)
            weights = arrays.get(name, {})
            group.attrs["weight_names"] = [f"{name}/{w}:0".encode() for w in weights]
            for w, value in weights.items():
                group.create_dataset(f"{name}/{w}:0", data=value)


def test_aesthetic_loads_upstream_state_dict_strictly(tmp_path):
    state = upstream_aesthetic_state()
    torch.save(state, tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    head = load_head("aesthetic", str(tmp_path / "sac+logos+ava1-l14-linearMSE.pth"), False, 0, tmp_path / "cache")
    x = embeddings(64)
    expected = torch.from_numpy(x)
    for i in (0, 2, 4, 6, 7):  # upstream's ReLUs are commented out: a chain of affine maps
        expected = expected @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
    np.testing.assert_allclose(score(head, x), expected.squeeze(1).numpy(), rtol=1e-4, atol=1e-5)
    assert not head.training and all(p.dtype == torch.float32 for p in head.parameters())


@pytest.mark.parametrize("change", ["missing", "wrong_shape", "extra"])
def test_wrong_state_dict_names_source_and_layout(tmp_path, change):
    state = upstream_aesthetic_state()
    if change == "missing":
        del state["layers.7.bias"]
    elif change == "wrong_shape":
        state["layers.0.weight"] = torch.zeros(1024, 512)
    else:
        state["layers.1.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"w\.pth: not a aesthetic head state_dict.*layers\.0\.weight \(1024, 768\)"):
        load_head("aesthetic", str(tmp_path / "w.pth"), False, 0, tmp_path)


def test_nsfw_state_dict_round_trip_keeps_vocabularies(tmp_path):
    head = load_head("nsfw", None, True, 3, tmp_path)
    x = embeddings(32)
    head.vocab_180 = encode_vocab([b"0.500000", b"%f" % x[5, 180]])
    torch.save(head.state_dict(), tmp_path / "nsfw.pth")
    again = load_head("nsfw", str(tmp_path / "nsfw.pth"), False, 0, tmp_path)
    assert len(again.vocab_180) == 2 and head_identity(again) == head_identity(head)
    np.testing.assert_array_equal(score(again, x), score(head, x))


@pytest.mark.parametrize("value,vocab,index", [
    (0.125488, [b"0.125610", b"0.125488"], 2),  # printed "%f" as tf.strings.as_string does, then matched
    (0.1254884, [b"0.125488"], 1),  # six decimals: what the print rounds away still matches
    (0.3, [b"0.125488"], 0),  # unknown
    (-1e-9, [b"0.000000"], 0),  # "-0.000000" is another string
    (-1e-9, [b"0.000000", b"-0.000000"], 2),
    (float("nan"), [b"0.125488"], 0),
    (0.5, [], 0),
])
def test_lookup_matches_string_lookup(value, vocab, index):
    found = _lookup(torch.tensor([value], dtype=torch.float64), encode_vocab(vocab))
    assert found.tolist() == [index]


@pytest.mark.parametrize("nested", [False, True], ids=["save_weights", "model_save"])
def test_nsfw_from_keras_h5_transposes_kernels(tmp_path, nested):
    pytest.importorskip("h5py")
    arrays = keras_nsfw_arrays()
    write_keras_h5(tmp_path / "nsfw.h5", arrays, nested)
    with pytest.warns(UserWarning, match="no vocabularies"):
        head = load_head("nsfw", str(tmp_path / "nsfw.h5"), False, 0, tmp_path)
    assert torch.equal(head.dense.weight, torch.from_numpy(arrays["dense"]["kernel"].T.copy()))
    x = embeddings(128)
    np.testing.assert_allclose(score(head, x), keras_reference(arrays, x), rtol=1e-4, atol=1e-6)


def test_h5_without_h5py_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "nsfw.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    monkeypatch.setitem(sys.modules, "h5py", None)  # what `import h5py` meets where it is not installed
    with pytest.raises(ImportError, match="pip install h5py"):
        load_head("nsfw", str(tmp_path / "nsfw.h5"), False, 0, tmp_path)


def test_url_downloads_once_into_cache(tmp_path):
    served, cache = tmp_path / "served", tmp_path / "cache"
    served.mkdir()
    torch.save(upstream_aesthetic_state(1), served / "sac+logos+ava1-l14-linearMSE.pth")
    with serve_directory(str(served)) as base:
        url = f"{base}/sac+logos+ava1-l14-linearMSE.pth"
        first = load_head("aesthetic", url, False, 0, cache)
    assert [p.name.endswith("-sac+logos+ava1-l14-linearMSE.pth") for p in cache.iterdir()] == [True]
    again = load_head("aesthetic", url, False, 0, cache)  # the server is gone: only the cache can answer
    assert head_identity(again) == head_identity(first)


@pytest.mark.parametrize("name", ["weights.pth", "index.html"])
def test_url_with_a_web_page_raises_and_caches_nothing(tmp_path, name):
    served, cache = tmp_path / "served", tmp_path / "cache"
    served.mkdir()
    (served / name).write_text("<!DOCTYPE html><html><body>sign in</body></html>")
    with serve_directory(str(served)) as base, pytest.raises(
            ValueError, match=rf"http://127\.0\.0\.1:\d+/{name} answered with a web page.*expected a torch state_dict"):
        load_head("aesthetic", f"{base}/{name}", False, 0, cache)
    assert list(cache.iterdir()) == []


def test_url_that_is_missing_names_the_url(tmp_path):
    with serve_directory(str(tmp_path)) as base, pytest.raises(
            ConnectionError, match=r"cannot download http://127\.0\.0\.1:\d+/gone\.pth: HTTP Error 404"):
        load_head("aesthetic", f"{base}/gone.pth", False, 0, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


def test_url_with_wrong_state_dict_names_the_url(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    torch.save({"fc.weight": torch.zeros(1, 768)}, served / "other.pth")
    with serve_directory(str(served)) as base, pytest.raises(
            ValueError, match=r"http://127\.0\.0\.1:\d+/other\.pth: not a nsfw head state_dict.*dense\.weight \(64, 768\)"):
        load_head("nsfw", f"{base}/other.pth", False, 0, tmp_path / "cache")


@pytest.mark.parametrize("kind", ["aesthetic", "nsfw"])
def test_no_weights_outside_tiny_says_which_setting(tmp_path, kind):
    with pytest.raises(ValueError, match=rf"quality\.{kind}_weights.*https://raw\.githubusercontent\.com/"):
        load_head(kind, None, False, 0, tmp_path)


@pytest.mark.parametrize("kind,low,high", [("aesthetic", 4.8, 5.2), ("nsfw", 0.0025, 0.0035)])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_tiny_heads_give_harmless_values(tmp_path, kind, low, high, seed):
    head = load_head(kind, None, True, seed, tmp_path)
    values = score(head, embeddings(2000, seed))
    assert values.dtype == np.float32 and values.shape == (2000,)
    assert low < values.min() and values.max() < high
    assert head_identity(load_head(kind, None, True, seed, tmp_path)) == head_identity(head)
    assert head_identity(load_head(kind, None, True, seed + 1, tmp_path)) != head_identity(head)


@pytest.mark.parametrize("head", [AestheticHead(), NsfwHead()], ids=["aesthetic", "nsfw"])
def test_score_on_float16_memmap_equals_forward(tmp_path, head):
    head.eval()
    x = embeddings(1000)
    if isinstance(head, NsfwHead):  # some rows hit the vocabulary, the rest do not
        head.vocab_316 = encode_vocab([b"%f" % v for v in x[::3, 316].astype(np.float16)])
        assert (_lookup(torch.from_numpy(x[:, 316].astype(np.float16).astype(np.float32)), head.vocab_316) > 0).sum() >= 334
    stored = np.lib.format.open_memmap(tmp_path / "emb.npy", mode="w+", dtype=np.float16, shape=x.shape)
    stored[:] = x
    stored.flush()
    rows = np.load(tmp_path / "emb.npy", mmap_mode="r")
    with torch.no_grad():
        direct = head(torch.from_numpy(np.asarray(rows, dtype=np.float32))).numpy()
    # 300-row blocks against one 1000-row pass: BLAS may sum in another order, so allow one float32 ulp
    np.testing.assert_allclose(score(head, rows, batch=300), direct, rtol=3e-7, atol=1e-7)


def test_score_rejects_other_widths():
    with pytest.raises(ValueError, match=r"expected \(768,\)"):
        score(AestheticHead().eval(), np.zeros((4, 512), np.float16))


LAION_NSFW = Path(__file__).parent / "fixtures" / "laion_nsfw"  # LAION's SavedModel zip and TensorFlow's outputs
VOCAB_SIZES = [10425, 2266, 2190, 2293, 2241]  # the five StringLookup vocabularies of saved_model.pb


def laion_nsfw_reference() -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (256, 768) float64, punsafe (256,) float32 as TensorFlow 2.21 computes them): fixtures/laion_nsfw."""
    with np.load(LAION_NSFW / "nsfw_reference.npz") as arrays:
        return arrays["embeddings"], arrays["punsafe"]


@pytest.mark.parametrize("form", ["zip", "folder"])
def test_laion_nsfw_saved_model_gives_tensorflows_outputs(tmp_path, form):
    """The default detector, read without TensorFlow from LAION's file as published, scores 256 inputs as
    TensorFlow does, through `score` (float32, as the pipeline calls it)."""
    source = LAION_NSFW / "clip_autokeras_binary_nsfw.zip"
    if form == "folder":
        with zipfile.ZipFile(source) as z:
            z.extractall(tmp_path)
        source = tmp_path / "clip_autokeras_binary_nsfw"
    head = load_head("nsfw", str(source), False, 0, tmp_path / "cache")
    assert [len(getattr(head, f"vocab_{c}")) for c in CATEGORICAL] == VOCAB_SIZES
    x, expected = laion_nsfw_reference()
    got = score(head, x)
    assert got.dtype == np.float32 and got.shape == (256,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)  # measured: 3e-8
    assert expected.min() < 1e-5 and expected.max() > 0.25  # the outputs span more than one corner of the sigmoid


def test_laion_nsfw_reference_exercises_the_vocabularies(tmp_path):
    """Half the reference inputs (even rows) carry vocabulary values in the five categorical columns: they are drawn
    from all five vocabularies together, so a row hits its own column's vocabulary in 0 to 4 of them. Those hits
    are what the agreement above rests on: with the lookups emptied the reader misses TensorFlow by up to 0.077,
    so the test cannot pass for a reader that only gets the dense layers right."""
    head = load_head("nsfw", str(LAION_NSFW / "clip_autokeras_binary_nsfw.zip"), False, 0, tmp_path)
    x, expected = laion_nsfw_reference()
    hits = np.stack([_lookup(torch.from_numpy(x[:, c].astype(np.float32)), getattr(head, f"vocab_{c}")).numpy() > 0
                     for c in CATEGORICAL], axis=1)
    assert hits[::2].sum(axis=0).tolist() == [90, 21, 16, 21, 18]  # per column, over the 128 even rows
    assert hits[::2].any(axis=1).sum() == 106 and hits[1::2].any(axis=1).sum() == 12  # odd rows: chance hits only
    for c in CATEGORICAL:
        setattr(head, f"vocab_{c}", encode_vocab([]))
    off = np.abs(score(head, x) - expected)
    assert off[::2].max() > 0.05 and (off[::2] > 1e-6).sum() >= 90
    assert not (off > 1e-6)[~hits.any(axis=1)].any()  # a row that hits no vocabulary owes nothing to them
    np.testing.assert_array_equal(off[1::2] > 1e-6, hits[1::2].any(axis=1))  # exactly the odd rows that hit by chance


@pytest.mark.skipif(not os.environ.get("PARIS_AESTHETIC_PTH"),
                    reason="set PARIS_AESTHETIC_PTH to sac+logos+ava1-l14-linearMSE.pth to check it (no reference outputs)")
def test_upstream_aesthetic_file_loads_strictly(tmp_path):
    head = load_head("aesthetic", os.environ["PARIS_AESTHETIC_PTH"], False, 0, tmp_path)  # strict=True inside
    np.testing.assert_array_equal(score(head, embeddings(256)), score(head, embeddings(256)))
