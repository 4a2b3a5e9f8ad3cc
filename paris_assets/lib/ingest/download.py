"""Bring the source's images into WebDataset tars with img2dataset, keeping the original bytes.

img2dataset is the engine LAION itself was downloaded with; its multiprocessing, pyspark and ray distributors
are how this stage scales out. We let it keep each file's original bytes (`disable_all_reencoding`) and decode
them ourselves in filtered_images: its OpenCV path turns 16-bit PNGs white, ignores EXIF orientation and
decodes decompression bombs in full.

Output folder (the raw_images contract): img2dataset's `NNNNN.tar` / `NNNNN.parquet` / `NNNNN_stats.json`,
plus `samples.parquet`: one row per source item with its metadata, download status and (shard, key).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

import numpy as np
import pandas as pd

from .sources import decode_caption, expand_paths, stable_id
from .downloader import (DOWNLOADER, _group_running, _stop_leftover_download,  # noqa: F401 (tests)
                         download_with_img2dataset)
from .urls import UrlPolicy

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v")
MEDIA_EXTS = {ext.lstrip(".") for ext in IMAGE_SUFFIXES + VIDEO_SUFFIXES}


@dataclass(frozen=True)
class Demo:
    """The demo source of one media, as plain values: the media object (paris_assets/media) gives it, so this
    module knows no media. The demo's files are made once per (n, seed, version, stamp) and served on 127.0.0.1."""

    make: Callable[..., pd.DataFrame]  # make(folder, n=, seed=) -> one row per demo item; writes folder/files/
    version: int  # the generator's version: a new one makes the files again
    size: int  # clean items made when source.demo_size is not set
    url_table: Callable[[pd.DataFrame, str], pd.DataFrame]  # (rows, served base URL) -> the URL list to download
    url_col: str  # the URL list's columns
    caption_col: str
    noun: str = "images"  # what the log calls the items
    title: str = "demo"  # what the log calls the data set
    stamp: dict = field(default_factory=dict)  # extra demo.json fields that tell this demo's files apart


def image_demo() -> Demo:
    """The image demo (lib/demo/images): what ingest makes when no other demo is given."""
    from ..demo.images import DEMO_VERSION, make_demo, url_table
    from .http_server import refused_base_url

    return Demo(make=make_demo, version=DEMO_VERSION, size=2000, url_col="URL", caption_col="TEXT",
                url_table=lambda rows, base: url_table(rows, base, refused_base_url()))


def demo_size(source, demo: Demo) -> int:
    return source.demo_size or demo.size


def prepare_source_table(frame: pd.DataFrame, policy: UrlPolicy | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows to download, rows refused before download, with `reason` and `detail`). Captions are decoded
    here. With a `policy`, a URL it refuses (not http(s), a metadata or link-local address) is refused with
    its reason; a repeated source item (same image_id, i.e. the same URL) is refused as `duplicate_url`."""
    frame = frame.copy()
    decoded = [decode_caption(raw) for raw in frame["alt_text"]]
    frame["alt_text"] = [text for text, _ in decoded]
    frame["caption_problem"] = [problem for _, problem in decoded]
    frame["url"] = frame["url"].astype(str)
    verdicts = [policy.refusal(url) if policy else None for url in frame["url"]]
    unsafe = pd.Series([v is not None for v in verdicts], index=frame.index, dtype=bool)
    repeated = frame["image_id"].duplicated(keep="first") & ~unsafe
    refused = frame.loc[unsafe | repeated, ["image_id", "url"]].assign(
        reason=[v[0] if v else "duplicate_url" for v, out in zip(verdicts, unsafe | repeated) if out],
        detail=[v[1] if v else "URL listed earlier in the source" for v, out in zip(verdicts, unsafe | repeated) if out])
    return frame.loc[~(unsafe | repeated)].reset_index(drop=True), refused.reset_index(drop=True)


def folder_table(folder: str, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> pd.DataFrame:
    """An image (or video) folder as a URL list: file:// URLs, captions from sidecar .txt files where present."""
    paths = expand_paths(folder, suffixes)
    rows = []
    for path in paths:
        sidecar = Path(path).with_suffix(".txt")
        caption = sidecar.read_bytes() if sidecar.exists() else None
        rel = os.path.relpath(path, folder)
        rows.append({"image_id": stable_id(rel), "url": Path(path).resolve().as_uri(), "alt_text": caption})
    frame = pd.DataFrame(rows)
    for col in ("aesthetic", "punsafe", "pwatermark", "original_width", "original_height", "similarity"):
        frame[col] = None
    return frame


