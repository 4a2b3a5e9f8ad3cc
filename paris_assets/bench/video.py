"""Video throughput (media: video): `python -m paris_assets.bench.video` or `python -m paris_assets.bench --only video`.

1. Decode+filter, clips/s and MB/s of source: lib/video/decode.process_video per clip (what filtered_images' worker
   runs), beside the naive way (PyAV decodes every frame, each made a PIL image, resized and centre-cropped,
   17 frames picked at 8 fps by index, a frame-difference static check on the PIL frames), in the same worker
   processes over the same files. Both store the clip with the same encode_clip, so the output is the same kind.
   Inputs: the video demo's clips that pass per clip (clean, odd encodings, near copies: duplicates are a folder
   decision) and real videos: Dagster_world.mp4 (in dagster_webserver's wheel) and, when bench_photos' cache
   holds them, OpenCV's vtest, Megamind and tree.avi (not fetched here: `python -m paris_assets.bench.photos`).
2. Each model stage of media: video on the tiny profile over the clips kept at 128 px: rows/s and the share of
   wall time inside the model (lib/run/stages' stats); latents also at 256 px (all kept clips: ~30 s here).

Timings are noisy on a shared machine: compare the ratios; per-clip CPU milliseconds are beside them.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd
from PIL import Image

from ..lib.images.decode import Rejected
from ..lib.outputs.tars import TarShardWriter
from ..lib.video.decode import VideoParams, encode_clip, process_video

OPENCV_DATA = "opencv-doc/usr/share/doc/opencv-doc/examples/data"
OPENCV_VIDEOS = ("vtest.avi", "Megamind.avi", "tree.avi")
PASSES_PER_CLIP = ("kept", "duplicate_near", "duplicate_exact")  # demo fates process_video keeps (dedup is later)


def real_videos(cache: str | Path | None = None) -> list[Path]:
    """Dagster_world.mp4 (always installed with dagster-webserver), then the OpenCV samples already in the cache."""
    import dagster_webserver

    cache = Path(cache or os.environ.get("PARIS_PHOTOS_CACHE", Path.home() / ".cache" / "paris-assets" / "photos"))
    found = [Path(dagster_webserver.__file__).parent / "webapp" / "build" / "Dagster_world.mp4"]
    return found + [cache / OPENCV_DATA / name for name in OPENCV_VIDEOS if (cache / OPENCV_DATA / name).exists()]


def demo_clips(folder: Path, n: int, seed: int = 0) -> tuple[list[Path], dict[str, str]]:
    """(files, caption by file name) of the video demo's clips that pass process_video."""
    from ..lib.demo.video import make_video_demo

    table = make_video_demo(folder, n=n, seed=seed)
    table = table[table["expected"].isin(PASSES_PER_CLIP) & table["caption"].notna()]
    return [folder / "files" / name for name in table["name"]], dict(zip(table["name"], table["caption"]))


def naive_clip(data: bytes, params: VideoParams) -> bytes:
    """The clip the way it is usually written: every frame decoded and made a PIL image at full size, then
    resized and cropped; frames picked by index at the nominal rate. Raises Rejected as process_video does."""
    size = params.image_size
    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or 25)
            frames = []
            for frame in container.decode(stream):
                image = frame.to_image()
                w, h = image.size
                if min(w, h) < params.min_side:
                    raise Rejected("too_small", f"{w}x{h}")
                scale = size / min(w, h)
                image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
                left, top = (image.width - size) // 2, (image.height - size) // 2
                frames.append(image.crop((left, top, left + size, top + size)))
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise Rejected("undecodable", str(exc)) from None
    if len(frames) / rate < max(params.min_seconds, params.window_seconds):
        raise Rejected("too_short", f"{len(frames)} frames at {rate:g} fps")
    picked = [frames[min(int(j * rate / params.fps), len(frames) - 1)] for j in range(params.num_frames)]
    grey = np.stack([np.asarray(f.convert("L").resize((32, 32), Image.BOX), np.int16) for f in picked])
    motion = float(np.abs(np.diff(grey, axis=0)).mean())
    if motion < params.static_threshold:
        raise Rejected("static", f"mean frame difference {motion:.3f}")
    return encode_clip(np.stack([np.asarray(f) for f in picked]), params.fps, params.crf)


