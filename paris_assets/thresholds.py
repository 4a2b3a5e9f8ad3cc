"""Which filter.max_punsafe and quality.min_aesthetic keep ordinary photographs: every image under a folder is
cropped as the filter crops it, embedded by the settings' CLIP image encoder and scored by LAION's two heads, as
clip_image_embeddings and quality_scores do; then the share each threshold keeps is printed (docs/thresholds.md).

    python -m paris_assets.thresholds --photos DIR [--config paris.yaml] [--limit N] [--json out.json]

Only the paris profile (real CLIP ViT-L/14 and the LAION heads) gives figures worth reading; with the tiny
profile the weights are random and the command only shows that the path runs.
"""

from __future__ import annotations

import argparse
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .assets.filtered_images import filter_params
from .assets.quality import load_heads
from .lib.dedup.protected import IMAGE_SUFFIXES
from .lib.images.decode import Rejected
from .lib.images.units import FilterParams, process_image
from .lib.run.crops import decode_crops
from .models import heads
from .models.profiles import load_model, model_identity, model_metadata
from .settings import Settings, SettingsError, load_settings

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
PUNSAFE_THRESHOLDS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)  # kept: punsafe <= t, as cluster_labels keeps (quality_drops)
AESTHETIC_THRESHOLDS = (4.0, 4.5, 5.0, 5.5, 6.0, 6.5)  # kept: aesthetic >= t; LAION-Aesthetics V2 cut at 4.5 ... 6.5
KEEP = 0.99  # the share of ordinary photographs a max_punsafe should keep
CHUNK = 1024  # files cropped and embedded at a time: only the embeddings of a large folder stay in memory
RANDOM_NOTE = ("!!! RANDOM WEIGHTS (tiny profile: {parts}): these figures mean nothing. Measure with models.profile: "
               "paris (real CLIP ViT-L/14 and the LAION heads), on a GPU.")


def list_photos(folder: Path, limit: int | None = None, seed: int = 0) -> list[Path]:
    """Image files under `folder` (recursive, by suffix), sorted; with `limit`, a seeded sample of that many."""
    found = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise FileNotFoundError(f"--photos {folder}: no images ({' '.join(IMAGE_SUFFIXES)}) under it")
    if limit is not None and limit < len(found):
        picked = np.random.default_rng(seed).choice(len(found), size=limit, replace=False)
        found = [found[i] for i in sorted(picked)]
    return found


def crop_photos(files: list[Path], params: FilterParams, threads: int = 8) -> tuple[list[bytes], list[dict]]:
    """(stored crops of the files the filter keeps, in order; one {file, reason, detail} per file it refuses).
    process_image is the filter's own per-image function, so each crop is the JPEG filtered_images would store."""
    def one(path: Path):
        try:
            return process_image(path.read_bytes(), params)[1]
        except Rejected as rejected:
            return {"file": str(path), "reason": rejected.reason, "detail": rejected.detail}

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(one, files))
    return [r for r in results if isinstance(r, bytes)], [r for r in results if isinstance(r, dict)]


def embed_crops(model, crops: list[bytes], batch: int) -> np.ndarray:
    """(N, D) embeddings of the stored crops, decoded and preprocessed as clip_image_embeddings does."""
    return np.concatenate([np.asarray(model(model.preprocess(decode_crops(crops[i:i + batch]))))
                           for i in range(0, len(crops), batch)])


def quantiles(values: np.ndarray, qs: tuple[float, ...] = QUANTILES) -> dict[str, float]:
    """{"1%": value, ...}: numpy's default (linear) quantiles."""
    return {f"{q * 100:g}%": float(v) for q, v in zip(qs, np.quantile(np.asarray(values, np.float64), qs))}


def threshold_table(scores: dict[str, np.ndarray]) -> list[dict]:
    """One row per threshold: punsafe <= t and aesthetic >= t, each with the photos it keeps and their share."""
    rows = []
    for signal, thresholds, keeps in (("punsafe", PUNSAFE_THRESHOLDS, np.less_equal),
                                      ("aesthetic", AESTHETIC_THRESHOLDS, np.greater_equal)):
        values = np.asarray(scores[signal], np.float32)  # float32, as scores.parquet holds them
        for t in thresholds:
            kept = int(keeps(values, t).sum())
            rows.append({"signal": signal, "rule": f"{signal} {'<=' if signal == 'punsafe' else '>='} {t:g}",
                         "threshold": t, "kept": kept, "share": kept / len(values)})
    return rows


def smallest_max_punsafe(punsafe: np.ndarray, keep: float = KEEP) -> float:
    """The smallest max_punsafe that keeps at least `keep` of the photos: the ceil(keep * N)-th smallest score
    (kept means punsafe <= max_punsafe)."""
    ordered = np.sort(np.asarray(punsafe, np.float32))
    rank = max(1, math.ceil(round(keep * len(ordered), 9)))  # round: 0.99 * 100 is 98.99999999999999
    return float(ordered[rank - 1])