def collect_samples(table: pd.DataFrame, out_dir: str) -> pd.DataFrame:
    """Join img2dataset's per-shard parquet back onto the source table: status, error, sha256, shard, key."""
    parts = []
    for shard_parquet in sorted(Path(out_dir).glob("[0-9]*.parquet")):
        part = pd.read_parquet(shard_parquet, columns=["key", "image_id", "status", "error_message", "sha256"])
        part["shard"] = shard_parquet.with_suffix(".tar").name
        parts.append(part)
    if not parts:
        raise RuntimeError(f"img2dataset wrote no shard in {out_dir}: see its log above")
    results = pd.concat(parts, ignore_index=True).drop_duplicates("image_id", keep="last")
    merged = table.merge(results, on="image_id", how="left", validate="one_to_one")
    missing = merged["status"].isna()
    merged.loc[missing, "status"] = "not_attempted"
    merged.loc[missing, "error_message"] = "img2dataset returned no row for this URL"
    merged.loc[merged["status"] != "success", "shard"] = None
    return merged


def failure_kind(message: str | None) -> str:
    """A short class for an img2dataset error message, for counting failed downloads by reason."""
    text = (message or "").lower()
    for needle, kind in (
        ("404", "http_404"), ("403", "http_403"), ("http error", "http_error"),
        ("connection refused", "connection_refused"), ("timed out", "timeout"), ("timeout", "timeout"),
        ("x-robots-tag", "opted_out"), ("name or service", "dns"), ("ssl", "ssl"),
        ("no row", "not_attempted"), ("no such file", "missing_file"),
    ):
        if needle in text:
            return kind
    return "other"


def webdataset_samples(path: str) -> pd.DataFrame:
    """Index existing WebDataset tars as raw samples (read in place, not copied): one row per image."""
    import tarfile

    import fsspec

    rows = []
    for tar_url in expand_paths(path, (".tar",)):
        with fsspec.open(tar_url, "rb") as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
            members: dict[str, dict] = {}
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                entry = members.setdefault(key, {})
                if ext.lower() in MEDIA_EXTS and "image_ext" not in entry:
                    entry["image_ext"] = ext
                elif ext in ("txt", "json"):
                    entry[ext] = tar.extractfile(member).read()
        for key, entry in members.items():
            meta = {}
            if "json" in entry:
                try:
                    meta = json.loads(entry["json"])
                except ValueError:
                    meta = {}
            rows.append({
                "image_id": stable_id(f"{Path(tar_url).name}/{key}"),
                "url": meta.get("url") or f"{tar_url}#{key}",
                "alt_text": entry.get("txt", meta.get("caption")),
                "aesthetic": meta.get("aesthetic", meta.get("AESTHETIC_SCORE")),
                "punsafe": meta.get("punsafe"),
                "pwatermark": meta.get("pwatermark"),
                "original_width": meta.get("original_width", meta.get("WIDTH")),
                "original_height": meta.get("original_height", meta.get("HEIGHT")),
                "similarity": meta.get("similarity"),
                "status": "success" if "image_ext" in entry else "failed_to_download",
                "error_message": None if "image_ext" in entry else "no image file in sample",
                "shard": tar_url if "image_ext" in entry else None,
                "key": key,
                "image_ext": entry.get("image_ext"),
                "sha256": None,
            })
    if not rows:
        raise ValueError(f"source.path {path!r}: the tars hold no samples")
    return pd.DataFrame(rows)


def download_stats(samples: pd.DataFrame, seconds: float) -> dict:
    ok = samples["status"] == "success"
    failed = samples.loc[~ok, "error_message"].map(failure_kind).value_counts().to_dict()
    return {
        "requested": int(len(samples)),
        "downloaded": int(ok.sum()),
        "failed": int((~ok).sum()),
        "failed_by_reason": {k: int(v) for k, v in sorted(failed.items())},
        "seconds": round(seconds, 2),
        "images_per_s": round(float(len(samples)) / max(seconds, 1e-9), 1),
    }


