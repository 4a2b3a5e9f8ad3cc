"""Read a source of image-text pairs into one normalised table, whatever its column spelling.

A URL list (parquet, csv or jsonl; local or any fsspec URL such as hf://datasets/...) becomes a table with
stable column names and a stable `image_id` per source item. A source that cannot be used fails here, before
any download, with a message naming the file or column.
"""

from __future__ import annotations

import hashlib

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq

# Stable names -> spellings seen in LAION releases and common exports (matched case-insensitively).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "alt_text": ("caption", "text", "alt_text", "alt", "txt"),
    "aesthetic": ("aesthetic", "aesthetic_score", "aesthetics"),
    "punsafe": ("punsafe",),
    "pwatermark": ("pwatermark",),
    "original_width": ("width", "original_width"),
    "original_height": ("height", "original_height"),
    "similarity": ("similarity", "clip_similarity"),
}
METADATA_COLUMNS = tuple(COLUMN_ALIASES)
FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".json": "json"}


class SourceError(ValueError):
    """The source cannot be used as configured; the message says which file or column and what was expected."""


def stable_id(key: str) -> str:
    """16 hex digits derived from a source item's identity (its URL, path or original key)."""
    return hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def expand_paths(path: str, suffixes: tuple[str, ...]) -> list[str]:
    """Files named by a path, a folder or a glob, local or fsspec; protocol kept on each."""
    fs, _, _ = fsspec.get_fs_token_paths(path)
    if fs.isdir(path):
        found = [p for p in fs.find(path) if p.lower().endswith(suffixes)]
    else:
        found = fs.glob(path) if any(c in path for c in "*?[") else ([path] if fs.exists(path) else [])
    protocol = path.split("://", 1)[0] + "://" if "://" in path else ""
    files = sorted(p if p.startswith(protocol) else protocol + p for p in found)
    if not files:
        raise SourceError(f"source.path {path!r}: no such file (expected {' / '.join(suffixes)} files)")
    return files


