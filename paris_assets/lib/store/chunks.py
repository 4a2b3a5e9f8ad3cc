"""Long per-image computations in resumable chunks, fed by loader threads.

Rows are processed in chunks of `chunk_size`; each finished chunk is written atomically into a work folder
whose name is a key of everything that shapes the result (the upstream materialisation, the model, the
settings). A run that dies at 80% leaves 80% of the chunks; the next run with the same key computes only the
rest. The finished chunks are plain `.npy` files and become the output's chunked arrays as they are, by hard
links (lib/store/arrays.link_chunk_store): never assembled into one file.

Decoding and preprocessing run in loader threads ahead of the model (PIL and tokenizers release the GIL), so
the model is not left waiting; the time spent inside the model is measured, to show it.

Where a chunk is computed is the engine's only choice: here, one chunk after another (`run_chunks`), or on a
pool of Ray workers (`engines/ray.py`); both write into the same ChunkStore, so keys, resumption and
the output do not depend on the engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..run.progress import Progress


def work_key(*parts) -> str:
    """A short key of everything that shapes a chunked result."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ChunkStore:
    """The finished chunks of one computation: `chunk-NNNNNN.<name>.npy`, each chunk sealed by a `.done` file."""

    def __init__(self, folder: str | Path, n_rows: int, chunk_size: int):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.n_rows, self.chunk_size = n_rows, chunk_size
        self.n_chunks = -(-n_rows // chunk_size) if n_rows else 0

    def bounds(self, i: int) -> tuple[int, int]:
        return i * self.chunk_size, min(self.n_rows, (i + 1) * self.chunk_size)

    def _path(self, i: int, name: str) -> Path:
        return self.folder / f"chunk-{i:06d}.{name}.npy"

    def done(self, i: int) -> bool:
        return (self.folder / f"chunk-{i:06d}.done").exists()

    def save(self, i: int, arrays: dict[str, np.ndarray]) -> None:
        """Write chunk i's arrays, then its `.done` marker; the chunk counts as finished only once the marker is
        there. Why no row is ever lost or duplicated, whichever process writes and however it dies:
        - a chunk holds exactly rows `bounds(i)`, by position: a retried chunk can only rewrite those rows;
        - every file is written under a name of its own writer (pid and a random part) and then renamed into
          place (`os.replace`, atomic on a local or network file system), so a reader sees a whole file, never
          a part, and two writers of the same chunk (a retry while a presumed-dead worker still runs) never
          write into the same file: the last rename wins, with the same bytes (the stages are deterministic);
        - the marker is renamed into place last: a writer killed before it leaves the chunk not done (and at
          most stray temporary files), so the next attempt computes the whole chunk again."""
        start, stop = self.bounds(i)
        for name, array in arrays.items():
            if len(array) != stop - start:
                raise ValueError(f"chunk {i}: {name} has {len(array)} rows, expected {stop - start}")
        writer = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        for name, array in arrays.items():
            tmp = self._path(i, name).with_name(f".chunk-{i:06d}.{name}.{writer}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, array)
            os.replace(tmp, self._path(i, name))
        marker = self.folder / f".chunk-{i:06d}.done.{writer}.tmp"
        marker.write_text(json.dumps(sorted(arrays)))
        os.replace(marker, self.folder / f"chunk-{i:06d}.done")

    def missing(self) -> list[int]:
        """The chunks not finished yet, in order."""
        return [i for i in range(self.n_chunks) if not self.done(i)]

    def load(self, i: int, name: str) -> np.ndarray:
        return np.load(self._path(i, name), mmap_mode="r")

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def ordered_map(fn: Callable, items: Iterable, threads: int, ahead: int) -> Iterator:
    """fn(item) for each item, in order, computed by `threads` threads up to `ahead` items in advance."""
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="loader") as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class Timer:
    """Accumulates the seconds spent inside a block (e.g. the model's forward pass)."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._t


def run_chunks(store: ChunkStore, compute_chunk: Callable[[int, int, Callable[[int], None]], dict[str, np.ndarray]],
               log: Callable[[str], None] = print, label: str = "", every: float = 10.0) -> dict:
    """Compute every chunk not already in `store`, here, one after another; log progress (done/total, rate,
    ETA) at most every `every` seconds; return counts.
    `compute_chunk(start, stop, advance)` may call `advance(rows)` as batches finish, so a slow model still
    reports progress within a chunk; rows it does not report are counted when the chunk is saved."""
    started = time.perf_counter()
    todo, progress = plan_chunks(store, log, label, every)
    for i in todo:
        start, stop = store.bounds(i)
        reported = 0

        def advance(rows: int) -> None:
            nonlocal reported
            rows = min(rows, stop - start - reported)
            if rows > 0:
                reported += rows
                progress.advance(rows)

        store.save(i, compute_chunk(start, stop, advance))
        advance(stop - start - reported)
    return chunk_stats(store, todo, started)


def plan_chunks(store: ChunkStore, log: Callable[[str], None], label: str, every: float = 10.0
                ) -> tuple[list[int], Progress]:
    """The chunks still to compute (saying how many an earlier run left), and a progress line over their rows."""
    todo = store.missing()
    reused = store.n_chunks - len(todo)
    if reused:
        log(f"{label}: reusing {reused}/{store.n_chunks} finished chunks from an earlier run")
    return todo, Progress(label, sum(store.bounds(i)[1] - store.bounds(i)[0] for i in todo), "rows", log, every)


def chunk_stats(store: ChunkStore, todo: list[int], started: float) -> dict:
    """What a run of `todo` over `store` did, whichever engine ran it."""
    return {"rows": store.n_rows, "chunks": store.n_chunks, "chunks_reused": store.n_chunks - len(todo),
            "chunks_computed": len(todo), "rows_computed": sum(store.bounds(i)[1] - store.bounds(i)[0] for i in todo),
            "seconds": time.perf_counter() - started}