def _clip_task(task: tuple[str, str, VideoParams]) -> dict:
    """One clip by one path in a worker: the file read there, as the filter's worker reads its shard."""
    how, path, params = task
    data = Path(path).read_bytes()
    started = time.process_time()
    facts, stored = {}, None
    try:
        if how == "ours":
            facts, stored = process_video(data, params)
        else:
            stored = naive_clip(data, params)
        reason = ""
    except Rejected as rejected:
        reason = rejected.reason
    return {"path": path, "reason": reason, "cpu_s": time.process_time() - started, "stored": stored,
            "size": f"{facts.get('width', 0)}x{facts.get('height', 0)}", "seconds": facts.get("duration", 0.0),
            "fps": facts.get("fps", 0.0)}


def _start_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # as lib/video/units: one clip at a time per worker, the pool is the parallelism


def run_clips(pool, how: str, paths: list[Path], params: VideoParams) -> tuple[float, list[dict]]:
    """(wall seconds, one result per path in order) of `how` over the paths in the pool, largest file first."""
    order = sorted(range(len(paths)), key=lambda i: -paths[i].stat().st_size)
    started = time.perf_counter()
    results = pool.map(_clip_task, [(how, str(paths[i]), params) for i in order], chunksize=1)
    wall = time.perf_counter() - started
    by_index = dict(zip(order, results))
    return wall, [by_index[i] for i in range(len(paths))]


def bench_decode(sets: dict[str, list[Path]], params: VideoParams, processes: int, also_sizes: tuple[int, ...] = (),
                 rounds: int = 2) -> dict:
    """Ours and the naive path over each named set of files, in the same `processes` spawned workers (warmed up on
    the smallest file first), `rounds` times in alternating order (ours first, then naive first), so a change in
    the machine's load falls on both. Returns rows (set, clips, MB, clips/s and MB/s of each, mean CPU ms per clip,
    the files each kept, and the refusals one made where the other kept: reason -> count), per-clip results (CPU
    seconds averaged over the rounds), and ours' results at each of `also_sizes` px (the model stages' inputs)."""
    everything = [p for paths in sets.values() for p in paths]
    smallest = min(everything, key=lambda p: p.stat().st_size)
    rows, clips, resized = [], {}, {}
    with multiprocessing.get_context("spawn").Pool(processes, initializer=_start_worker) as pool:
        for how in ("ours", "naive"):
            pool.map(_clip_task, [(how, str(smallest), params)] * 2 * processes, chunksize=1)
        for name, paths in sets.items():
            mb = sum(p.stat().st_size for p in paths) / 1e6
            row = {"set": name, "clips": len(paths), "mb": mb}
            wall, cpu = {"ours": 0.0, "naive": 0.0}, {"ours": np.zeros(len(paths)), "naive": np.zeros(len(paths))}
            for turn in range(rounds):
                for how in ("ours", "naive") if turn % 2 == 0 else ("naive", "ours"):
                    seconds, results = run_clips(pool, how, paths, params)
                    wall[how] += seconds
                    cpu[how] += [r["cpu_s"] for r in results]
                    clips[how, name] = results
            for how in ("ours", "naive"):
                for result, seconds in zip(clips[how, name], cpu[how] / rounds):
                    result["cpu_s"] = seconds
                row.update({f"{how}_clips_per_s": rounds * len(paths) / wall[how],
                            f"{how}_mb_per_s": rounds * mb / wall[how], f"{how}_cpu_ms": 1000 * cpu[how].mean() / rounds,
                            f"{how}_kept": sorted(r["path"] for r in clips[how, name] if not r["reason"])})
            row["only_ours_refused"], row["only_naive_refused"] = (
                pd.Series([r["reason"] for r in clips[a, name] if r["reason"] and r["path"] in row[f"{b}_kept"]],
                          dtype=str).value_counts().to_dict() for a, b in (("ours", "naive"), ("naive", "ours")))
            row["ratio"] = row["ours_clips_per_s"] / row["naive_clips_per_s"]
            rows.append(row)
        for size in also_sizes:
            wall, results = run_clips(pool, "ours", everything, dataclasses.replace(params, image_size=size))
            resized[size] = {"clips_per_s": len(everything) / wall, "results": results}
    return {"rows": rows, "clips": clips, "resized": resized}


