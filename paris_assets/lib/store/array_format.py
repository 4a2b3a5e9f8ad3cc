"""The chunked array format on disk: index.json's name and version, chunk file names, npy headers from first bytes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

FORMAT, VERSION = "paris-chunked-array", 1
INDEX = "index.json"
HEAD_BYTES = 512  # a first read of a chunk's npy header; numpy's headers for plain dtypes are 128 bytes


def chunk_file(i: int) -> str:
    return f"chunk-{i:06d}.npy"


def read_header(path: str | Path, fs=None) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the data) of a C-ordered .npy file, from its first bytes only."""
    if fs is None:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
    else:
        head = fs.cat_file(path, start=0, end=HEAD_BYTES)
    return parse_header(head, lambda end: fs.cat_file(path, start=0, end=end) if fs else first_bytes(path, end),
                        str(path))


def first_bytes(path: str | Path, n: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def parse_header(head: bytes, more, name: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Parse an npy header from its first bytes; `more(n)` returns the first n bytes when the header is longer."""
    fh = io.BytesIO(head)
    try:
        major, _minor = np.lib.format.read_magic(fh)
    except ValueError as exc:
        raise ValueError(f"{name} is not a .npy file: {exc}") from None
    length_bytes = 2 if major == 1 else 4
    needed = 8 + length_bytes + int.from_bytes(head[8:8 + length_bytes], "little")
    if needed > len(head):
        fh = io.BytesIO(more(needed))
        np.lib.format.read_magic(fh)
    reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = reader(fh)
    if fortran and len(shape) > 1:
        raise ValueError(f"{name} is Fortran-ordered: rows are not contiguous; save it C-ordered")
    if dtype.hasobject:
        raise ValueError(f"{name} holds Python objects: arrays here are plain numbers or fixed-width text")
    return tuple(shape), dtype, fh.tell()
