"""What the shard browser shows: an index of every sample in the expert and held-out shards, the shards'
health against pipeline_manifest.json, filtered pages of samples, and their images.

The index reads only tar headers and each sample's small `json` member, seeking over latents and tokens, so on
a local disk it costs a few bytes per sample rather than the ~120 KB a sample weighs (on object stores,
fsspec's read-ahead fetches more). Images come from the sample's own
`jpg` (with `shards.include_jpg`) or else from the `filtered_images` crop of the same image_id; clips (media: video)
likewise from the sample's own `mp4` (with `shards.include_mp4`) or else the crop tar's `mp4` member.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from upath import UPath

from ..store.storage import IncompleteOutput, require_settled, root_upath
from .shards import files_on_disk, listed_shards
from .shard_query import FILTER_COLUMNS, SORTS, query, served_page  # noqa: F401 (the browser reads them here)
from .tars import iter_members

# the json fields the index keeps per sample (quality columns: lib/quality/signals.py; absent in older shards)
RECORD_FIELDS = ("cluster", "url", "alt_text", "caption", "aesthetic", "aesthetic_source", "aesthetic_computed",
                 "punsafe", "punsafe_source", "punsafe_computed", "centroid_distance", "width", "height")
# media: video: the json's clip facts (lib/video/decode.probe_and_decode). Columns only of an index that holds clips: an
# image index of 11M samples would carry ten columns of None (~1 GB) for nothing
CLIP_FIELDS = ("media", "duration", "source_fps", "fps", "num_frames", "window_start", "window_end", "rotation",
               "codec", "motion")
# what a stored "media" field (a sample's json, the manifest) says of the samples: whether they are clips (with
# CLIP_FIELDS and maybe an mp4 member). The one place this module reads that field; older samples carry none.
HOLDS_CLIPS = {"image": False, "video": True}


class NoManifest(FileNotFoundError):
    """There is no pipeline_manifest.json to browse: expert_shards was never materialised here."""


@dataclass
class ShardIndex:
    root: UPath
    manifest: dict
    samples: pd.DataFrame  # one row per sample, in manifest and file order
    unreadable: dict[str, str] = field(default_factory=dict)  # shard path -> what went wrong reading it
    counted: dict[str, int] = field(default_factory=dict)  # shard path -> samples found in it
    position: dict[str, int] = field(default_factory=dict)  # image_id -> row of `samples`

    def row(self, image_id: str) -> pd.Series:
        if image_id not in self.position:
            raise KeyError(f"no sample {image_id!r} in the shards")
        return self.samples.iloc[self.position[image_id]]


def open_root(data_root: str) -> UPath:
    return root_upath(data_root)


def read_manifest(root: UPath) -> dict:
    path = root / "pipeline_manifest.json"
    if not path.exists():
        raise NoManifest(f"no pipeline_manifest.json under {root}: materialise expert_shards first "
                         "(make demo, or the whole graph from the UI)")
    try:
        require_settled(str(root), "expert_shards", "heldout")
    except IncompleteOutput as exc:
        raise NoManifest(str(exc)) from None
    return json.loads(path.read_text())


def build_index(data_root: str, cache_dir: str | Path | None = None) -> ShardIndex:
    """Scan every listed shard that exists. A damaged shard is recorded in `unreadable` with the samples read
    before the damage kept, so the browser still shows what is there. With `cache_dir`, the scan is kept there
    keyed by the data root, the manifest and every shard's size and modification time, so reopening unchanged
    shards (minutes of scanning at 11M samples) takes seconds, and any change to a shard scans afresh."""
    root = open_root(data_root)
    manifest = read_manifest(root)
    on_disk = files_on_disk(root)
    key = _cache_key(root, manifest, on_disk) if cache_dir else None
    scanned = _load_scan(Path(cache_dir), key) if key else None
    if scanned is None:
        scanned = _scan(root, manifest, on_disk)
        if key:
            _save_scan(Path(cache_dir), key, *scanned)
    samples, unreadable, counted = scanned
    for col in ("image_id", "split", "shard", "url", "alt_text", "caption"):  # half the memory of Python strings
        samples[col] = samples[col].astype("string[pyarrow]")
    samples["order"] = np.arange(len(samples))
    position = {image_id: i for i, image_id in enumerate(samples["image_id"])}
    return ShardIndex(root, manifest, samples, unreadable, counted, position)


def _scan(root: UPath, manifest: dict, on_disk: dict) -> tuple[pd.DataFrame, dict[str, str], dict[str, int]]:
    rows, unreadable, counted = [], {}, {}
    for split, entry in listed_shards(manifest):
        path = root / entry["path"]
        if entry["path"] not in on_disk:
            continue
        found = 0
        try:
            with path.open("rb") as fh:
                for row in _scan_shard(fh):
                    rows.append({**row, "split": split, "shard": entry["path"]})
                    found += 1
        except Exception as exc:  # a damaged tar is a finding for the health table, not a crash
            unreadable[entry["path"]] = f"{type(exc).__name__}: {exc} (after {found} samples)"
        counted[entry["path"]] = found
    columns = ["image_id", "split", "shard", *RECORD_FIELDS, "jpg_offset", "jpg_size"]
    if any(holds_clips(row.get("media")) for row in rows):
        columns += [*CLIP_FIELDS, "mp4_offset", "mp4_size"]
    samples = pd.DataFrame(rows, columns=columns)
    return samples, unreadable, counted


def _cache_key(root: UPath, manifest: dict, on_disk: dict) -> str:
    shards = sorted((e["path"], on_disk.get(e["path"])) for _, e in listed_shards(manifest))
    # a scan of other fields is stale
    blob = json.dumps([manifest, shards, RECORD_FIELDS, CLIP_FIELDS], sort_keys=True, default=str)
    return f"{hashlib.sha256(str(root).encode()).hexdigest()[:8]}-{hashlib.sha256(blob.encode()).hexdigest()[:24]}"


def _load_scan(folder: Path, key: str):
    facts = folder / f"{key}.json"
    if not facts.exists():
        return None
    extra = json.loads(facts.read_text())
    return pd.read_parquet(folder / f"{key}.parquet"), extra["unreadable"], extra["counted"]


def _save_scan(folder: Path, key: str, samples: pd.DataFrame, unreadable: dict, counted: dict) -> None:
    """Written atomically, the json last: a scan without its json is never trusted."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{key.split('-')[0]}-*"):  # earlier scans of the same data root
        old.unlink(missing_ok=True)
    tmp = folder / f".{key}.{os.getpid()}"
    samples.to_parquet(f"{tmp}.parquet", index=False)
    os.replace(f"{tmp}.parquet", folder / f"{key}.parquet")
    Path(f"{tmp}.json").write_text(json.dumps({"unreadable": unreadable, "counted": counted}))
    os.replace(f"{tmp}.json", folder / f"{key}.json")