def read_url_list(path: str, url_col: str = "url", caption_col: str = "caption", id_col: str | None = None,
                  limit: int | None = None, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """(table, what was read). The table: image_id, url, alt_text (raw: str, bytes or None), and the
    METADATA_COLUMNS found. What was read: `bytes_read` from the files (parquet footers included) and, for
    parquet, `row_groups_read` of `row_groups_total`.

    With `limit`, a seeded sample of exactly that many rows: for parquet, whole row groups are drawn first
    (from the footers, without reading them), then rows within them, so a 10k trial of a release reads about
    10k rows' worth of its columns, not a few rows of every row group.
    """
    files = expand_paths(path, tuple(FORMATS))
    fmt = {FORMATS.get("." + f.rsplit(".", 1)[-1].lower()) for f in files}
    if None in fmt or len(fmt) != 1:
        raise SourceError(f"source.path {path!r}: expected parquet, csv or jsonl files of one kind, got {files[:3]}")
    reader = _ParquetRows(files) if fmt == {"parquet"} else _TextRows(files, fmt.pop())
    names = {name.lower(): name for name in reader.names}
    url_name = names.get(url_col.lower())
    if url_name is None:
        raise SourceError(f"{path}: no URL column {url_col!r} (columns: {', '.join(reader.names)}); "
                          "set source.url_col")
    wanted = {"url": url_name}
    aliases = dict(COLUMN_ALIASES, alt_text=(caption_col.lower(),) + COLUMN_ALIASES["alt_text"])
    for stable, spellings in aliases.items():
        for spelling in spellings:
            if spelling in names and names[spelling] not in wanted.values():
                wanted[stable] = names[spelling]
                break
    if id_col:
        if id_col.lower() not in names:
            raise SourceError(f"{path}: no id column {id_col!r} (columns: {', '.join(reader.names)})")
        wanted["source_id"] = names[id_col.lower()]
    table = reader.read(list(wanted.values()), limit, seed)
    frame = pd.DataFrame({stable: table.column(name).to_pylist() for stable, name in wanted.items()})
    for col in METADATA_COLUMNS:
        if col not in frame:
            frame[col] = None
    identity = frame["source_id"].astype(str) if id_col else frame["url"].astype(str)
    frame.insert(0, "image_id", [stable_id(k) for k in identity])
    return frame.drop(columns=["source_id"], errors="ignore"), reader.stats()


class _CountedFile:
    """A read-only file that adds the bytes read through it to a shared tally: what a trial costs the network.
    Only the methods pyarrow uses, so none can bypass the count."""

    def __init__(self, raw, tally: list[int]):
        self._raw, self._tally = raw, tally

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._tally[0] += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> "_CountedFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _ParquetRows:
    """Parquet files read row group by row group, through fsspec, counting the bytes read."""

    def __init__(self, files: list[str]):
        self.fs = fsspec.get_fs_token_paths(files[0])[0]
        self.files, self.tally = files, [0]
        self.footers = []
        for name in files:
            with self._open(name) as fh:
                self.footers.append(pq.read_metadata(fh))
        self.names = self.footers[0].schema.to_arrow_schema().names
        self.groups_read = 0

    def _open(self, name: str) -> _CountedFile:
        # no read-ahead cache: a remote file fetches the ranges pyarrow asks for, not blocks around them
        return _CountedFile(self.fs.open(name, "rb", cache_type="none"), self.tally)

    def read(self, columns: list[str], limit: int | None, seed: int) -> pa.Table:
        groups = [(f, g, md.row_group(g).num_rows) for f, md in enumerate(self.footers)
                  for g in range(md.num_row_groups) if md.row_group(g).num_rows]
        picked = dict.fromkeys((f, g) for f, g, _ in groups)  # every row of every group
        if limit is not None and sum(n for _, _, n in groups) > limit:
            picked = pick_row_groups([n for _, _, n in groups], limit, seed)
            picked = {groups[i][:2]: rows for i, rows in picked.items()}
        parts = []
        for f in sorted({f for f, _ in picked}):
            with self._open(self.files[f]) as fh:
                reader = pq.ParquetFile(fh, metadata=self.footers[f])
                for (_, g), rows in sorted((key, rows) for key, rows in picked.items() if key[0] == f):
                    part = reader.read_row_group(g, columns=columns)
                    parts.append(part if rows is None else part.take(pa.array(rows)))
                    self.groups_read += 1
        if not parts:
            return pa.table({name: pa.array([], pa.string()) for name in columns})
        return pa.concat_tables(parts, promote_options="permissive")

    def stats(self) -> dict:
        return {"row_groups_read": self.groups_read, "row_groups_total": sum(md.num_row_groups for md in self.footers),
                "bytes_read": self.tally[0]}


def pick_row_groups(sizes: list[int], limit: int, seed: int) -> dict[int, np.ndarray]:
    """A seeded sample of exactly `limit` rows from groups of `sizes` rows, touching as few groups as it can:
    groups drawn in a seeded order until they hold `limit` rows, then `limit` rows drawn among theirs.
    Returns {group index: sorted row offsets within it}. Every group is equally likely to be drawn and rows
    within the drawn groups equally likely, so every row is about equally likely; the rows of a trial come
    in clumps of row groups (as a release was written), which is the price of reading little."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sizes))
    held = np.cumsum(np.asarray(sizes, dtype=np.int64)[order])
    chosen = order[:int(np.searchsorted(held, limit)) + 1]
    starts = np.concatenate([[0], np.cumsum([sizes[i] for i in chosen])])
    rows = np.sort(rng.choice(int(starts[-1]), size=limit, replace=False))
    where = np.searchsorted(starts, rows, side="right") - 1
    return {int(chosen[k]): rows[where == k] - starts[k] for k in np.unique(where)}


class _TextRows:
    """csv and jsonl files: no row groups to skip, so they are read whole and sampled after."""

    def __init__(self, files: list[str], fmt: str):
        filesystem = fsspec.get_fs_token_paths(files[0])[0] if "://" in files[0] else None
        self.dataset = pds.dataset(files, format=fmt, filesystem=filesystem)
        self.names = self.dataset.schema.names
        self.files = files

    def read(self, columns: list[str], limit: int | None, seed: int) -> pa.Table:
        total = self.dataset.count_rows()
        if limit is None or total <= limit:
            return self.dataset.to_table(columns=columns)
        picked = np.sort(np.random.default_rng(seed).choice(total, size=limit, replace=False))
        return self.dataset.take(pa.array(picked), columns=columns)

    def stats(self) -> dict:
        fs = fsspec.get_fs_token_paths(self.files[0])[0]
        return {"bytes_read": int(sum(fs.size(name) for name in self.files))}


def decode_caption(raw) -> tuple[str | None, str]:
    """(caption, problem): problem is '' for a usable caption, else 'missing_caption' or 'caption_not_utf8'."""
    if raw is None or (isinstance(raw, float) and np.isnan(raw)):
        return None, "missing_caption"
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            return bytes(raw).decode("utf-8", "replace"), f"caption_not_utf8:{exc.reason} at byte {exc.start}"
    text = " ".join(str(raw).split())
    return (text, "") if text else (None, "missing_caption")
