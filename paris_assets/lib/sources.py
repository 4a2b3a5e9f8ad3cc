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
                  limit: int | None = None, seed: int = 0) -> pd.DataFrame:
    """A normalised table: image_id, url, alt_text (raw: str, bytes or None), and the METADATA_COLUMNS found.

    With `limit`, a seeded sample of that many rows is drawn file by file, so a trial reads a few row groups,
    not the whole release.
    """
    files = expand_paths(path, tuple(FORMATS))
    fmt = {FORMATS.get("." + f.rsplit(".", 1)[-1].lower()) for f in files}
    if None in fmt or len(fmt) != 1:
        raise SourceError(f"source.path {path!r}: expected parquet, csv or jsonl files of one kind, got {files[:3]}")
    dataset = pds.dataset(files, format=fmt.pop(), filesystem=fsspec.get_fs_token_paths(files[0])[0]
                          if "://" in files[0] else None)
    names = {name.lower(): name for name in dataset.schema.names}
    url_name = names.get(url_col.lower())
    if url_name is None:
        raise SourceError(f"{path}: no URL column {url_col!r} (columns: {', '.join(dataset.schema.names)}); "
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
            raise SourceError(f"{path}: no id column {id_col!r} (columns: {', '.join(dataset.schema.names)})")
        wanted["source_id"] = names[id_col.lower()]
    table = _sampled(dataset, list(wanted.values()), limit, seed)
    frame = pd.DataFrame({stable: table.column(name).to_pylist() for stable, name in wanted.items()})
    for col in METADATA_COLUMNS:
        if col not in frame:
            frame[col] = None
    identity = frame["source_id"].astype(str) if id_col else frame["url"].astype(str)
    frame.insert(0, "image_id", [stable_id(k) for k in identity])
    return frame.drop(columns=["source_id"], errors="ignore")


def _sampled(dataset: pds.Dataset, columns: list[str], limit: int | None, seed: int) -> pa.Table:
    if limit is None:
        return dataset.to_table(columns=columns)
    total = dataset.count_rows()
    if total <= limit:
        return dataset.to_table(columns=columns)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(total, size=limit, replace=False))
    return dataset.take(pa.array(picked), columns=columns)


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
