"""One IO manager per storage format; all of them commit an asset's folder atomically (lib/storage.py).

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

from ..lib import storage
from ..lib.arrays import ChunkedArray, open_named


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
        """The array `name`, a chunked folder `<name>/` or a `<name>.npy` (lib/arrays.open_named): a `.npy` on the
        local disk is memory-mapped; anything else is a lib/arrays reader that fetches only the rows asked for
        (positional reads locally, ranged reads on s3://), never the whole array at once. That reader indexes
        like an array but is not one (no arithmetic, no `==`): wrap what you compute on in np.asarray.
        `mmap=False` reads it whole into memory."""
        array = open_named(str(self.path), name)
        return array if mmap else np.array(array)

    def shards(self, under: str = "") -> list[str]:
        """URLs of the .tar shards the folder's marker lists (optionally under a sub-folder), sorted."""
        prefix = f"{under.rstrip('/')}/" if under else ""
        return [self.url(rel) for rel in sorted(self.files()) if rel.endswith(".tar") and rel.startswith(prefix)]


class _FolderIOManager(ConfigurableIOManager):
    root: str  # data_dir: a local path or an fsspec URL

    def _write_values(self, value, staged: Path) -> None:
        raise TypeError(f"{type(self).__name__} cannot store a {type(value).__name__}; return a staged folder (Path)")

    def handle_output(self, context: OutputContext, obj) -> None:
        name = context.asset_key.path[-1]
        if isinstance(obj, Path):
            staged = obj
        else:
            staged = storage.staging_dir(self.root, name)
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

    def load_input(self, context: InputContext) -> AssetFolder:
        return AssetFolder(storage.open_folder(self.root, context.upstream_output.asset_key.path[-1]))


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