def per_clip(clips: dict) -> pd.DataFrame:
    """One row per clip both paths kept: ours' facts, CPU ms of each, naive / ours."""
    frames = []
    for (how, name), results in clips.items():
        if how == "ours":
            naive = {r["path"]: r["cpu_s"] for r in clips["naive", name] if not r["reason"]}
            frames.append(pd.DataFrame([{"set": name, "file": Path(r["path"]).name, "size": r["size"],
                                         "seconds": r["seconds"], "fps": r["fps"], "ours_ms": 1000 * r["cpu_s"],
                                         "naive_ms": 1000 * naive[r["path"]]} for r in results
                                        if not r["reason"] and r["path"] in naive]))
    table = pd.concat(frames, ignore_index=True)
    table["ratio"] = table["naive_ms"] / table["ours_ms"]
    return table


def write_kept(folder: Path, stored: dict[str, bytes], captions: dict[str, str]) -> pd.DataFrame:
    """A filtered_images-like folder of the stored clips (crops/shard-000000.tar, member mp4) and the kept table
    the model stages read (image_id, alt_text, crop_shard)."""
    (folder / "crops").mkdir(parents=True, exist_ok=True)
    ids = [f"{i:016x}" for i in range(len(stored))]
    with open(folder / "crops" / "shard-000000.tar", "wb") as fh, TarShardWriter(fh) as writer:
        for image_id, blob in zip(ids, stored.values()):
            writer.write(image_id, {"mp4": blob})
    kept = pd.DataFrame({"image_id": ids, "alt_text": [captions[name] for name in stored],
                         "crop_shard": "crops/shard-000000.tar"})
    kept.to_parquet(folder / "kept.parquet", index=False)
    return kept


# (label, role, stage function, batch size setting, keyword arguments); captions come from alt_text with media: video
STAGES = (("clip_embeddings: CLIP text", "text_encoder", "encode_texts", "text_batch_size", {}),
          ("clip_embeddings: T5", "t5_encoder", "encode_t5", "text_batch_size", {}),
          ("dinov2_embeddings: first frame", "image_embedder", "embed_images", "image_batch_size", {"frames": "first"}),
          ("dinov2_embeddings: keyframes", "image_embedder", "embed_images", "image_batch_size",
           {"frames": "keyframes"}),
          ("clip_image_embeddings: first frame", "clip_image_encoder", "embed_images", "image_batch_size",
           {"frames": "first"}),
          ("latents: video VAE", "video_latent_encoder", "encode_latents", "latent_batch_size", {"clips": True}))


