import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from paris_assets.lib.demo import make_demo  # noqa: E402

SMALL_DEMO = 64  # clean images in the test demo: every planted problem still appears


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory) -> tuple[Path, "object"]:
    """A small demo data set on disk (files/ + the row table), generated once per test session."""
    folder = tmp_path_factory.mktemp("demo")
    table = make_demo(folder, n=SMALL_DEMO, seed=0)
    return folder, table