def numeric(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    for col in cols:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(np.float64)
    return frame


def source_identity(source) -> str | None:
    """What a killed download of this source can be resumed against: the URL list's files with their sizes and
    modification times (or ETags), so an edited list starts afresh. None for sources that are not resumable:
    the demo gets new URLs each run (a fresh loopback port), folders and tars download nothing."""
    import fsspec

    from ..store.storage import modified_stamp
    from .sources import FORMATS, expand_paths

    if source.kind != "url_list":
        return None
    parts = []
    for path in expand_paths(source.path, tuple(FORMATS)):
        fs, _, (plain,) = fsspec.get_fs_token_paths(path)
        info = fs.info(plain)
        parts.append([path, info.get("size"), modified_stamp(info)])
    return json.dumps([parts, source.url_col, source.caption_col, source.limit], default=str)


def source_table(source, demo_dir: str | None, seed: int) -> tuple[pd.DataFrame, dict]:
    """The source as one normalised table (image_id, url, alt_text, metadata), before any download, and what
    reading it cost (`bytes_read`, and `row_groups_read` / `row_groups_total` for parquet)."""
    from .sources import read_url_list

    if source.kind == "url_list":
        return read_url_list(source.path, source.url_col, source.caption_col, limit=source.limit, seed=seed)
    if source.kind in ("image_folder", "video_folder"):
        table = folder_table(source.path, VIDEO_SUFFIXES if source.kind == "video_folder" else IMAGE_SUFFIXES)
        return (table.sample(n=source.limit, random_state=seed).sort_index()
                if source.limit and source.limit < len(table) else table), {}
    if source.kind == "demo":
        return read_url_list(str(Path(demo_dir) / "laion_demo.parquet"), "URL", "TEXT", id_col="demo_id")
    raise ValueError(f"source.kind {source.kind!r} has no URL table")


def ingest(source, ingest_settings, out_dir: str, *, demo_dir: str | None = None, seed: int = 0, log=print,
           rows: tuple[int, int] | None = None, download_options: dict | None = None, demo: Demo | None = None) -> dict:
    """Fill `out_dir` with the raw_images folder for any source kind; returns download stats. `rows` (first, end):
    only those rows of the source plan (a source part, lib/ingest/partitions.py), before any URL is refused.

    demo: makes (or reuses) the `demo`'s files (source.demo_size clean items; image_demo() by default) in `demo_dir`,
    serves them on 127.0.0.1 for the length of the download, so the demo goes through the same img2dataset path
    as a LAION run. Videos take that path too: img2dataset keeps the bytes it fetched as they are (no
    re-encoding), and filtered_images decodes and judges them.
    """
    from .http_server import serve_directory
    from .sources import read_url_list

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy = UrlPolicy(ingest_settings.refused_networks, ingest_settings.refused_hosts)
    read: dict = {}
    if source.kind == "webdataset":  # indexed in place: its URLs are metadata, never fetched
        samples = _rows(webdataset_table(source, seed), rows)
        samples, refused = prepare_source_table(samples)
        samples = samples.drop(columns=["image_ext"])
    elif source.kind == "demo":
        demo = demo or image_demo()
        made = ensure_demo(demo_dir, demo_size(source, demo), seed, log, demo)
        with serve_directory(demo_dir) as base:
            demo.url_table(made, base).to_parquet(Path(demo_dir) / "laion_demo.parquet", index=False)
            table, read = read_url_list(str(Path(demo_dir) / "laion_demo.parquet"), demo.url_col, demo.caption_col,
                                        id_col="demo_id")
            table, refused = prepare_source_table(_rows(table, rows), policy)
            log(f"raw_images: downloading {len(table)} demo URLs from {base}")
            _download(table, out, ingest_settings, log, download_options)
        samples = collect_samples(table, str(out))
    else:
        table, read = source_table(source, demo_dir, seed)
        # an image folder's file:// URLs are ours; a URL list's are untrusted
        table, refused = prepare_source_table(_rows(table, rows), policy if source.kind == "url_list" else None)
        if table.empty:
            raise ValueError(f"source.path {source.path!r}: no URL left to download; refused before download: "
                             f"{refused['reason'].value_counts().to_dict()}")
        log(f"raw_images: downloading {len(table)} URLs with img2dataset")
        _download(table, out, ingest_settings, log, download_options)
        samples = collect_samples(table, str(out))
    samples = numeric(samples, ["aesthetic", "punsafe", "pwatermark", "original_width", "original_height", "similarity"])
    samples.to_parquet(out / "samples.parquet", index=False)
    refused.to_parquet(out / "refused.parquet", index=False)
    for leftover in ("_input.parquet", "_tmp"):
        path = out / leftover
        if path.is_dir():
            import shutil

            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    stats = download_stats(samples, time.perf_counter() - started)
    stats["refused_before_download"] = int(len(refused))
    stats["refused_by_reason"] = {str(k): int(v) for k, v in sorted(refused["reason"].value_counts().items())}
    return {**stats, **read}


def _rows(table: pd.DataFrame, rows: tuple[int, int] | None) -> pd.DataFrame:
    if rows is None:
        return table
    if rows[1] > len(table):
        raise ValueError(f"source part rows {rows[0]}-{rows[1]}: the source plan holds only {len(table):,} rows now; "
                         "its rows were removed since the part was registered")
    return table.iloc[rows[0]:rows[1]]


def webdataset_table(source, seed: int) -> pd.DataFrame:
    samples = webdataset_samples(source.path)
    if source.limit and source.limit < len(samples):
        samples = samples.sample(n=source.limit, random_state=seed).sort_index()
    return samples


def source_rows(source, demo_dir: str, seed: int, log=print, demo: Demo | None = None) -> pd.DataFrame:
    """The source plan, the table ingest slices parts from, in its order: `image_id` (the item's stable id, as
    ingest gives it) and `where` (its URL, file:// path or demo id). The demo's files are made if missing."""
    if source.kind == "demo":
        made = ensure_demo(demo_dir, demo_size(source, demo or image_demo()), seed, log, demo or image_demo())
        keys = made["demo_id"].astype(str)
        return pd.DataFrame({"image_id": [stable_id(k) for k in keys], "where": keys})
    table = webdataset_table(source, seed) if source.kind == "webdataset" else source_table(source, demo_dir, seed)[0]
    return pd.DataFrame({"image_id": table["image_id"].astype(str), "where": table["url"].astype(str)})


def _download(table: pd.DataFrame, out: Path, settings, log=print, options: dict | None = None) -> None:
    """img2dataset over `table` with ingest.distributor, unless the engine's `options` (Engine.download_options;
    the ray engine's: its `ray` distributor on its own cluster) say otherwise."""
    options = {"distributor": settings.distributor, **(options or {})}
    download_with_img2dataset(
        table, str(out), processes=settings.processes, threads=settings.threads,
        samples_per_shard=settings.samples_per_shard, timeout=settings.timeout, retries=settings.retries,
        user_agent_token=settings.user_agent_token, respect_opt_out=settings.respect_opt_out, log=log, **options)


def ensure_demo(demo_dir: str, n: int, seed: int, log=print, demo: Demo | None = None) -> pd.DataFrame:
    """The `demo`'s files for (n, seed) (image_demo() by default), generated once and reused while the generator is
    unchanged; `files/` is what the demo server serves."""
    demo = demo or image_demo()
    folder = Path(demo_dir)
    stamp = folder / "demo.json"
    table_path = folder / "demo_rows.parquet"
    wanted = {"n": n, "seed": seed, "version": demo.version, **demo.stamp}
    if stamp.exists() and table_path.exists() and json.loads(stamp.read_text()) == wanted:
        return pd.read_parquet(table_path)
    log(f"raw_images: generating the {demo.title} data set ({n} {demo.noun}, seed {seed}) in {folder}")
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    made = demo.make(folder, n=n, seed=seed)
    made.to_parquet(table_path, index=False)
    stamp.write_text(json.dumps(wanted))
    return made
