"""python -m paris_assets.thresholds on real photographs (scikit-learn's two and the Debian packages' that
bench_photos unpacks), with the tiny profile: the printed table and the JSON against a direct computation through
the pipeline's own pieces, and the keep rule against cluster_labels' (lib/quality/signals.quality_drops).

With PARIS_AESTHETIC_PTH and PARIS_NSFW_ZIP set to the upstream files (as test_heads reads them), the real heads
also run through the command, over tiny CLIP features."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from paris_assets.assets.filtered_images import filter_params
from paris_assets.assets.quality import load_heads
from paris_assets.bench.photos import PHOTOS, sklearn_photos
from paris_assets.models import heads
from paris_assets.lib.images.units import process_image
from paris_assets.lib.run.crops import decode_crops
from paris_assets.lib.images.decode import Rejected
from paris_assets.lib.quality.signals import quality_drops, scores_table
from paris_assets.models.profiles import load_model
from paris_assets.settings import PROJECT_ROOT, load_settings
from paris_assets.thresholds import (AESTHETIC_THRESHOLDS, PUNSAFE_THRESHOLDS, QUANTILES, list_photos,
                                     smallest_max_punsafe, threshold_table)

WANTED = 14  # photographs copied into the test folder
ROW = re.compile(r"^(punsafe <=|aesthetic >=) (\S+)\s+(\d+) / (\d+)\s+([\d.]+)%$")


def real_photographs() -> list[Path]:
    """Photographs already on this machine: scikit-learn's, then those bench_photos unpacked into its cache (or
    installed by the same Debian packages). Nothing is downloaded."""
    cache = Path(os.environ.get("PARIS_PHOTOS_CACHE", Path.home() / ".cache" / "paris-assets" / "photos"))
    found = list(sklearn_photos())
    for package, paths in PHOTOS.items():
        for p in paths:
            for root in (cache / package, Path("/")):
                if (root / p).is_file():
                    found.append(root / p)
                    break
    return found


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    """WANTED photographs, some in a subfolder (the command reads recursively), and one file that is no image."""
    found = real_photographs()
    if len(found) < 12:
        pytest.skip(f"only {len(found)} real photographs on this machine (run python -m paris_assets.bench.photos "
                    "once to unpack the Debian ones)")
    folder = tmp_path_factory.mktemp("photos")
    (folder / "nested" / "deeper").mkdir(parents=True)
    for i, path in enumerate(found[:WANTED]):
        target = folder if i % 3 == 0 else folder / "nested" if i % 3 == 1 else folder / "nested" / "deeper"
        shutil.copy(path, target / f"{i:02d}_{path.name}")
    (folder / "nested" / "broken.jpg").write_bytes(b"<html>not a photograph</html>")
    (folder / "notes.txt").write_text("not an image suffix: not read")
    return folder


def write_config(folder: Path, **quality) -> Path:
    config = folder / "paris.yaml"
    # A crop unlike the defaults, and batches smaller than the folder, so that both settings are seen to be used.
    config.write_text(yaml.safe_dump({"data_dir": "data", "filter": {"image_size": 224, "resize_mode": "border"},
                                      "models": {"profile": "tiny", "device": "cpu", "image_batch_size": 4},
                                      "quality": quality}))
    return config


def direct(settings, folder: Path) -> dict[str, np.ndarray]:
    """The scores computed by hand: the filter's process_image, the stored crop decoded, the encoder in the
    settings' batches, the heads as quality_scores loads them."""
    params, crops = filter_params(settings), []
    for path in sorted(p for p in folder.rglob("*.*") if p.suffix != ".txt"):
        try:
            crops.append(process_image(path.read_bytes(), params)[1])
        except Rejected:
            assert path.name == "broken.jpg"
    model, batch = load_model(settings, "clip_image_encoder"), settings.models.image_batch_size
    embeddings = np.concatenate([model(model.preprocess(decode_crops(crops[i:i + batch])))
                                 for i in range(0, len(crops), batch)])
    loaded = load_heads(settings)
    return {"aesthetic": heads.score(loaded["aesthetic"], embeddings),
            "punsafe": heads.score(loaded["nsfw"], embeddings)}


def run_command(folder: Path, config: Path, out: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "paris_assets.thresholds", "--photos", str(folder), "--config", str(config),
               "--json", str(out)]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def check_against_direct(stdout: str, report: dict, scores: dict[str, np.ndarray]) -> None:
    n = len(scores["punsafe"])
    assert report["photos"] == n == WANTED and report["files"] == WANTED + 1
    assert [Path(r["file"]).name for r in report["refused"]] == ["broken.jpg"]
    assert f"photos: {n} scored of {WANTED + 1} files (border 224 px" in stdout
    printed = [ROW.match(line) for line in stdout.splitlines() if ROW.match(line)]
    expected = [("punsafe <=", t, int((scores["punsafe"] <= t).sum())) for t in PUNSAFE_THRESHOLDS]
    expected += [("aesthetic >=", t, int((scores["aesthetic"] >= t).sum())) for t in AESTHETIC_THRESHOLDS]
    assert [(m[1], float(m[2]), int(m[3])) for m in printed] == expected
    assert all(int(m[4]) == n and float(m[5]) == round(int(m[3]) / n * 100, 1) for m in printed)
    assert [(r["threshold"], r["kept"]) for r in report["thresholds"]] == [(t, k) for _, t, k in expected]
    assert [r["share"] for r in report["thresholds"]] == [k / n for _, _, k in expected]
    for signal, values in scores.items():
        assert list(report["quantiles"][signal].values()) == pytest.approx(np.quantile(values.astype(np.float64),
                                                                                       QUANTILES), rel=1e-12)
    ordered = np.sort(scores["punsafe"])
    assert report["smallest_max_punsafe"] == {"keep": 0.99, "value": float(ordered[-1])}  # 99 % of 14 is all 14


