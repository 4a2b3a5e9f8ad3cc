"""What a `source.limit` trial reads of a parquet release: row groups and bytes, against drawing the rows over
the whole release and fetching them with one `take` (the seed pipeline's way), in the same run.

    .venv/bin/python -m paris_assets.bench.sources [--groups 1000] [--rows 1000] [--limit 10000] [--files 4]

The release is generated (seeded; incompressible URLs and captions plus LAION's numeric columns) in a temporary
folder; both readers go through fsspec's local filesystem, whose reads are counted.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileOpener
from pyarrow.fs import FSSpecHandler, PyFileSystem

from ..lib.ingest.sources import read_url_list

READ_COLUMNS = ["URL", "TEXT", "WIDTH", "HEIGHT", "similarity", "punsafe", "pwatermark", "AESTHETIC_SCORE"]


def write_release(folder: Path, files: int, groups: int, rows: int, seed: int = 0) -> list[Path]:
    """`groups` row groups of `rows` rows over `files` parquet files, LAION's columns; each URL names its file
    and row group (`.../<file>/<group>/<random>.jpg`). `hash` is never read: a trial must not fetch it."""
    rng = np.random.default_rng(seed)
    paths = []
    for f in range(files):
        n = groups // files * rows
        words = rng.integers(0, 2**63, size=(n, 4)).astype(str)  # incompressible, like real URLs and captions
        table = pa.table({
            "URL": [f"https://images.example.com/{f}/{i // rows}/{w}.jpg" for i, w in enumerate(words[:, 0])],
            "TEXT": [f"{a} {b} {c}" for a, b, c in words[:, 1:]],
            "WIDTH": rng.integers(64, 4096, n), "HEIGHT": rng.integers(64, 4096, n),
            "similarity": rng.random(n), "hash": rng.integers(-2**63, 2**63 - 1, n), "punsafe": rng.random(n),
            "pwatermark": rng.random(n), "AESTHETIC_SCORE": rng.random(n) * 10,
        })
        paths.append(folder / f"part-{f:05d}.parquet")
        pq.write_table(table, paths[-1], row_group_size=rows)
    return paths


@contextlib.contextmanager
def counted_reads():
    """Count the bytes read through fsspec's local files while the block runs."""
    tally = [0]
    plain = LocalFileOpener.read

    def read(self, *args, **kwargs):
        data = plain(self, *args, **kwargs)
        tally[0] += len(data)
        return data

    LocalFileOpener.read = read
    try:
        yield tally
    finally:
        LocalFileOpener.read = plain


def whole_release_take(paths: list[Path], limit: int, seed: int) -> tuple[int, int]:
    """The baseline: rows drawn uniformly over the release, fetched with one Dataset.take. (rows, row groups
    holding them)."""
    # wrapped by hand: given fsspec's local filesystem itself, pyarrow swaps in its own and the reads go uncounted
    filesystem = PyFileSystem(FSSpecHandler(fsspec.filesystem("file")))
    dataset = pds.dataset([str(p) for p in paths], format="parquet", filesystem=filesystem)
    total = dataset.count_rows()
    picked = np.sort(np.random.default_rng(seed).choice(total, size=limit, replace=False))
    table = dataset.take(pa.array(picked), columns=READ_COLUMNS)
    sizes = [pq.ParquetFile(p).metadata.row_group(0).num_rows for p in paths]  # all groups equal here
    return table.num_rows, len(np.unique(picked // sizes[0]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m paris_assets.bench.sources", description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_release(Path(tmp), args.files, args.groups, args.rows, args.seed)
        size = sum(p.stat().st_size for p in paths)
        print(f"release: {args.groups:,} row groups of {args.rows:,} rows in {args.files} files, {size / 1e6:,.1f} MB; "
              f"limit {args.limit:,}")
        with counted_reads() as tally:
            started = time.perf_counter()
            rows, groups = whole_release_take(paths, args.limit, args.seed)
            seconds = time.perf_counter() - started
        print(f"  rows over the whole release, one take: {rows:,} rows from {groups:,} row groups, "
              f"{tally[0] / 1e6:,.1f} MB read ({tally[0] / size:.0%}), {seconds:.2f} s")
        with counted_reads() as tally:
            started = time.perf_counter()
            frame, read = read_url_list(f"{tmp}/*.parquet", "URL", "TEXT", limit=args.limit, seed=args.seed)
            seconds = time.perf_counter() - started
        assert read["bytes_read"] == tally[0], (read, tally)
        print(f"  row groups first (read_url_list):      {len(frame):,} rows from {read['row_groups_read']:,} of "
              f"{read['row_groups_total']:,} row groups, {read['bytes_read'] / 1e6:,.1f} MB read "
              f"({read['bytes_read'] / size:.1%}), {seconds:.2f} s")


if __name__ == "__main__":
    main()
