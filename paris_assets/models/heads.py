"""LAION's two quality heads over CLIP ViT-L/14 image embeddings ((N, 768), L2-normalised): aesthetic score and
punsafe. Both are re-implemented in torch so that the upstream weight files load as published.

Aesthetic: christophschuhmann/improved-aesthetic-predictor, `MLP` in simple_inference.py. Five Linear layers
with Dropout between the first four and no activations (upstream comments its ReLUs out); the state_dict of
sac+logos+ava1-l14-linearMSE.pth has keys layers.{0,2,4,6,7}.{weight,bias} and loads here with strict=True.

NSFW: LAION-AI/CLIP-based-NSFW-Detector, clip_autokeras_binary_nsfw.zip (a Keras 2.8 SavedModel, not an .h5).
Its keras_metadata.pb gives the graph: input (768, float64) -> autokeras MultiCategoryEncoding -> Normalization
(per-feature mean, variance) -> Dense 64, ReLU -> Dense 512, ReLU -> Dense 256, ReLU -> Dense 1 -> sigmoid.
The encoding passes 763 columns through (NaN -> 0) but treats columns 180, 316, 413, 440 and 644 as categories
(autokeras took them for such when it trained on float16 embeddings): each value is printed with "%f" and looked
up in a StringLookup vocabulary (10425, 2266, 2190, 2293, 2241 strings; index i+1 for the i-th, 0 when unknown).
The vocabularies live as constants in saved_model.pb, the rest in the variables bundle; both are read without
TensorFlow (models/nsfw_keras.py through models/saved_model.py). The lookup semantics are read from the saved graph
(default value 0, indices 1..n); test_heads checks the whole reader against TensorFlow 2.21's outputs for 256 inputs
(paris_assets_tests/fixtures/laion_nsfw/, half of them hitting the vocabularies): within 3e-8.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from .nsfw_keras import CATEGORICAL, KEY_BYTES, encode_vocab, nsfw_state_from_h5, nsfw_state_from_saved_model
from .saved_model import is_saved_model_zip

# Pinned to the commits that hold these files, so a later push upstream cannot change the scores.
AESTHETIC_URL = ("https://raw.githubusercontent.com/christophschuhmann/improved-aesthetic-predictor/"
                 "6934dd81792f086e613a121dbce43082cb8be85e/sac+logos+ava1-l14-linearMSE.pth")
NSFW_URL = ("https://raw.githubusercontent.com/LAION-AI/CLIP-based-NSFW-Detector/"
            "d6bb8fe31fd4aecbfed7dfb62df4fe5858bfc014/clip_autokeras_binary_nsfw.zip")
WIDTH = 768  # CLIP ViT-L/14 projection width: the only input both heads were trained on
Kind = Literal["aesthetic", "nsfw"]


class AestheticHead(nn.Module):
    """LAION improved aesthetic predictor; forward: (N, 768) float32 -> (N,) scores, about 1-10."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(WIDTH, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                    nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)