def bench_stages(folder: Path, kept: pd.DataFrame, image_size: int, only: tuple[str, ...] = (),
                 repeats: int = 3) -> list[dict]:
    """Each stage (or those whose label starts with one of `only`) over the kept clips in `folder`, with the tiny
    profile's models built under `folder`/data; each model loaded and run once on a batch's worth first. A stage
    over in under 2 s (most, with tiny models) is run `repeats` times and the median run's stats kept."""
    from ..lib.run import stages
    from ..lib.store.chunks import ChunkStore
    from ..models.profiles import load_model
    from ..settings import parse_settings

    settings = parse_settings({"data_dir": str(folder / "data"), "media": "video", "models": {"profile": "tiny"},
                               "filter": {"image_size": image_size}, "captions": {"source": "alt_text"}})
    captions = stages.captions_table(kept, None)
    rows, models = [], {}
    for label, role, function, batch_setting, kwargs in STAGES:
        if only and not label.startswith(only):
            continue
        if role not in models:
            models[role] = load_model(settings, role)
        model = models[role]
        batch = getattr(settings.models, batch_setting)
        table = captions if function.startswith("encode_t") else kept
        extra = {} if function.startswith("encode_t") else {"crops_url": str(folder)}
        runs = []
        for n in (min(batch, len(table)), *[len(table)] * repeats):
            out = folder / f"out-{function}-{len(rows)}-{len(runs)}"
            out.mkdir(parents=True)
            store = ChunkStore(folder / f"work-{function}-{len(rows)}-{len(runs)}", n, settings.models.chunk_size)
            runs.append(getattr(stages, function)(table.iloc[:n], model=model, store=store, out_dir=out,
                                                  batch_size=batch, threads=settings.models.loader_threads,
                                                  log=lambda m: None, **extra, **kwargs))
            store.remove()
            if len(runs) > 1 and runs[-1]["wall_seconds"] > 2:  # long enough to be one measurement
                break
        stats = sorted(runs[1:], key=lambda r: r["rows_per_s"])[(len(runs) - 2) // 2]
        rows.append({"stage": label, "px": image_size, "rows": stats["rows"], "rows_per_s": stats["rows_per_s"],
                     "model_share": stats["model_share"], "seconds": stats["wall_seconds"], "batch": batch,
                     "runs": len(runs) - 1, "shapes": stats["shapes"]})
    return rows


def measure(workdir: Path, demo_n: int = 48, processes: int = 2, real: bool = True, latents_256: int | None = None,
            limit: int | None = None) -> dict:
    """Everything the bench prints: decode+filter at 256 px on the demo (its first `limit` clips) and real sets,
    then the model stages on the clips kept at 128 px, and the video VAE at 256 px over the first `latents_256`
    clips kept there (None: all; 0: none)."""
    demo, captions = demo_clips(workdir / "demo", demo_n)
    sets = {f"video demo ({len(demo[:limit])} clips)": demo[:limit]}
    if real:
        videos = real_videos()
        sets[f"real ({', '.join(p.name for p in videos)})"] = videos
        captions.update({p.name: f"frames from {p.stem}" for p in videos})
    decode = bench_decode(sets, VideoParams(), processes, also_sizes=(128,))
    stored = {Path(r["path"]).name: r["stored"] for r in decode["resized"][128]["results"] if not r["reason"]}
    kept = write_kept(workdir / "kept-128", stored, captions)
    stage_rows = bench_stages(workdir / "kept-128", kept, 128)
    big = {Path(r["path"]).name: r["stored"] for (how, _), results in decode["clips"].items() if how == "ours"
           for r in results if not r["reason"]}
    if latents_256 != 0:
        big = dict(list(big.items())[:latents_256])
        stage_rows += bench_stages(workdir / "kept-256", write_kept(workdir / "kept-256", big, captions), 256,
                                   only=("latents",))
    clips = per_clip(decode["clips"])
    demo_rows = clips[clips["set"] == next(iter(sets))].sort_values("ratio")
    quiet = {"least favourable": demo_rows.iloc[0], "median": demo_rows.iloc[len(demo_rows) // 2]}
    quiet = {label: {**row.to_dict(), **retime(workdir / "demo" / "files" / row["file"], VideoParams())}
             for label, row in quiet.items()}
    return {**decode, "per_clip": clips, "quiet": quiet, "stages": stage_rows, "processes": processes,
            "encode_ms": encode_ms(list(big.values())[:16])}


def retime(path: Path, params: VideoParams, repeats: int = 5) -> dict[str, float]:
    """CPU milliseconds of one file here, best of `repeats`: ours, ours without the encode (probe_and_decode), the
    naive path. The pool's per-clip times are single runs on a shared machine; this is the quiet figure."""
    import cv2

    from ..lib.video.decode import probe_and_decode

    cv2.setNumThreads(1)
    data = path.read_bytes()
    best = {}
    for name, run in (("ours", process_video), ("ours_decode", probe_and_decode), ("naive", naive_clip)):
        times = []
        for _ in range(repeats + 1):  # the first is a warm-up
            started = time.process_time()
            run(data, params)
            times.append(time.process_time() - started)
        best[f"{name}_ms"] = 1000 * min(times[1:])
    return best


def encode_ms(stored: list[bytes]) -> float:
    """CPU milliseconds of encode_clip per clip, here, on stored clips decoded again: the part both paths share."""
    from ..lib.video.decode import decode_clip

    clips = [decode_clip(b) for b in stored]
    started = time.process_time()
    for clip in clips:
        encode_clip(clip, VideoParams.fps, VideoParams.crf)
    return 1000 * (time.process_time() - started) / max(len(clips), 1)


def print_report(report: dict) -> None:
    n = report["processes"]
    print(f"\n{'decode+filter, 256 px, 17 frames at 8 fps, ' + str(n) + ' proc':<58} {'ours':>20} {'naive PIL':>20} "
          f"{'x naive':>8}  CPU ms/clip ours / naive, kept ours / naive")
    for r in report["rows"]:
        print(f"{r['set']:<58} {r['ours_clips_per_s']:>7.1f} clips/s {r['ours_mb_per_s']:>4.1f} MB/s "
              f"{r['naive_clips_per_s']:>5.1f} clips/s {r['naive_mb_per_s']:>4.1f} MB/s {r['ratio']:>7.1f}x  "
              f"{r['ours_cpu_ms']:.0f} / {r['naive_cpu_ms']:.0f}, {len(r['ours_kept'])} / {len(r['naive_kept'])} "
              f"of {r['clips']} ({r['mb']:.1f} MB){_differences(r)}")
    clips = report["per_clip"]
    demo = clips[clips["set"].str.startswith("video demo")]
    print(f"per clip, CPU in the pool: demo naive/ours median {demo['ratio'].median():.2f}x, range "
          f"{demo['ratio'].min():.2f}-{demo['ratio'].max():.2f}x")
    for label, r in report["quiet"].items():
        print(f"    {label} demo clip, {r['file']} ({r['size']}, {r['seconds']:.1f} s at {r['fps']:g} fps), timed again "
              f"alone, best of 5: ours {r['ours_ms']:.0f} ms (decode and checks {r['ours_decode_ms']:.0f}, the rest "
              f"encode_clip), naive {r['naive_ms']:.0f} ms ({r['naive_ms'] / r['ours_ms']:.2f}x)")
    for _, r in clips[~clips["set"].str.startswith("video demo")].iterrows():
        print(f"    {r['file']:<18} {r['size']:>8} {r['seconds']:>5.1f} s {r['fps']:>6g} fps: ours {r['ours_ms']:>5.0f} ms, "
              f"naive {r['naive_ms']:>6.0f} ms ({r['ratio']:.1f}x)")
    enc = report["encode_ms"]
    less = [f"{r['set'].split(' (')[0]} ours {r['ours_cpu_ms'] - enc:.0f} vs naive {r['naive_cpu_ms'] - enc:.0f} ms "
            f"({(r['naive_cpu_ms'] - enc) / max(r['ours_cpu_ms'] - enc, 1):.1f}x)" for r in report["rows"]]
    print(f"encode_clip of the stored 17x256x256 clip, the same call in both paths: {enc:.0f} ms CPU a clip (timed "
          f"apart, one process); the rest, decode and checks: {', '.join(less)}")
    for size, r in report["resized"].items():
        print(f"ours at {size} px, every file above: {r['clips_per_s']:.1f} clips/s (the model stages' inputs)")
    print(f"\n{'model stage (tiny, media: video, CPU)':<38} {'px':>4} {'clips':>6} {'clips/s':>9} {'model share':>12} "
          f"{'wall s':>7} {'runs':>5}  output")
    for r in report["stages"]:
        shapes = ", ".join(f"{k} {tuple(v)}" for k, v in r["shapes"].items())
        print(f"{r['stage']:<38} {r['px']:>4} {r['rows']:>6} {r['rows_per_s']:>9.1f} {r['model_share']:>12.2f} "
              f"{r['seconds']:>7.1f} {r['runs']:>5}  {shapes}")


def _differences(row: dict) -> str:
    """What one path refused that the other kept: the naive path has no cut detector, so ours' scene_cut rows."""
    said = [f"only ours refused {row['only_ours_refused']}"] if row["only_ours_refused"] else []
    said += [f"only naive refused {row['only_naive_refused']}"] if row["only_naive_refused"] else []
    return f"; {', '.join(said)}" if said else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=int, default=48, help="clean clips the video demo draws")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--latents-256", type=int, default=None,
                        help="clips through the video VAE at 256 px (default: all kept, ~45 s here; 0: none)")
    parser.add_argument("--no-real", action="store_true", help="leave out Dagster_world.mp4 and the OpenCV videos")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # CLIP's image tower loads from the whole CLIP checkpoint: its text keys are unused
    hf_logging.disable_progress_bar()  # building the tiny models draws one bar per save
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report = measure(Path(tmp), args.demo, args.processes, not args.no_real, args.latents_256)
    print_report(report)
    print(f"({time.perf_counter() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