def _scan_shard(fh) -> Iterator[dict]:
    """One row per sample, yielded as soon as the next sample starts (a sample's members are adjacent), so a
    shard damaged half-way still gives the samples before the damage."""
    sample = None
    for name, size, stream in iter_members(fh):
        key, _, ext = name.rpartition("/")[2].partition(".")
        if sample is None or sample["image_id"] != key:
            if sample is not None:
                yield sample
            sample = {"image_id": key, "jpg_offset": -1, "jpg_size": 0, "mp4_offset": -1, "mp4_size": 0}
        if ext == "json":
            record = json.loads(stream.read())
            sample.update({k: record.get(k) for k in RECORD_FIELDS})
            if holds_clips(record.get("media")):
                sample.update({k: record.get(k) for k in CLIP_FIELDS})
        elif ext == "jpg":
            sample["jpg_offset"], sample["jpg_size"] = fh.tell(), size
        elif ext == "mp4":
            sample["mp4_offset"], sample["mp4_size"] = fh.tell(), size
        elif ext == "txt" and "caption" not in sample:
            sample["caption"] = stream.read().decode("utf-8", "replace")
    if sample is not None:
        yield sample


def shard_health(index: ShardIndex) -> list[dict]:
    """One row per shard that is missing, empty, of the wrong size or sample count, unreadable, or on disk
    but not in the manifest; each with its problem. Sizes come from one listing of each shard folder per call
    (one request per folder on an object store, not one per shard)."""
    on_disk = files_on_disk(index.root)
    problems, listed = [], set()
    for split, entry in listed_shards(index.manifest):
        listed.add(entry["path"])
        size, found = on_disk.get(entry["path"], (None, ""))[0], index.counted.get(entry["path"])
        if size is None:
            problem = "missing"
        elif size == 0:
            problem = "zero-size"
        elif size != entry["bytes"]:
            problem = f"size {size:,} bytes, the manifest says {entry['bytes']:,}"
        elif entry["path"] in index.unreadable:
            problem = f"unreadable: {index.unreadable[entry['path']]}"
        elif found is not None and found != entry["samples"]:
            problem = f"{found} samples, the manifest says {entry['samples']}"
        else:
            continue
        problems.append({"path": entry["path"], "split": split, "problem": problem})
    for rel in sorted(set(on_disk) - listed):
        if not rel.endswith("/_SUCCESS.json"):
            problems.append({"path": rel, "split": "", "problem": "extra: on disk but not in the manifest"})
    return problems