def measure(settings: Settings, folder: Path, limit: int | None = None) -> dict:
    """The report of `folder`'s photographs under these settings (what main prints and writes as JSON)."""
    files = list_photos(folder, limit, settings.seed)
    params, loaded = filter_params(settings), load_heads(settings)  # the heads first: a wrong path fails at once
    model = load_model(settings, "clip_image_encoder")
    parts, refused = [], []
    for start in range(0, len(files), CHUNK):
        crops, failed = crop_photos(files[start:start + CHUNK], params, settings.ingest.threads)
        refused += failed
        if crops:
            parts.append(embed_crops(model, crops, settings.models.image_batch_size))
    if not parts:
        raise ValueError(f"--photos {folder}: the filter refused all {len(files)} images "
                         f"(first: {refused[0]['file']}: {refused[0]['reason']} {refused[0]['detail']})")
    embeddings = np.concatenate(parts)
    scores = {"aesthetic": heads.score(loaded["aesthetic"], embeddings),
              "punsafe": heads.score(loaded["nsfw"], embeddings)}
    random_parts = _random_parts(settings, loaded)
    return {
        "model": model_metadata(model), "heads": _head_sources(loaded),
        "random_weights": random_parts, "photos": len(embeddings), "files": len(files), "refused": refused,
        "crop": {"image_size": settings.filter.image_size, "resize_mode": settings.filter.resize_mode},
        "quantiles": {signal: quantiles(v) for signal, v in scores.items()},
        "thresholds": threshold_table(scores),
        "smallest_max_punsafe": {"keep": KEEP, "value": smallest_max_punsafe(scores["punsafe"])},
    }


def _random_parts(settings: Settings, loaded: dict) -> list[str]:
    """Which of the three models are the tiny profile's random ones, read from what was loaded."""
    parts = ["CLIP image encoder"] if model_identity(settings, "clip_image_encoder")["model_id"] == "tiny" else []
    for kind, head in loaded.items():
        if heads.head_identity(head) == heads.head_identity(heads.tiny_head(kind, settings.seed)):
            parts.append(f"{kind} head")
    return parts


def _head_sources(loaded: dict) -> dict:
    """Where each head came from (load_heads records it) and a digest of its weights."""
    return {kind: {"source": head.source, "sha256": heads.head_identity(head)} for kind, head in loaded.items()}


def format_report(report: dict) -> str:
    """The report as the text main prints."""
    note = RANDOM_NOTE.format(parts=", ".join(report["random_weights"])) if report["random_weights"] else ""
    m = report["model"]
    lines = [note] if note else []
    lines += [f"CLIP image encoder: {m['model_id']} @ {m['revision']} ({m['device']}, {m['dtype']})"]
    lines += [f"{kind} head: {h['source']} (sha256 {h['sha256']})" for kind, h in report["heads"].items()]
    crop = report["crop"]
    lines.append(f"photos: {report['photos']} scored of {report['files']} files "
                 f"({crop['resize_mode']} {crop['image_size']} px, as the filter crops)")
    lines += [f"  refused by the filter: {r['file']}: {r['reason']} {r['detail']}".rstrip() for r in report["refused"]]
    names = list(next(iter(report["quantiles"].values())))
    lines += ["", f"{'quantiles':<11}" + "".join(f"{n:>11}" for n in names)]
    for signal, qs in report["quantiles"].items():
        lines.append(f"{signal:<11}" + "".join(f" {v:>10.4g}" for v in qs.values()))
    lines += ["", f"{'threshold':<18}{'kept':>12}{'share':>10}"]
    for r in report["thresholds"]:
        lines.append(f"{r['rule']:<18}{r['kept']:>6} / {report['photos']:<4}{r['share'] * 100:>9.1f}%")
    smallest = report["smallest_max_punsafe"]
    lines += ["", f"smallest max_punsafe keeping {smallest['keep']:.0%} of them: {shortest(smallest['value'])}"]
    return "\n".join(lines + ([note] if note else []))


def shortest(value: float) -> str:
    """A float32 score in its shortest form that reads back as the same float32 (a max_punsafe set to it keeps it)."""
    return repr(float(str(np.float32(value))))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True, help="folder of ordinary photographs (recursive)")
    parser.add_argument("--config", help="settings file (default: paris.yaml or $PARIS_CONFIG)")
    parser.add_argument("--limit", type=int, help="a seeded sample of this many files")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    try:
        report = measure(load_settings(args.config), args.photos, args.limit)
    except (FileNotFoundError, SettingsError) as exc:  # what the user typed: no traceback needed
        parser.exit(2, f"error: {exc}\n")
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
