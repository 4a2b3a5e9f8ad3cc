"""The command line a user types: `dagster asset materialize -m paris_assets.definitions`, on a real instance."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from paris_assets.settings import PROJECT_ROOT


def test_dagster_cli_materialises_from_a_settings_file(tmp_path, demo_files):
    folder, _ = demo_files
    shutil.copytree(folder / "files", tmp_path / "inbox")  # a relative path: resolved against paris.yaml's folder
    (tmp_path / "paris.yaml").write_text(
        "data_dir: data\nsource: {kind: image_folder, path: inbox, limit: 40}\n"
        "ingest: {processes: 1, threads: 4}\nfilter: {processes: 1, require_caption: false}\n")
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ, DAGSTER_HOME=str(home), PARIS_CONFIG=str(tmp_path / "paris.yaml"))
    dagster = Path(sys.executable).parent / "dagster"
    done = subprocess.run([str(dagster), "asset", "materialize", "-m", "paris_assets.definitions",
                           "--select", "raw_images,filtered_images"],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    progress = [line for line in done.stderr.splitlines() if "filtered_images: decoded: " in line]
    assert progress and "/s, ETA done" in progress[-1]  # the same progress lines as in the UI's run log
    kept = pd.read_parquet(tmp_path / "data" / "filtered_images" / "kept.parquet")
    assert 20 < len(kept) <= 40
    assert (home / "history").exists() or (home / "storage").exists()  # the run is in the instance


def test_a_bad_settings_file_stops_loading_with_the_key(tmp_path):
    (tmp_path / "paris.yaml").write_text("filter: {resize_mode: crop}\n")
    env = dict(os.environ, PARIS_CONFIG=str(tmp_path / "paris.yaml"))
    done = subprocess.run([sys.executable, "-c", "import paris_assets.definitions"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "filter.resize_mode: got 'crop'; allowed values: 'center_crop', 'border' or 'stretch'" in done.stderr
