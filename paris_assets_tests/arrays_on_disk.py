"""How a user reads the arrays the assets write, with numpy alone: a chunked array folder is index.json plus
plain `.npy` chunks; `np.load` each chunk in the index's order and concatenate."""

import json
from pathlib import Path

import numpy as np

from paris_assets.lib.store.arrays import open_named


def read_with_numpy(folder: Path) -> np.ndarray:
    """The whole array of a chunked folder, read by numpy and json only (no code of ours)."""
    index = json.loads((folder / "index.json").read_text())
    dtype = np.lib.format.descr_to_dtype(index["dtype"])
    parts = [np.load(folder / chunk["file"], allow_pickle=False) for chunk in index["chunks"]]
    array = np.concatenate(parts) if parts else np.empty(index["shape"], dtype)
    assert list(array.shape) == index["shape"] and array.dtype == dtype, (folder, array.shape, index["shape"])
    return array


def assert_chunked_and_plain(folder: Path, name: str) -> np.ndarray:
    """`<folder>/<name>/` is a chunked array (and no `<name>.npy` beside it) that numpy alone reads as the
    project's reader does; returns it."""
    assert not (folder / f"{name}.npy").exists() and (folder / name / "index.json").is_file(), sorted(folder.iterdir())
    plain = read_with_numpy(folder / name)
    ours = open_named(str(folder), name)
    assert ours.shape == plain.shape and ours.dtype == plain.dtype
    np.testing.assert_array_equal(np.asarray(ours), plain)
    return plain
