import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from dagster import DagsterInstance  # noqa: E402

from paris_assets.definitions import build_defs  # noqa: E402
from paris_assets.lib.demo import make_demo  # noqa: E402
from paris_assets.settings import PROJECT_ROOT, parse_settings  # noqa: E402

SMALL_DEMO = 64  # clean images in the test demo: every planted problem still appears


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory) -> tuple[Path, "object"]:
    """A small demo data set on disk (files/ + the row table), generated once per test session."""
    folder = tmp_path_factory.mktemp("demo")
    table = make_demo(folder, n=SMALL_DEMO, seed=0)
    return folder, table


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """The whole graph materialised once on the small demo (K=4, six samples per shard, jpg in the shards):
    (settings(k, **report), run(settings, selection), instance, data folder). test_training re-runs parts of it
    with other settings; other modules copy what they change."""
    root = tmp_path_factory.mktemp("training")
    home = root / "home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    instance = DagsterInstance.local_temp(str(home))

    def settings(k=4, **report):
        return parse_settings({
            "data_dir": str(root / "data"), "source": {"kind": "demo", "demo_size": 64},
            "ingest": {"processes": 1, "threads": 8}, "filter": {"processes": 1}, "captions": {"source": "alt_text"},
            "clustering": {"k": k}, "report": {"max_silhouette_drop": 1.0, **report},
            "shards": {"max_samples_per_shard": 6, "heldout_fraction": 0.1, "include_jpg": True}}, base_dir=root)

    def run(s, selection=None):
        return build_defs(s).resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=selection, raise_on_error=False)

    result = run(settings())
    assert result.success
    return settings, run, instance, root / "data"