def holds_clips(media) -> bool:
    """Whether a stored "media" field names clips (False for images, an unknown name and no field)."""
    return isinstance(media, str) and HOLDS_CLIPS.get(media, False)


def clip_rows(samples: pd.DataFrame) -> np.ndarray:
    """Which rows of the index are clips, by their json's "media" field."""
    if "media" not in samples:
        return np.zeros(len(samples), bool)
    return samples["media"].map(holds_clips).to_numpy(dtype=bool)


def media_of(index: ShardIndex) -> str:
    """image or video: what the manifest says, else what the samples' json says (manifests before media)."""
    if index.manifest.get("media") in HOLDS_CLIPS:
        return index.manifest["media"]
    clips = clip_rows(index.samples)
    return str(index.samples["media"][clips].iloc[0]) if clips.any() else "image"


def overview(index: ShardIndex) -> dict:
    """Totals, per-cluster samples/shards/bytes, and the distribution of shard sizes (10 bins); the media, and
    for clips how many there are and how many carry their mp4 in the shard (the rest read it from the crops)."""
    listed = listed_shards(index.manifest)
    per_split: dict[str, dict] = {}
    for split, entry in listed:
        row = per_split.setdefault(split, {"split": split, "shards": 0, "samples": 0, "bytes": 0})
        row["shards"] += 1
        row["samples"] += entry["samples"]
        row["bytes"] += entry["bytes"]
    sizes = np.array([entry["bytes"] for _, entry in listed], float)
    counts, edges = np.histogram(sizes, bins=10) if len(sizes) else (np.zeros(0, int), np.zeros(1))
    view = {
        "created": index.manifest.get("created"), "k": index.manifest.get("k"),
        "total_images": int(sum(e["samples"] for _, e in listed)), "indexed_images": len(index.samples),
        "expert_images": int(sum(e["samples"] for s, e in listed if s != "heldout")),
        "heldout_images": int(sum(e["samples"] for s, e in listed if s == "heldout")),
        "shards": len(listed), "bytes": int(sizes.sum()),
        "splits": list(per_split.values()),
        "shard_sizes": [{"from": float(a), "to": float(b), "shards": int(n)}
                        for a, b, n in zip(edges[:-1], edges[1:], counts)],
        "has_jpg": bool((index.samples["jpg_offset"] >= 0).any()) if len(index.samples) else False,
        "media": media_of(index),
    }
    if holds_clips(view["media"]):
        clips = clip_rows(index.samples)
        view["clips"] = view["total_images"]
        view["indexed_clips"] = int(clips.sum())
        view["clips_with_mp4"] = int((index.samples.loc[clips, "mp4_offset"] >= 0).sum()) if clips.any() else 0
    return view