def test_command_on_real_photographs_with_the_tiny_profile(photo_dir, tmp_path):
    config = write_config(tmp_path)
    stdout = run_command(photo_dir, config, tmp_path / "out.json")
    report = json.loads((tmp_path / "out.json").read_text())
    check_against_direct(stdout, report, direct(load_settings(config), photo_dir))
    lines = stdout.splitlines()
    assert lines[0].startswith("!!! RANDOM WEIGHTS (tiny profile: CLIP image encoder, aesthetic head, nsfw head)")
    assert "these figures mean nothing" in lines[0] and lines[-1] == lines[0]
    assert report["random_weights"] == ["CLIP image encoder", "aesthetic head", "nsfw head"]
    assert report["model"]["model_id"] == str(tmp_path / "data" / "models" / "tiny" / "text_encoder")
    assert {kind: h["source"] for kind, h in report["heads"].items()} == {
        kind: f"tiny profile: seeded random {kind} head" for kind in ("aesthetic", "nsfw")}
    sha = report["heads"]["aesthetic"]["sha256"]
    assert f"aesthetic head: tiny profile: seeded random aesthetic head (sha256 {sha})" in lines


@pytest.mark.skipif(not (os.environ.get("PARIS_AESTHETIC_PTH") and os.environ.get("PARIS_NSFW_ZIP")),
                    reason="set PARIS_AESTHETIC_PTH and PARIS_NSFW_ZIP to the upstream files to run them here")
def test_command_with_the_upstream_heads(photo_dir, tmp_path):
    pth, zipped = os.environ["PARIS_AESTHETIC_PTH"], os.environ["PARIS_NSFW_ZIP"]
    config = write_config(tmp_path, aesthetic_weights=pth, nsfw_weights=zipped)
    stdout = run_command(photo_dir, config, tmp_path / "out.json")
    report = json.loads((tmp_path / "out.json").read_text())
    check_against_direct(stdout, report, direct(load_settings(config), photo_dir))
    assert report["random_weights"] == ["CLIP image encoder"]  # the heads are real; the features still are not
    assert stdout.splitlines()[0].startswith("!!! RANDOM WEIGHTS (tiny profile: CLIP image encoder)")
    assert report["heads"]["aesthetic"]["source"] == pth and report["heads"]["nsfw"]["source"] == zipped


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n", [1, 7, 100, 101, 1000])
def test_table_keeps_what_cluster_labels_keeps(seed, n):
    rng = np.random.default_rng(seed)
    punsafe = rng.choice(np.r_[rng.random(n), PUNSAFE_THRESHOLDS], n).astype(np.float32)  # some exactly at a cut
    aesthetic = rng.choice(np.r_[rng.uniform(3, 8, n), AESTHETIC_THRESHOLDS], n).astype(np.float32)
    kept = pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "aesthetic": np.nan, "punsafe": np.nan})
    table = scores_table(kept, {"aesthetic": aesthetic, "punsafe": punsafe})
    for row in threshold_table({"aesthetic": aesthetic, "punsafe": punsafe}):
        if row["signal"] == "punsafe":
            dropped = quality_drops(table, None, row["threshold"])
        else:
            dropped = quality_drops(table, row["threshold"], 1.0)
        assert row["kept"] == n - len(dropped) and row["share"] == row["kept"] / n


@pytest.mark.parametrize("n", [1, 2, 99, 100, 101, 250, 1000])
def test_smallest_max_punsafe_keeps_99_percent_and_no_smaller_value_does(n):
    punsafe = np.random.default_rng(n).random(n).astype(np.float32) ** 4
    kept = pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "aesthetic": np.nan, "punsafe": np.nan})
    table = scores_table(kept, {"aesthetic": np.full(n, 5.0), "punsafe": punsafe})
    value = smallest_max_punsafe(punsafe)
    assert n - len(quality_drops(table, None, value)) >= 0.99 * n  # the pipeline's own rule keeps 99 % at it
    below = float(np.nextafter(np.float32(value), np.float32(0)))
    assert n - len(quality_drops(table, None, below)) < 0.99 * n


def test_list_photos_reads_recursively_and_samples_by_seed(tmp_path):
    for rel in ("a.jpg", "b.PNG", "x/c.webp", "x/y/d.jpeg", "x/notes.txt", "x/y/e.tif"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    every = list_photos(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in every] == ["a.jpg", "b.PNG", "x/c.webp", "x/y/d.jpeg",
                                                                   "x/y/e.tif"]
    sample = list_photos(tmp_path, limit=3, seed=5)
    assert len(sample) == 3 and sample == sorted(sample) and set(sample) <= set(every)
    assert sample == list_photos(tmp_path, limit=3, seed=5) and list_photos(tmp_path, limit=9) == every
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        list_photos(tmp_path / "empty")
