"""The LAION NSFW detector's Keras files read into the state_dict of models/heads.NsfwHead, without TensorFlow or
Keras: a Keras .h5 (through h5py; it holds no vocabularies) or the clip_autokeras_binary_nsfw SavedModel (.zip or
folder, through models/saved_model.py), whose StringLookup vocabularies become NUL-padded uint8 buffers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .saved_model import call_inputs, lookup_tables, read_tensor_bundle, saved_model_files

CATEGORICAL = (180, 316, 413, 440, 644)  # the NSFW model's columns that autokeras encoded as categories
KEY_BYTES = 12  # room for a "%f" string of an embedding value ("-0.375000" is 9)


def encode_vocab(strings: list[bytes]) -> torch.Tensor:
    """Vocabulary strings -> the (n, KEY_BYTES) uint8 buffer NsfwHead keeps."""
    if any(len(s) > KEY_BYTES for s in strings):
        raise ValueError(f"a vocabulary string is longer than {KEY_BYTES} bytes")
    return torch.from_numpy(np.array(strings, dtype=f"S{KEY_BYTES}").view(np.uint8).reshape(len(strings), KEY_BYTES))


def nsfw_state_from_h5(path: Path) -> dict[str, torch.Tensor]:
    """The NsfwHead state_dict from Keras weights in .h5 (model.save or save_weights layout). An .h5 carries no
    StringLookup vocabulary, so the five categorical columns always read 0 (unknown): prefer the SavedModel zip."""
    try:
        import h5py
    except ImportError:
        raise ImportError("reading Keras .h5 weights needs h5py: pip install h5py") from None
    with h5py.File(path, "r") as f:
        root = f.get("model_weights", f)  # model.save nests the weights; save_weights does not
        weights = {}
        for layer in root.attrs["layer_names"]:
            group = root[_text(layer)]
            for name in group.attrs.get("weight_names", []):
                weights[_text(name).split(":")[0]] = np.asarray(group[_text(name)])
    warnings.warn(f"{path}: Keras .h5 holds no vocabularies for NSFW columns {CATEGORICAL}; they read as unknown")

    def array(name: str) -> np.ndarray:
        if name not in weights:
            raise ValueError(f"{path}: no {name} weights in the .h5: not the LAION ViT-L/14 NSFW model")
        return weights[name]

    return _state_from_arrays(array, ([],) * len(CATEGORICAL))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _state_from_arrays(array, vocab: tuple) -> dict[str, torch.Tensor]:
    """The NsfwHead state_dict from Keras names (normalization/mean, dense/kernel, ...); Dense kernels are
    (in, out)."""
    state = {"mean": array("normalization/mean"), "variance": array("normalization/variance")}
    for layer in ("dense", "dense_1", "dense_2", "dense_3"):
        state[f"{layer}.weight"] = np.asarray(array(f"{layer}/kernel")).T
        state[f"{layer}.bias"] = array(f"{layer}/bias")
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)).reshape(-1) if k in ("mean", "variance")
             else torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}
    state.update({f"vocab_{c}": encode_vocab(list(v)) for c, v in zip(CATEGORICAL, vocab)})
    return state


def nsfw_state_from_saved_model(path: Path) -> dict[str, torch.Tensor]:
    """The NsfwHead state_dict from clip_autokeras_binary_nsfw (the .zip or its extracted folder)."""
    files = saved_model_files(path)

    def find(suffix: str) -> bytes:
        hits = [v for k, v in files.items() if k.endswith(suffix)]
        if len(hits) != 1:
            raise ValueError(f"{path}: expected one {suffix} in the NSFW SavedModel, found {len(hits)}")
        return hits[0]

    bundle = read_tensor_bundle(find("variables/variables.index"), find("variables/variables.data-00000-of-00001"))
    names = {"normalization/mean": "layer_with_weights-1/mean", "normalization/variance": "layer_with_weights-1/variance"}
    for i, layer in enumerate(("dense", "dense_1", "dense_2", "dense_3")):
        names.update({f"{layer}/kernel": f"layer_with_weights-{i + 2}/kernel",
                      f"{layer}/bias": f"layer_with_weights-{i + 2}/bias"})

    def array(name: str) -> np.ndarray:
        key = f"{names[name]}/.ATTRIBUTES/VARIABLE_VALUE"
        if key not in bundle:
            raise ValueError(f"{path}: no {key} in the variables: not the LAION ViT-L/14 NSFW model")
        return bundle[key]

    return _state_from_arrays(array, saved_vocabularies(find("saved_model.pb"), path))


def saved_vocabularies(saved_model: bytes, source: Path) -> tuple[list[bytes], ...]:
    """The StringLookup vocabularies of CATEGORICAL, from the table initialisers of the saved graph.

    The serving call takes the tables in the encoding's column order, which gives each vocabulary its column."""
    serving = call_inputs(saved_model, "serving_default_input_1")
    tables = lookup_tables(saved_model)
    if serving is None or len(tables) != len(CATEGORICAL):
        raise ValueError(f"{source}: expected {len(CATEGORICAL)} lookup tables in saved_model.pb, "
                         f"found {len(tables)}: not the LAION ViT-L/14 NSFW model")
    vocab = []
    for table in sorted(tables, key=serving.index):
        keys, values = tables[table]
        if not np.array_equal(values, np.arange(1, len(keys) + 1)):
            raise ValueError(f"{source}: lookup {table} does not number its vocabulary 1..n")
        vocab.append(keys)
    return tuple(vocab)