class NsfwHead(nn.Module):
    """LAION CLIP-based NSFW detector (ViT-L/14); forward: (N, 768) float32 -> (N,) punsafe in [0, 1].

    `vocab_<column>` holds the StringLookup vocabulary of each categorical column, one "%f" string a row
    (NUL-padded bytes); row i has index i + 1, anything else 0."""

    def __init__(self, vocab_sizes: tuple[int, ...] = (0,) * len(CATEGORICAL)):
        super().__init__()
        self.register_buffer("mean", torch.zeros(WIDTH))
        self.register_buffer("variance", torch.ones(WIDTH))
        for column, n in zip(CATEGORICAL, vocab_sizes):
            self.register_buffer(f"vocab_{column}", torch.zeros(n, KEY_BYTES, dtype=torch.uint8))
        self.dense, self.dense_1 = nn.Linear(WIDTH, 64), nn.Linear(64, 512)
        self.dense_2, self.dense_3 = nn.Linear(512, 256), nn.Linear(256, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.where(torch.isnan(x), torch.zeros_like(x), x)  # a new tensor: the lookups below write into it
        for column in CATEGORICAL:
            x[:, column] = _lookup(x[:, column], getattr(self, f"vocab_{column}"))
        # Keras 2.8 Normalization: (x - mean) / max(sqrt(variance), epsilon)
        x = (x - self.mean) / torch.sqrt(self.variance).clamp(min=1e-7)
        x = torch.relu(self.dense(x))
        x = torch.relu(self.dense_1(x))
        x = torch.relu(self.dense_2(x))
        return torch.sigmoid(self.dense_3(x)).squeeze(-1)


def _lookup(values: torch.Tensor, vocab: torch.Tensor) -> torch.Tensor:
    """StringLookup of `values` printed as tf.strings.as_string does ("%f"): index i + 1 of a match, else 0."""
    text = np.char.mod("%f", values.detach().cpu().double().numpy()).astype(f"S{KEY_BYTES}")
    keys = np.ascontiguousarray(vocab.cpu().numpy()).view(f"S{KEY_BYTES}").ravel()
    if len(keys) == 0:
        return torch.zeros_like(values)
    order = np.argsort(keys, kind="stable")
    at = np.searchsorted(keys[order], text).clip(max=len(keys) - 1)
    found = np.where(keys[order][at] == text, order[at] + 1, 0)
    return torch.from_numpy(found.astype(np.float32)).to(values)


def load_head(kind: Kind, source: str | None, tiny: bool, seed: int, cache_dir: Path) -> nn.Module:
    """The `kind` head from `source` (a path or an http(s) URL, downloaded once into cache_dir); with no source,
    the tiny profile's seeded random head. Eval mode, float32, CPU."""
    if kind not in ("aesthetic", "nsfw"):
        raise ValueError(f"unknown head {kind!r}: expected 'aesthetic' or 'nsfw'")
    if source is None:
        if not tiny:
            url = AESTHETIC_URL if kind == "aesthetic" else NSFW_URL
            raise ValueError(f"no weights for the {kind} head: set quality.{kind}_weights to a path or an "
                             f"http(s) URL (the public one is {url})")
        head = tiny_head(kind, seed)
    else:
        is_url = urllib.parse.urlparse(source).scheme in ("http", "https")
        path = download(source, Path(cache_dir)) if is_url else Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{kind} head weights not found: {source}")
        head = read_head(kind, path, source)
    return head.float().cpu().eval()


def tiny_head(kind: Kind, seed: int) -> nn.Module:
    """A seeded random head of the real class for the tiny profile."""
    with torch.random.fork_rng(devices=[]):  # seeded without moving the caller's random stream
        torch.manual_seed(seed)
        head = AestheticHead() if kind == "aesthetic" else NsfwHead()
    last = head.layers[-1] if kind == "aesthetic" else head.dense_3
    with torch.no_grad():
        # Harmless values (aesthetic ~5.0, punsafe ~0.003 = sigmoid(-5.8)) so that no filter fires by accident
        # in a demo: the random layers before it move the output by a few hundredths at most.
        last.weight.mul_(0.1)
        last.bias.fill_(5.0 if kind == "aesthetic" else float(np.log(0.003 / 0.997)))
    return head


def download(url: str, cache_dir: Path) -> Path:
    """`url` into cache_dir once (atomic rename), then the cached file; a web page instead of weights raises."""
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path)) or "weights"
    target = cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            kind = response.headers.get_content_type()
            first = response.read(1 << 16)
            if kind == "text/html" or first.lstrip()[:1] == b"<":
                raise ValueError(f"{url} answered with a web page ({kind}), not weights: expected a torch "
                                 "state_dict (.pth), a Keras .h5 or the LAION SavedModel .zip; use the raw file URL")
            while first:
                out.write(first)
                first = response.read(1 << 20)
        os.replace(partial, target)
    except urllib.error.URLError as exc:  # HTTPError's own text does not name the URL
        raise ConnectionError(f"cannot download {url}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return target


def read_head(kind: Kind, path: Path, source: str) -> nn.Module:
    """A head from a torch state_dict, a Keras .h5 or the NSFW SavedModel (.zip or folder), by content."""
    if path.is_dir():
        if kind != "nsfw":
            raise ValueError(f"{source}: a folder, but the aesthetic head is one .pth file")
        return head_from_state_dict(kind, nsfw_state_from_saved_model(path), str(path))
    with open(path, "rb") as f:
        magic = f.read(8)
    if kind == "nsfw" and zipfile.is_zipfile(path) and is_saved_model_zip(path):  # torch.save writes zips too
        return head_from_state_dict(kind, nsfw_state_from_saved_model(path), str(path))
    if magic == b"\x89HDF\r\n\x1a\n":
        if kind != "nsfw":
            raise ValueError(f"{source}: a Keras .h5 file, but only the nsfw head ships as Keras")
        return head_from_state_dict(kind, nsfw_state_from_h5(path), str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        raise ValueError(f"{source}: not a torch state_dict ({type(exc).__name__}: {exc}); expected "
                         f"{_layout(AestheticHead() if kind == 'aesthetic' else NsfwHead())}") from None
    return head_from_state_dict(kind, state, source)


def head_from_state_dict(kind: Kind, state: dict, source: str) -> nn.Module:
    """The head whose strict state_dict is `state`; a wrong key or shape raises naming `source`."""
    if not isinstance(state, dict):
        raise TypeError(f"{source}: holds a {type(state).__name__}, expected a state_dict")
    if kind == "aesthetic":
        head = AestheticHead()
    else:
        head = NsfwHead(tuple(len(state.get(f"vocab_{c}", ())) for c in CATEGORICAL))
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{source}: not a {kind} head state_dict; expected {_layout(head)}. {exc}") from None
    return head


def _layout(head: nn.Module) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in head.state_dict().items() if not k.startswith("vocab_"))


def score(head: nn.Module, embeddings, batch: int = 65536) -> np.ndarray:
    """(N,) float32 scores of `embeddings` ((N, 768), any row-sliceable array, e.g. a float16 memmap), read
    `batch` rows at a time so that the whole array never sits in memory as float32."""
    n = len(embeddings)
    out = np.empty(n, dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, batch):
            rows = np.asarray(embeddings[start:start + batch], dtype=np.float32)
            if rows.ndim != 2 or rows.shape[1] != WIDTH:
                raise ValueError(f"embeddings rows have shape {rows.shape[1:]}, expected ({WIDTH},): "
                                 "the heads read CLIP ViT-L/14 image embeddings")
            out[start:start + len(rows)] = head(torch.from_numpy(rows)).numpy()
    return out


def head_identity(head: nn.Module) -> str:
    """A short sha256 of the head's class and tensors, for provenance."""
    digest = hashlib.sha256(type(head).__name__.encode())
    for name, tensor in sorted(head.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