def read_image(index: ShardIndex, image_id: str, crops: CropLookup) -> bytes:
    """The JPEG bytes of one sample: its own `jpg` member, or the filtered_images crop of the same image."""
    row = index.row(image_id)
    if row["jpg_offset"] >= 0:
        with (index.root / row["shard"]).open("rb") as fh:
            fh.seek(int(row["jpg_offset"]))
            data = fh.read(int(row["jpg_size"]))
    else:
        data = crops.read(image_id)
    if data[:2] != b"\xff\xd8":  # the shard or crop was rewritten since the scan
        raise KeyError(f"the image of {image_id!r} moved since the shards were scanned: rescan")
    return data


def is_clip(index: ShardIndex, image_id: str) -> bool:
    """Whether the sample is a clip (media: video); KeyError for an id not in the shards."""
    return "media" in index.samples and holds_clips(index.row(image_id)["media"])


def read_clip(index: ShardIndex, image_id: str, crops: CropLookup) -> bytes:
    """The mp4 bytes of one clip (media: video): its own `mp4` member, or the `mp4` of its filtered_images crop.
    Raises KeyError saying why when there is none."""
    if not is_clip(index, image_id):
        raise KeyError(f"{image_id!r} is an image, not a clip: it has no mp4")
    row = index.row(image_id)
    if row["mp4_offset"] >= 0:
        with (index.root / row["shard"]).open("rb") as fh:
            fh.seek(int(row["mp4_offset"]))
            data = fh.read(int(row["mp4_size"]))
    else:
        data = crops.read(image_id, "mp4")
    if data[4:8] != b"ftyp":  # every mp4 encode_clip writes starts with its ftyp box
        raise KeyError(f"the clip of {image_id!r} moved since the shards were scanned: rescan")
    return data


class CropLookup:
    """filtered_images' crops by image_id: the `jpg` of an image, the `mp4` of a clip; each crop shard's headers
    are scanned once, on first use."""

    MEMBERS = ("jpg", "mp4")

    def __init__(self, root: UPath):
        self.root = root
        self._shard_of: dict[str, str] | None = None
        self._members: dict[str, dict[str, dict[str, tuple[int, int]]]] = {}  # shard -> member -> key -> where

    def read(self, image_id: str, ext: str = "jpg") -> bytes:
        if ext not in self.MEMBERS:
            raise ValueError(f"crops hold {self.MEMBERS}, not {ext!r}")
        if self._shard_of is None:
            kept = self.root / "filtered_images" / "kept.parquet"
            if not kept.exists():
                raise KeyError(f"filtered_images/kept.parquet is missing, and the shards hold no {ext}")
            with kept.open("rb") as fh:
                table = pd.read_parquet(fh, columns=["image_id", "crop_shard"])
            self._shard_of = dict(zip(table["image_id"], table["crop_shard"].astype(str)))
        shard = self._shard_of.get(image_id)
        if shard is None:
            raise KeyError(f"{image_id!r} has no crop in filtered_images (it was re-materialised since the shards)")
        path = self.root / "filtered_images" / shard  # e.g. crops/shard-000000.tar
        if shard not in self._members:
            members: dict[str, dict[str, tuple[int, int]]] = {ext: {} for ext in self.MEMBERS}
            try:
                with path.open("rb") as fh:
                    for name, size, _stream in iter_members(fh):
                        key, _, member = name.rpartition("/")[2].partition(".")
                        if member in self.MEMBERS:
                            members[member][key] = (fh.tell(), size)
            except FileNotFoundError:
                raise KeyError(f"{path} is missing: re-materialise filtered_images, or rescan") from None
            self._members[shard] = members
        if image_id not in self._members[shard][ext]:
            raise KeyError(f"{image_id!r} has no {ext} in {path}")
        offset, size = self._members[shard][ext][image_id]
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read(size)


def thumbnail(jpeg: bytes, side: int) -> bytes:
    from PIL import Image

    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    image.thumbnail((side, side))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    return buf.getvalue()
