"""Export the committed training outputs as a Hugging Face dataset folder:

    python -m paris_assets.export --output DIR [--config paris.yaml] [--data-dir URL] [--license other] [--force]

DIR gets data/train/cluster_<k>/shard-NNNNNN.tar (the expert shards), data/heldout/shard-NNNNNN.tar (the held-out
split), a dataset card README.md whose YAML front matter the Hub reads (one config for every cluster together,
one per cluster) and stats.json (the card's numbers, machine-readable). Shards are hard-linked from the data_dir
when it is on the same local filesystem, else copied (from an object store, each file's sha256 checked against
pipeline_manifest.json on the way). The folder is built in DIR.tmp-<pid>-<id> beside DIR and renamed into place
last, so an error, or a kill, never leaves a half-made DIR.

What a sample holds (members, shapes, dtypes, json fields) is read from the shards, never from a list kept here,
so a member or json field added upstream shows up in the card by itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pandas as pd
from upath import UPath

from .lib.outputs.card import hub_features, render_card, size_category  # noqa: F401 (imported from here)
from .lib.outputs.shards import listed_shards
from .lib.outputs.stats import WITHHELD, collect_stats, describe_sample, public_settings  # noqa: F401
from .lib.store.storage import (
    IncompleteOutput,
    folder_files,
    is_local,
    local_path,
    open_folder,
    process_alive,
    require_settled,
    root_upath,
)
from .settings import SettingsError, load_settings

DUPLICATE_TABLES = ("duplicates", "dropped")  # cluster_labels' tables of images dropped at the fan-in, if present


class ExportRefused(RuntimeError):
    """The data_dir lacks a committed output the export needs, or DIR may not be written."""


def read_committed(data_root: str) -> tuple[dict, list[tuple[str, str, UPath, dict]]]:
    """pipeline_manifest.json and every shard it lists as (split, path in the export, source, manifest entry),
    after checking that expert_shards and heldout are committed and hold exactly those shards."""
    root = root_upath(data_root)
    missing = [name for name in ("expert_shards", "heldout") if not _committed(data_root, name)]
    manifest_path = root / "pipeline_manifest.json"
    if not manifest_path.exists():
        missing.append("pipeline_manifest.json")
    if missing:
        raise ExportRefused(f"cannot export {root}: no committed {', '.join(missing)}. Materialise expert_shards "
                            "(it writes expert_shards/, heldout/ and pipeline_manifest.json): `make demo`, or "
                            "`dagster asset materialize -m paris_assets.definitions --select '*expert_shards'`")
    try:
        require_settled(data_root, "expert_shards", "heldout")
    except IncompleteOutput as exc:
        raise ExportRefused(str(exc)) from None
    manifest = json.loads(manifest_path.read_text())
    lacking = [key for key in ("k", "clusters", "heldout", "heldout_split") if key not in manifest]
    if lacking:
        raise ExportRefused(f"{manifest_path} has no {', '.join(lacking)} (an older version wrote it): materialise "
                            "expert_shards again")
    folders = {name: open_folder(data_root, name) for name in ("expert_shards", "heldout")}
    promised = {f"{name}/{rel}": size for name, folder in folders.items()
                for rel, size in folder_files(folder).items() if rel.endswith(".tar")}
    files = []
    for split, entry in listed_shards(manifest):
        under, _, rel = entry["path"].partition("/")
        name = Path(rel).name
        dest = f"data/heldout/{name}" if split == "heldout" else f"data/train/cluster_{split}/{name}"
        files.append((split, dest, folders[under] / rel, entry))
    listed = {entry["path"]: entry["bytes"] for _, _, _, entry in files}
    if listed != promised:
        raise ExportRefused(f"pipeline_manifest.json under {root} does not describe the committed shards (it lists "
                            f"{len(listed)}, the folders hold {len(promised)}, or their sizes differ): a run was "
                            "killed between them; materialise expert_shards again")
    return manifest, files


def _committed(data_root: str, name: str) -> bool:
    try:
        open_folder(data_root, name)
    except IncompleteOutput:
        return False
    return True


def place_files(files: list[tuple[str, str, UPath, dict]], staged: Path, data_root: str, log=print) -> str:
    """Hard-link (same local filesystem) or copy every shard into `staged`; returns "hard-linked", "copied" or
    "hard-linked and copied". Every copy is checked against the manifest's sha256 as it streams (a hard link is
    the committed file itself: its size was checked against the manifest)."""
    how = set()
    for i, (_, dest, source, entry) in enumerate(files):
        target = staged / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        if is_local(data_root):
            try:
                os.link(source.path, target)  # a later re-materialisation renames new files in: these stay intact
                how.add("hard-linked")
                continue
            except OSError:  # another filesystem (EXDEV), or links not allowed: copy
                pass
        digest = hashlib.sha256()
        with source.open("rb") as src, open(target, "wb") as out:
            for block in iter(lambda: src.read(8 << 20), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != entry["sha256"]:
            raise ExportRefused(f"{source} does not match its sha256 in pipeline_manifest.json: the shard changed "
                                "after it was written; materialise expert_shards again")
        how.add("copied")
        if (i + 1) % 1000 == 0:
            log(f"export: {i + 1:,}/{len(files):,} shards placed")
    return " and ".join(sorted(how, reverse=True)) or "nothing to place"


def reason_counts(data_root: str) -> dict[str, dict[str, int]]:
    """Images left out before the shards, by reason: filtered_images' rejected table (every part of it with
    partitions) and cluster_labels' duplicates / dropped tables when they exist."""
    counts = {"filtered_images": _reasons(_asset_parts(data_root, "filtered_images"), "rejected")}
    labels = _asset_parts(data_root, "cluster_labels")
    for table in DUPLICATE_TABLES:
        if any((folder / f"{table}.parquet").exists() for folder in labels):  # present, even empty: say 0
            counts[f"cluster_labels_{table}"] = _reasons(labels, table)
    return counts


