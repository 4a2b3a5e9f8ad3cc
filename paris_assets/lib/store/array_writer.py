"""Writing chunked arrays: ChunkedArrayWriter (atomic chunks, then index.json) and link_chunk_store (hard links)."""

from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from .array_format import FORMAT, INDEX, VERSION, chunk_file, read_header
from .chunks import ChunkStore


class ChunkedArrayWriter:
    """Builds a chunked array in a local folder. Chunk i holds rows [i * chunk_rows, (i + 1) * chunk_rows); every
    chunk but the last is full. Each chunk appears atomically (written under a temporary name, then renamed), so
    a writer killed part-way leaves whole chunks only, and `done(i)` tells a resumed run what is left to do.
    `finish()` checks the chunks agree and writes index.json, which is what makes the folder an array."""

    def __init__(self, folder: str | Path, chunk_rows: int):
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
        self.folder, self.chunk_rows = Path(folder), chunk_rows
        self.folder.mkdir(parents=True, exist_ok=True)
        self._pending: list[np.ndarray] = []  # rows appended but not yet a full chunk
        self._appended = 0

    def path(self, i: int) -> Path:
        return self.folder / chunk_file(i)

    def done(self, i: int) -> bool:
        return self.path(i).exists()

    def write_chunk(self, i: int, rows: np.ndarray) -> None:
        """Write chunk i whole, atomically."""
        with self.chunk(i, len(rows), rows.dtype, rows.shape[1:]) as out:
            out[:] = rows

    @contextmanager
    def chunk(self, i: int, n_rows: int, dtype, row_shape: tuple[int, ...] = ()) -> Iterator[np.ndarray]:
        """Chunk i as a writable memory map to fill batch by batch (a 121 MB chunk of CLIP tokens need not be in
        memory at once); it takes its name only when the block exits without an exception."""
        if n_rows > self.chunk_rows or n_rows < 1:
            raise ValueError(f"chunk {i}: {n_rows} rows; a chunk holds 1 to {self.chunk_rows}")
        tmp = self.folder / f".{chunk_file(i)}.{uuid.uuid4().hex}.tmp"  # unique: writers of one chunk never share it
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=(n_rows, *row_shape))
        try:
            yield out
            out.flush()
            del out
            os.replace(tmp, self.path(i))
        finally:
            tmp.unlink(missing_ok=True)

    def append(self, rows: np.ndarray) -> None:
        """Add rows after those appended before, writing each chunk as soon as it is full (one chunk of rows held
        at most). For producers whose batches do not line up with chunks."""
        self._pending.append(np.asarray(rows))
        self._appended += len(rows)
        held = sum(len(p) for p in self._pending)
        while held >= self.chunk_rows:
            block = np.concatenate(self._pending)
            self.write_chunk((self._appended - held) // self.chunk_rows, block[:self.chunk_rows])
            self._pending, held = [block[self.chunk_rows:]], held - self.chunk_rows

    def finish(self, n_rows: int | None = None, dtype=None, row_shape: tuple[int, ...] = ()) -> dict:
        """Write what `append` still holds, check the chunks (numbered 0..n-1 without a gap, all full but the
        last, one dtype and row shape, `n_rows` rows in all when given) and write index.json; returns the index.
        An array of no rows has no chunk: give its `dtype` (and `row_shape`)."""
        held = sum(len(p) for p in self._pending)
        if held:
            self.write_chunk((self._appended - held) // self.chunk_rows, np.concatenate(self._pending))
        self._pending = []
        files = sorted(p.name for p in self.folder.glob("chunk-*.npy"))
        if files != [chunk_file(i) for i in range(len(files))]:
            raise ValueError(f"{self.folder}: chunks are not numbered 0..{len(files) - 1} without a gap: {files[:5]}...")
        chunks, start, kind = [], 0, None  # kind: (dtype, row shape) of chunk 0, which every chunk must share
        for i, name in enumerate(files):
            shape, chunk_dtype, _offset = read_header(self.folder / name)
            if kind is not None and (chunk_dtype, shape[1:]) != kind:
                raise ValueError(f"{self.folder / name}: {chunk_dtype} rows of {shape[1:]}, chunk 0 holds {kind}")
            kind = (chunk_dtype, shape[1:])
            if i < len(files) - 1 and shape[0] != self.chunk_rows:
                raise ValueError(f"{self.folder / name}: {shape[0]} rows; every chunk but the last holds "
                                 f"{self.chunk_rows}")
            chunks.append({"file": name, "start": start, "stop": start + shape[0],
                           "bytes": (self.folder / name).stat().st_size})
            start += shape[0]
        if kind is None and dtype is None:
            raise ValueError(f"{self.folder}: no chunk, so no dtype: pass finish(dtype=...) for an empty array")
        dtype, row_shape = kind or (np.dtype(dtype), tuple(row_shape))
        if n_rows is not None and start != n_rows:
            raise ValueError(f"{self.folder}: the chunks hold {start} rows, expected {n_rows}")
        index = {"format": FORMAT, "version": VERSION, "dtype": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                 "shape": [start, *row_shape], "chunk_rows": self.chunk_rows, "chunks": chunks}
        tmp = self.folder / f".{INDEX}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(index, indent=1))
        os.replace(tmp, self.folder / INDEX)
        return index


def link_chunk_store(store: ChunkStore, name: str, folder: str | Path) -> dict:
    """The chunked array `name` of a finished ChunkStore (`chunk-NNNNNN.<name>.npy`), as an array folder: each
    chunk file hard-linked into `folder` under its array name, no byte copied and nothing assembled. The store
    keeps its own links (a resumed run still finds its chunks) until it is removed. Returns the index."""
    writer = ChunkedArrayWriter(folder, store.chunk_size)
    for i in range(store.n_chunks):
        source = store.folder / f"chunk-{i:06d}.{name}.npy"
        if not store.done(i) or not source.exists():
            raise ValueError(f"{store.folder}: chunk {i} of {name!r} is not finished; run every chunk first")
        writer.path(i).unlink(missing_ok=True)
        os.link(source, writer.path(i))  # same filesystem: both live in the data root's staging folder
    return writer.finish(n_rows=store.n_rows)
