"""One IO manager per storage format; all of them commit an asset's folder atomically (lib/store/storage.py).

An asset hands over either a staged local folder it has filled (the usual case: stages write their files as
they go, in chunks), or plain values (DataFrames, arrays) that the manager writes in its format. Downstream
assets receive an `AssetFolder`: a handle on the committed folder, never the whole data in memory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext
from upath import UPath

from ..lib.ingest.partitions import sorted_parts
from ..lib.store import storage
from ..lib.store.arrays import ChunkedArray, concat_arrays, open_named, select_rows


class AssetFolder:
    """A committed asset folder: tables, arrays and shards by name."""

    def __init__(self, path: UPath):
        self.path = path

    def __repr__(self) -> str:
        return f"AssetFolder({self.path})"

    def url(self, name: str) -> str:
        return str(self.path / name)

    def files(self) -> dict[str, int]:
        return storage.folder_files(self.path)

    def identity(self) -> str:
        """A fingerprint of this materialisation (its marker: files, sizes, run id)."""
        import hashlib

        return hashlib.sha256((self.path / storage.MARKER).read_bytes()).hexdigest()[:16]

    def table(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        with (self.path / f"{name}.parquet").open("rb") as fh:
            return pd.read_parquet(fh, columns=columns)

    def column(self, name: str, column: str):
        """One column of a table as an Arrow array: 11M ids take ~200 MB, not ~800 MB of Python strings."""
        import pyarrow.parquet as pq

        with (self.path / f"{name}.parquet").open("rb") as fh:
            return pq.read_table(fh, columns=[column])[column]

    def strings(self, name: str, column: str) -> np.ndarray:
        """A text column as one fixed-width numpy array (11M 16-character ids: 704 MB), converted a record batch
        at a time: never 11M Python strings at once."""
        col = self.column(name, column)
        parts = [np.asarray(chunk.slice(i, 1 << 20).to_numpy(zero_copy_only=False), dtype=str)
                 for chunk in col.chunks for i in range(0, len(chunk), 1 << 20)]
        return np.concatenate(parts) if parts else np.empty(0, "<U1")

    def array(self, name: str, mmap: bool = True) -> np.ndarray | ChunkedArray:
        """The array `name`, a chunked folder `<name>/` or a `<name>.npy` (lib/store/arrays.open_named): a `.npy` on the
        local disk is memory-mapped; anything else is a lib/store/arrays reader that fetches only the rows asked for
        (positional reads locally, ranged reads on s3://), never the whole array at once. That reader indexes
        like an array but is not one (no arithmetic, no `==`): wrap what you compute on in np.asarray.
        `mmap=False` reads it whole into memory."""
        array = open_named(str(self.path), name)
        return array if mmap else np.array(array)

    def shards(self, under: str = "") -> list[str]:
        """URLs of the .tar shards the folder's marker lists (optionally under a sub-folder), sorted."""
        prefix = f"{under.rstrip('/')}/" if under else ""
        return [self.url(rel) for rel in sorted(self.files()) if rel.endswith(".tar") and rel.startswith(prefix)]


class AssetParts(AssetFolder):
    """Every part of a partitioned asset, read as one folder (what a fan-in step receives): tables one after the
    other, arrays joined without a copy (lib/store/arrays.concat_arrays), in the parts' row order. A table's
    `crop_shard` paths gain their part's folder, so they stay relative to `url("")`, the asset's own folder."""

    def __init__(self, root: UPath, parts: dict[str, AssetFolder]):
        self.path, self.parts = root, parts

    def __repr__(self) -> str:
        return f"AssetParts({self.path}, {len(self.parts)} parts)"

    @property
    def keys(self) -> list[str]:
        return list(self.parts)

    def url(self, name: str) -> str:
        return str(self.path / name)

    def identity(self) -> str:
        import hashlib

        return hashlib.sha256(" ".join(f"{k}={f.identity()}" for k, f in self.parts.items()).encode()).hexdigest()[:16]

    def files(self) -> dict[str, int]:
        return {f"{key}/{rel}": size for key, folder in self.parts.items() for rel, size in folder.files().items()}

    def shards(self, under: str = "") -> list[str]:
        return [url for folder in self.parts.values() for url in folder.shards(under)]

    def table(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        frames = []
        for key, folder in self.parts.items():
            frame = folder.table(name, columns)
            for col in PART_PATH_COLUMNS.intersection(frame.columns):
                frame[col] = key + "/" + frame[col].astype(str)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def column(self, name: str, column: str):
        import pyarrow as pa

        columns = [folder.column(name, column) for folder in self.parts.values()]
        filled = [c for c in columns if len(c)] or columns[:1]  # an empty part's columns may have no type (null)
        return pa.chunked_array([chunk for c in filled for chunk in c.chunks], filled[0].type)

    def strings(self, name: str, column: str) -> np.ndarray:
        return np.concatenate([folder.strings(name, column) for folder in self.parts.values()])

    def array(self, name: str, mmap: bool = True) -> np.ndarray | ChunkedArray:
        arrays = [open_named(str(folder.path), name, mmap=False) for folder in self.parts.values()]
        filled = [a for a in arrays if len(a)] or arrays[:1]  # an empty part adds no row (nor a dtype)
        if len({a.dtype for a in filled}) > 1 and all(a.dtype.kind == "U" for a in filled):
            return np.concatenate([np.asarray(a) for a in filled])  # ids of different widths: small, read whole
        joined = concat_arrays(filled)
        return joined if mmap else np.array(joined)


class Selected(AssetFolder):
    """The rows `rows` of a folder's (or every part's) per-image tables and arrays, in that order: what the steps
    after cluster_labels read, once it has dropped the duplicates across parts."""

    def __init__(self, folder: AssetFolder | AssetParts, rows: np.ndarray):
        self.folder, self.rows = folder, rows
        self.path = folder.path

    def __repr__(self) -> str:
        return f"Selected({self.folder!r}, {len(self.rows)} rows)"

    def url(self, name: str) -> str:
        return self.folder.url(name)

    def files(self) -> dict[str, int]:
        return self.folder.files()

    def shards(self, under: str = "") -> list[str]:
        return self.folder.shards(under)

    def identity(self) -> str:
        import hashlib

        return hashlib.sha256(self.folder.identity().encode() + self.rows.tobytes()).hexdigest()[:16]

    def table(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        return self.folder.table(name, columns).iloc[self.rows].reset_index(drop=True)

    def column(self, name: str, column: str):
        return self.folder.column(name, column).take(self.rows)

    def strings(self, name: str, column: str) -> np.ndarray:
        return self.folder.strings(name, column)[self.rows]

    def array(self, name: str, mmap: bool = True):
        picked = select_rows(self.folder.array(name), self.rows)
        return picked if mmap else np.asarray(picked)


def images_of(cluster_labels: AssetFolder, *folders: AssetFolder | AssetParts) -> tuple:
    """Each of `folders` as far as the images cluster_labels clustered: itself when that is every row in order,
    else those rows (cluster_labels' rows.npy, read once for all of them)."""
    rows = np.asarray(cluster_labels.array("rows"), dtype=np.int64)
    every = not len(rows) or rows[-1] == len(rows) - 1  # increasing from 0 and ending at len - 1: all rows
    return tuple(folder if every else Selected(folder, rows) for folder in folders)


PART_PATH_COLUMNS = {"crop_shard"}  # table columns holding paths relative to their folder


class _FolderIOManager(ConfigurableIOManager):
    root: str  # data_dir: a local path or an fsspec URL

    def _write_values(self, value, staged: Path) -> None:
        raise TypeError(f"{type(self).__name__} cannot store a {type(value).__name__}; return a staged folder (Path)")

    def handle_output(self, context: OutputContext, obj) -> None:
        name = output_name(self.root, context)
        if isinstance(obj, Path):
            staged = obj
        else:
            staged = storage.staging_dir(self.root, name.replace("/", "-"))
            try:
                self._write_values(obj, staged)
            except BaseException:
                shutil.rmtree(staged, ignore_errors=True)
                raise
        files = storage._listing(staged)
        folder = storage.commit_folder(staged, self.root, name, extra={"run_id": context.run_id})
        context.add_output_metadata({
            "path": MetadataValue.path(str(folder)),
            "files": len(files),
            "bytes_on_disk": int(sum(files.values())),
        })

    def load_input(self, context: InputContext) -> AssetFolder | AssetParts:
        name = context.upstream_output.asset_key.path[-1]
        if not context.has_asset_partitions:
            return AssetFolder(storage.open_folder(self.root, name))
        keys = sorted_parts(context.asset_partition_keys)
        if context.has_partition_key and len(keys) == 1:  # a partitioned step reading its own part upstream
            return AssetFolder(storage.open_folder(self.root, f"{name}/{keys[0]}"))
        return open_parts(self.root, name, keys)


def output_name(root: str, context: OutputContext) -> str:
    """Where an output goes under data_dir: `<asset>`, or `<asset>/<part>` for a part of a partitioned asset."""
    name = context.asset_key.path[-1]
    if not context.has_asset_partitions:
        return name
    keys = context.asset_partition_keys
    if len(keys) != 1:
        raise ValueError(f"{name}: a run writes one part at a time, this one was given {len(keys)}; launch a backfill "
                         "(one run per part) instead of a single run over a range")
    if storage.holds_output(root, name):
        raise ValueError(f"{root}/{name} holds an output made without partitions (partitions.size was 0): use a new "
                         "data_dir for a partitioned run, or delete that folder")
    return f"{name}/{keys[0]}"


def open_parts(root: str, name: str, keys: list[str]) -> AssetParts:
    """Every part of `name`, or IncompleteOutput listing the parts that have no complete output yet."""
    parts, missing = {}, []
    for key in keys:
        try:
            parts[key] = AssetFolder(storage.open_folder(root, f"{name}/{key}"))
        except storage.IncompleteOutput:
            missing.append(key)
    if missing or not keys:
        listed = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise storage.IncompleteOutput(
            f"{name}: {len(missing)} of {len(keys)} parts have no complete output ({listed or 'no part is registered'}): "
            "materialise every part first (`python -m paris_assets.parts backfill`, or Materialize > all partitions "
            "in the UI); a step that reads every part runs once all of them are done")
    return AssetParts(storage.root_upath(root) / name, parts)


class ParquetIOManager(_FolderIOManager):
    """Tables: a dict of DataFrames becomes `<name>.parquet` files in the asset's folder."""

    def _write_values(self, value, staged: Path) -> None:
        if not isinstance(value, dict) or not all(isinstance(v, pd.DataFrame) for v in value.values()):
            super()._write_values(value, staged)
        for name, frame in value.items():
            frame.to_parquet(staged / f"{name}.parquet", index=False)


class NpyIOManager(_FolderIOManager):
    """Arrays: a dict of numpy arrays becomes memory-mappable `<name>.npy` files."""

    def _write_values(self, value, staged: Path) -> None:
        if not isinstance(value, dict) or not all(isinstance(v, np.ndarray) for v in value.values()):
            super()._write_values(value, staged)
        for name, array in value.items():
            np.save(staged / f"{name}.npy", array)


class ShardsIOManager(_FolderIOManager):
    """WebDataset shards: a staged folder of .tar files (and their sidecars) committed whole.

    A `pipeline_manifest.json` at the staged folder's top is moved to `<root>/pipeline_manifest.json` once
    the shards are in place: the manifest is written last, atomically, and never describes shards that are
    not there."""

    def handle_output(self, context: OutputContext, obj) -> None:
        manifest = None
        if isinstance(obj, Path):
            if not any(obj.rglob("*.tar")):
                context.log.warning(f"{context.asset_key.to_user_string()}: no .tar shard in the output")
            if (obj / MANIFEST).exists():
                manifest = (obj / MANIFEST).read_bytes()
                (obj / MANIFEST).unlink()
        super().handle_output(context, obj)
        if manifest is not None:
            storage.write_atomic(self.root, MANIFEST, manifest)


MANIFEST = "pipeline_manifest.json"