def _asset_parts(data_root: str, name: str) -> list[UPath]:
    """The committed folder of an asset, or the committed folders of its parts (`<name>/rows-.../`)."""
    try:
        return [open_folder(data_root, name)]
    except IncompleteOutput:
        base = root_upath(data_root) / name
        parts = sorted(p.name for p in base.iterdir() if p.name.startswith("rows-")) if base.exists() else []
        folders = [open_folder(data_root, f"{name}/{p}") for p in parts if _committed(data_root, f"{name}/{p}")]
        if not folders:
            raise ExportRefused(f"no committed {name} under {root_upath(data_root)}: materialise it (and the graph "
                                "after it) first") from None
        return folders


def _reasons(folders: list[UPath], table: str) -> dict[str, int]:
    total: Counter = Counter()
    for folder in folders:
        path = folder / f"{table}.parquet"
        if path.exists():
            with path.open("rb") as fh:
                total.update(pd.read_parquet(fh, columns=["reason"])["reason"].astype(str).tolist())
    return dict(total.most_common())


def read_report(data_root: str, manifest: dict) -> dict:
    """cluster_report/report.json, refused when it describes another clustering than the shards were made from."""
    try:
        folder = open_folder(data_root, "cluster_report")
    except IncompleteOutput:
        raise ExportRefused(f"no committed cluster_report under {root_upath(data_root)}: materialise cluster_report, "
                            "then expert_shards") from None
    report = json.loads((folder / "report.json").read_text())
    sizes = [manifest["heldout_split"]["per_cluster"][str(c)]["size"] for c in range(int(manifest["k"]))]
    if list(report["sizes"]) != sizes:
        raise ExportRefused(f"cluster_report (sizes {report['sizes']}) describes another clustering than the shards "
                            f"(sizes {sizes}): materialise cluster_labels+ so the report and the shards agree")
    report["run_id"] = json.loads((folder / "_SUCCESS.json").read_text()).get("run_id")
    return report


def export_dataset(data_root: str, output: str | Path, license_id: str = "other", force: bool = False,
                   log=print) -> dict:
    """Write the dataset folder at `output` (see the module docstring); returns stats.json's content. Refuses
    (ExportRefused, nothing written) a non-empty `output` unless `force`, and a data_dir missing an output."""
    output = Path(output).absolute()
    if is_local(data_root):
        data = local_path(data_root).absolute()
        if output == data or data.is_relative_to(output) or output.is_relative_to(data):
            raise ExportRefused(f"--output {output} overlaps the data_dir {data} (--force would replace pipeline "
                                "outputs): export to a folder outside it")
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not force:
        raise ExportRefused(f"{output} exists and is not empty: choose another --output, or --force to replace it")
    manifest, files = read_committed(data_root)
    report = read_report(data_root, manifest)
    reasons = reason_counts(data_root)
    output.parent.mkdir(parents=True, exist_ok=True)
    _sweep_abandoned(output)
    staged = output.parent / f"{output.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staged.mkdir()
    try:
        started = time.perf_counter()
        how = place_files(files, staged, data_root, log)
        first = next(((dest, source) for split, dest, source, e in files if split != "heldout" and e["samples"]), None)
        if first is None:
            raise ExportRefused("the expert shards hold no sample: nothing to export")
        try:
            sample = describe_sample(staged / first[0])
        except Exception as exc:  # e.g. a tar damaged after the manifest was written, at its listed size
            raise ExportRefused(f"cannot read the first sample of {first[1]}: {type(exc).__name__}: {exc}; "
                                "materialise expert_shards again") from exc
        stats = collect_stats(manifest, report, reasons, sample, files, license_id)
        (staged / "stats.json").write_text(json.dumps(stats, indent=1, default=str) + "\n")
        (staged / "README.md").write_text(render_card(stats))
        _swap_in(staged, output)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    log(f"export: {len(files):,} shards {how}, {stats['splits']['train']['samples']:,} train and "
        f"{stats['splits']['heldout']['samples']:,} held-out samples in {time.perf_counter() - started:.1f} s -> {output}")
    return stats


def _swap_in(staged: Path, output: Path) -> None:
    """Rename the finished folder to `output`; an existing one (allowed by --force) is renamed aside first and
    removed after, so a reader sees the old folder or the new one."""
    old = None
    if output.exists():
        if output.is_dir() and not any(output.iterdir()):
            output.rmdir()
        else:
            old = output.parent / f"{output.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(output, old)
    os.replace(staged, output)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def _sweep_abandoned(output: Path) -> None:
    """Remove DIR.tmp-<pid>-* / DIR.old-<pid>-* folders an export killed on this machine left behind."""
    for left in output.parent.glob(f"{output.name}.*-*-*"):
        kind, _, rest = left.name[len(output.name) + 1:].partition("-")
        pid = rest.partition("-")[0]
        if kind in ("tmp", "old") and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(left, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paris_assets.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="the dataset folder to write (must not exist, or be empty)")
    parser.add_argument("--config", help="settings file (default: $PARIS_CONFIG or paris.yaml)")
    parser.add_argument("--data-dir", help="export this data_dir instead of the settings' one (a path or fsspec URL)")
    parser.add_argument("--license", default="other", help="the card's license id as the Hub spells it (e.g. "
                        "cc-by-4.0); default 'other', with a note that the images' rights stay with their owners")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --output")
    args = parser.parse_args(argv)
    try:
        data_root = args.data_dir or load_settings(args.config).data_root
        export_dataset(data_root, args.output, args.license, args.force)
    except (ExportRefused, SettingsError) as exc:
        print(f"export refused: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
