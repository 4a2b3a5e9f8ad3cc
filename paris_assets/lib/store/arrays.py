"""Chunked arrays, read where they lie.

An array of N rows is a folder: fixed-size row chunks as plain `.npy` files (`chunk-000000.npy`, ...; numpy
reads each with no code of ours) and `index.json` (format, dtype, full shape, chunk_rows, and per chunk its
file, first and last row, and size in bytes). It is never assembled into one file: CLIP tokens for 11M images
are 1.3 TB, and a copy of that is hours of disk or network for nothing.

`ChunkedArrayWriter` builds such a folder in a local staging folder, one atomic chunk at a time;
`link_chunk_store` turns the finished chunks of a `ChunkStore` into one by hard-linking them (no byte copied).
`open_array` is the one reader for every consumer, of a chunked folder or a plain monolithic `.npy`: it reads
each chunk's npy header once, then only the byte ranges of the rows asked, neighbouring rows coalesced into one
range: positional reads (`preadv`) straight into the result on the local disk, one concurrent `cat_ranges` call
(a ranged GET per range) on any other fsspec filesystem (s3://, memory://). Results are always fresh arrays:
nothing keeps a file mapping, or its resident pages, alive.

Why not memory maps locally: on these machines 4,096 random rows of a sparse 11M x 1024 float16 array took
0.9-13.8 s through per-chunk `np.load(mmap_mode="r")` (a page fault and a read-around per row) and 0.07-0.12 s
through `pread`; the bytes read and the memory held are the same or less.

The format (index.json, chunk names, npy headers) is array_format.py's, the writing array_writer.py's; this
module reads, and selects rows of what it reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import fsspec
import numpy as np

from .array_format import FORMAT, HEAD_BYTES, INDEX, VERSION, chunk_file, first_bytes, parse_header, read_header
from .array_writer import ChunkedArrayWriter, link_chunk_store
from .storage import is_local, local_path

# the names this module offered before the format and the writer had their own modules
__all__ = ["COALESCE_BYTES", "FORMAT", "HEAD_BYTES", "INDEX", "VERSION", "ChunkedArray", "ChunkedArrayWriter",
           "RowSelection", "chunk_file", "concat_arrays", "is_chunked", "link_chunk_store", "open_array",
           "open_named", "open_npy", "parse_header", "read_header", "select_rows"]

COALESCE_BYTES = 64 * 1024  # two row runs of a chunk closer than this are fetched as one range (one request)


class ChunkedArray:
    """A read-only array over chunk files, local or remote. `a[i]`, `a[start:stop:step]`, `a[rows]` (integers in
    any order, repeats allowed, or a boolean mask) return numpy arrays holding only the rows asked, in the order
    asked; `iter_blocks(max_bytes)` walks all rows in blocks of at most max_bytes. `np.asarray(a)` reads
    everything: for small arrays (labels, ids), never for embeddings."""

    def __init__(self, path: str, files: list[str], starts: list[int], shape: tuple[int, ...], dtype: np.dtype,
                 fs=None, offsets: dict[int, int] | None = None):
        self.path, self.files, self.fs = path, files, fs
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.bounds = np.asarray([*starts, shape[0]], dtype=np.int64)  # chunk c holds rows bounds[c]:bounds[c+1]
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._offsets = dict(offsets or {})  # where each chunk's data starts, from its header

    def __repr__(self) -> str:
        return f"ChunkedArray({self.path!r}, shape={self.shape}, dtype={self.dtype}, chunks={len(self.files)})"

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if copy is False:
            raise ValueError("a ChunkedArray is read into a new array: it cannot be viewed without a copy")
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key) -> np.ndarray:
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"row {key} is outside an array of {n} rows")
            return self._read_range(i, i + 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return self._read_range(start, max(start, stop))
            return self.take(np.arange(start, stop, step))
        if isinstance(key, tuple) or key is Ellipsis:
            raise TypeError("index rows only (an int, a slice or an array of rows), then slice the result")
        return self.take(key)

    def take(self, rows) -> np.ndarray:
        """The rows named by an integer array (any order, repeats) or a boolean mask, in that order."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (self.shape[0],):
                raise IndexError(f"a boolean mask of shape {rows.shape} for an array of {self.shape[0]} rows")
            rows = np.flatnonzero(rows)
        if rows.size and not np.issubdtype(rows.dtype, np.integer):
            raise IndexError(f"rows must be integers or a boolean mask, not {rows.dtype}")
        rows = rows.astype(np.int64, copy=False)
        rows = np.where(rows < 0, rows + self.shape[0], rows)
        if rows.size and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise IndexError(f"rows outside an array of {self.shape[0]} rows")
        unique, inverse = np.unique(rows, return_inverse=True)
        return self._gather(unique)[inverse.reshape(rows.shape)]

    def iter_blocks(self, max_bytes: int = 64 << 20, start: int = 0,
                    stop: int | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
        """(start, stop, rows) for consecutive blocks of rows [start, stop), each at most max_bytes (one row at
        least): a pass over 1.3 TB holds one block at a time."""
        stop = self.shape[0] if stop is None else min(stop, self.shape[0])
        step = max(1, max_bytes // max(1, self.row_bytes))
        for a in range(start, stop, step):
            b = min(stop, a + step)
            yield a, b, self._read_range(a, b)

    # Both reads below split the request into runs of rows within one chunk, then read every run's bytes at once.

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        pieces = []  # (chunk, first row in the chunk, last row + 1, where in out)
        first = int(np.searchsorted(self.bounds, start, side="right")) - 1
        c = first
        while c < len(self.files) and self.bounds[c] < stop:
            lo, hi = max(start, self.bounds[c]), min(stop, self.bounds[c + 1])
            if hi > lo:
                pieces.append((c, lo - self.bounds[c], hi - self.bounds[c], lo - start))
            c += 1
        self._read_runs([(c, a, b) for c, a, b, _at in pieces], [out[at:at + b - a] for _c, a, b, at in pieces])
        return out

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        """Rows given sorted and unique: runs of neighbouring rows in a chunk (gaps under COALESCE_BYTES
        bridged) are read as one range each."""
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        if not len(rows):
            return out
        chunk = np.searchsorted(self.bounds, rows, side="right") - 1
        local = rows - self.bounds[chunk]
        gap = max(1, COALESCE_BYTES // max(1, self.row_bytes))
        breaks = np.flatnonzero((np.diff(chunk) != 0) | (np.diff(local) > gap)) + 1
        run_starts, run_stops = np.r_[0, breaks], np.r_[breaks, len(rows)]
        runs = [(int(chunk[s]), int(local[s]), int(local[e - 1]) + 1) for s, e in zip(run_starts, run_stops)]
        buffers = [np.empty((b - a, *self.shape[1:]), self.dtype) for _c, a, b in runs]
        self._read_runs(runs, buffers)
        for (_c, a, _b), s, e, data in zip(runs, run_starts, run_stops, buffers):
            out[s:e] = data[local[s:e] - a]
        return out

    def _read_runs(self, runs: list[tuple[int, int, int]], outs: list[np.ndarray]) -> None:
        """Fill outs[i] with rows a:b of chunk c for runs[i] = (c, a, b): positional reads straight into it on the
        local disk, one concurrent `cat_ranges` call (a ranged GET per run) on an object store."""
        self._read_offsets(sorted({c for c, _a, _b in runs}))
        starts = [self._offsets[c] + a * self.row_bytes for c, a, _b in runs]
        if self.fs is not None:
            ends = [self._offsets[c] + b * self.row_bytes for c, _a, b in runs]
            blobs = self.fs.cat_ranges([self._path(c) for c, _a, _b in runs], starts, ends, on_error="raise") \
                if runs else []
            for blob, out in zip(blobs, outs):
                out[...] = np.frombuffer(blob, self.dtype).reshape(out.shape)
            return
        fds: dict[int, int] = {}
        try:
            for (c, _a, _b), start, out in zip(runs, starts, outs):
                if c not in fds:
                    fds[c] = os.open(self._path(c), os.O_RDONLY)
                _pread_into(fds[c], out, start, self._path(c))
        finally:
            for fd in fds.values():
                os.close(fd)

    def _path(self, c: int) -> str:
        if not self.path:  # a concatenation: every file named in full
            return self.files[c]
        return f"{self.path}/{self.files[c]}" if self.files[c] else self.path

    def _read_offsets(self, chunks: list[int]) -> None:
        """Read the npy headers of chunks not read before (on an object store all in one call) and check each
        against the index."""
        todo = [c for c in chunks if c not in self._offsets]
        if not todo:
            return
        paths = [self._path(c) for c in todo]
        if self.fs is None:
            heads = [first_bytes(p, HEAD_BYTES) for p in paths]
        else:
            heads = self.fs.cat_ranges(paths, [0] * len(todo), [HEAD_BYTES] * len(todo), on_error="raise")
        for c, path, head in zip(todo, paths, heads):
            more = (lambda end, p=path: first_bytes(p, end)) if self.fs is None else \
                (lambda end, p=path: self.fs.cat_file(p, start=0, end=end))
            shape, dtype, offset = parse_header(head, more, path)
            rows = int(self.bounds[c + 1] - self.bounds[c])
            if (shape[0], tuple(shape[1:]), dtype) != (rows, self.shape[1:], self.dtype):
                raise ValueError(f"{path}: {shape} {dtype}, the index says {rows} rows of {self.shape[1:]} "
                                 f"{self.dtype}: the folder was changed after its index was written")
            self._offsets[c] = offset


def _pread_into(fd: int, out: np.ndarray, offset: int, path: str) -> None:
    """Fill `out` from the file at `offset` (a large read may come back in parts)."""
    view, done = memoryview(out.reshape(-1).view(np.uint8)), 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise ValueError(f"{path} ends at byte {offset + done}, before the rows its header promises")
        done += got


def open_array(url: str, **storage_options) -> ChunkedArray:
    """The array at `url`: a chunked array folder (index.json inside) or a plain `.npy` file (a URL ending in
    .npy), on the local disk or any fsspec filesystem. Reads only index.json or the npy header now."""
    url = str(url).rstrip("/")
    local = is_local(url)
    fs, path = (None, str(local_path(url))) if local else fsspec.core.url_to_fs(url, **storage_options)
    if url.endswith(".npy"):
        shape, dtype, offset = read_header(path, fs)
        if not shape:
            raise ValueError(f"{url} holds a 0-d array: there are no rows to read; load it with np.load")
        return ChunkedArray(path, [""], [0], shape, dtype, fs, offsets={0: offset})
    try:
        raw = Path(path, INDEX).read_text() if local else fs.cat_file(f"{path}/{INDEX}").decode()
    except FileNotFoundError:
        raise FileNotFoundError(f"{url} is neither a .npy file nor a chunked array folder (no {INDEX})") from None
    index = json.loads(raw)
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise ValueError(f"{url}/{INDEX}: format {index.get('format')!r} version {index.get('version')!r}; "
                         f"this reader knows {FORMAT!r} version {VERSION}")
    chunks = index["chunks"]
    return ChunkedArray(path, [c["file"] for c in chunks], [c["start"] for c in chunks], tuple(index["shape"]),
                        np.lib.format.descr_to_dtype(index["dtype"]), fs)


def open_npy(url: str) -> np.ndarray | ChunkedArray:
    """A `.npy` file to read rows of: memory-mapped on the local disk (an ndarray view); elsewhere (s3://) the
    ranged-read reader above, which indexes like an array but is not one (no arithmetic, no `==`)."""
    return np.load(local_path(url), mmap_mode="r") if is_local(url) else open_array(url)


def open_named(folder_url: str, name: str, mmap: bool = True) -> np.ndarray | ChunkedArray:
    """The array `name` of an asset folder: `<name>/` (a chunked array folder) or `<name>.npy`, whichever the
    folder holds (open_npy for the latter: a memory map on the local disk; with mmap=False the chunked reader
    for either, which concat_arrays can join)."""
    folder_url = str(folder_url).rstrip("/")
    chunked = f"{folder_url}/{name}"
    if is_chunked(chunked):
        return open_array(chunked)
    return open_npy(f"{folder_url}/{name}.npy") if mmap else open_array(f"{folder_url}/{name}.npy")


def is_chunked(url: str) -> bool:
    """Whether `url` is a chunked array folder (holds an index.json)."""
    fs, path = (None, str(local_path(url))) if is_local(url) else fsspec.core.url_to_fs(url)
    return Path(path, INDEX).exists() if fs is None else fs.exists(f"{path}/{INDEX}")


def concat_arrays(arrays: list[ChunkedArray]) -> ChunkedArray:
    """One array whose rows are those of `arrays` one after the other (the parts of a partitioned asset),
    reading each part's own chunk files where they lie: nothing is copied or assembled."""
    if not arrays:
        raise ValueError("no arrays to concatenate")
    first = arrays[0]
    for a in arrays[1:]:
        if a.shape[1:] != first.shape[1:] or a.dtype != first.dtype:
            raise ValueError(f"{a.path}: rows of {a.shape[1:]} {a.dtype}, {first.path}: rows of {first.shape[1:]} "
                             f"{first.dtype}: the parts of one array must agree (re-materialise the odd part)")
    files, starts, offsets, at = [], [], {}, 0
    for a in arrays:
        for c in range(len(a.files)):
            if c in a._offsets:
                offsets[len(files)] = a._offsets[c]
            files.append(a._path(c))
            starts.append(at + int(a.bounds[c]))
        at += a.shape[0]
    return ChunkedArray("", files, starts, (at, *first.shape[1:]), first.dtype, first.fs, offsets=offsets)


class RowSelection:
    """Rows `rows` of `array`, indexed like an array of len(rows) rows (an int, a slice, an array of rows or a
    mask), reading only the rows asked: what the fan-in steps see of the per-image arrays once the duplicates
    across partitions are dropped."""

    def __init__(self, array, rows: np.ndarray):
        self.array, self.rows = array, np.asarray(rows, dtype=np.int64)
        self.shape, self.dtype = (len(self.rows), *array.shape[1:]), array.dtype

    def __repr__(self) -> str:
        return f"RowSelection({self.array!r}, rows={len(self.rows)})"

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple) or key is Ellipsis:
            raise TypeError("index rows only (an int, a slice or an array of rows), then slice the result")
        picked = self.rows[key]
        if isinstance(picked, np.ndarray):
            return self.take_rows(picked)
        return np.asarray(self.array[int(picked)])

    def take(self, rows) -> np.ndarray:
        return self[np.asarray(rows)]

    def take_rows(self, underlying: np.ndarray) -> np.ndarray:
        if isinstance(self.array, ChunkedArray):
            return self.array.take(underlying)
        order = np.argsort(underlying, kind="stable")  # a memory map reads best in file order
        out = np.empty((len(underlying), *self.shape[1:]), self.dtype)
        out[order] = self.array[underlying[order]]
        return out


def select_rows(array, rows: np.ndarray | None):
    """`array` itself when `rows` is None or every row in order, else a RowSelection of it."""
    if rows is None or (len(rows) == len(array) and np.array_equal(rows, np.arange(len(array)))):
        return array
    if isinstance(array, RowSelection):  # a selection of a selection reads the underlying rows directly
        return RowSelection(array.array, array.rows[np.asarray(rows, dtype=np.int64)])
    return RowSelection(array, rows)
