"""Shared fixtures (the demo files, the trained demo graph, PostgreSQL, Ray, chromium) and the suite's markers.

Markers are set here, once, from what a test uses (its fixtures, directly or through other fixtures), the file it
lives in and, for Ray, its name: see MARKS_BY_FIXTURE and MARKS_BY_FILE. `slow` is every test that starts
something heavy (a browser, `dagster dev`, Ray, PostgreSQL, moto, a Dagster run of the graph) or is measured slow:
`make test-quick` runs `-m "not slow"`. Under pytest-xdist (`make test`: `-n 2 --dist loadscope`) the scheduler
at the end hands out whole groups (group_of), heaviest first."""

import os
import re
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from paris_assets.lib.demo.images import make_demo  # noqa: E402
from paris_assets.settings import parse_settings  # noqa: E402

from . import builders  # noqa: E402
from .builders import PostgresServer  # noqa: E402,F401  (the type of the postgres_server fixture)

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
    instance = builders.temp_instance(root)

    def settings(k=4, **report):
        return parse_settings({
            "data_dir": str(root / "data"), "source": {"kind": "demo", "demo_size": 64},
            "ingest": {"processes": 1, "threads": 8}, "filter": {"processes": 1}, "captions": {"source": "alt_text"},
            "clustering": {"k": k}, "report": {"max_silhouette_drop": 1.0, **report},
            "shards": {"max_samples_per_shard": 6, "heldout_fraction": 0.1, "include_jpg": True}}, base_dir=root)

    run = builders.graph_runner(instance)
    result = run(settings())
    assert result.success
    return settings, run, instance, root / "data"


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session (builders.postgres_server: initdb in a temp folder, 127.0.0.1, a
    free port, a `dagster` database), stopped at the end by its own PID."""
    with builders.postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole session (test_ray_engine, test_ray_filter), with the engine's own start-up:
    2 CPUs, 2 logical GPUs, a small object store, no dashboard, no usage stats; stopped at the end."""
    from paris_assets.engines import ray as ray_engine

    with ray_engine.ray_session("", num_cpus=2, num_gpus=2, object_store_mb=200, log=lambda m: None) as where:
        yield where


@pytest.fixture
def chromium():
    """Opens a page of Debian's chromium: `with chromium(width, height) as page:` (builders.chromium_page). Fails at
    once when the binary is missing; a test that takes this fixture is marked `browser`."""
    builders.require_chromium()
    return builders.chromium_page


# -- markers ------------------------------------------------------------------------------------------------------

# every mark named here is registered in pyproject.toml (--strict-markers fails on one that is not)
MARKS_BY_FIXTURE = {
    "trained": {"graph"},
    "postgres_server": {"postgres", "graph"},
    "ray_cluster": {"ray"},
    "dagster_ui": {"ui", "browser", "graph"},
    "video_ui": {"ui", "browser", "graph", "video"},
    "chromium": {"browser"},
}
MARKS_BY_FILE = {  # what a file starts inside its tests or module fixtures
    "test_ui.py": {"ui", "browser", "graph"},
    "test_ui_partitions.py": {"ui", "browser", "graph"},
    "test_ui_video.py": {"ui", "browser", "graph", "video"},
    "test_video_graph.py": {"graph", "video"},
    "test_pipeline.py": {"graph"},
    "test_partitions.py": {"graph"},
    "test_gate.py": {"graph"},
    "test_model_stack.py": {"graph"},
    "test_killed_run.py": {"graph"},
    "test_cli.py": {"graph"},
    "test_postgres_instance.py": {"postgres", "graph"},
    "test_ray_engine.py": {"ray"},
    "test_ray_filter.py": {"ray"},
    "test_ray_video.py": {"ray", "video"},
    "test_s3.py": {"s3"},
    "test_video.py": {"video"},
    "test_video_demo.py": {"video"},
    "test_video_filtering.py": {"video"},
    "test_video_models.py": {"video"},
    "test_video_training.py": {"video"},
    "test_browse_video.py": {"video"},
    "test_bench_video.py": {"video"},
}
SLOW_MARKS = {"browser", "ui", "graph", "postgres", "ray", "s3"}
# files whose tests are slow for what they compute rather than what they start (measured with --durations)
SLOW_FILES = {"test_validation_scale.py", "test_bench_partitions.py", "test_bench_parts.py"}
RAY_IN_NAME = re.compile(r"(^|_)ray(_|$)")  # a test elsewhere that starts its own Ray says so in its name

# pytest-xdist (`make test`: -n 2 --dist loadscope): the scheduler below hands out groups of tests, each group
# run whole on one worker. A file is a group (its module fixtures built once), except: every Ray test is in the
# "ray" group (one local Ray at a time on this machine), and the files that read the `trained` session fixture
# are one "trained" group (the graph materialised once; test_training's later re-runs stay in order after the
# others have copied what they read). The scheduler sees node ids only, hence a table of files, checked against
# the fixtures at collection (a file missing here only costs a second build of `trained` on the other worker).
TRAINED_FILES = {"test_browse.py", "test_export.py", "test_killed_run.py", "test_quality.py", "test_training.py"}
# seconds per group in a serial run (--durations of a whole run at bdfddfe, under load): heaviest handed out first
GROUP_SECONDS = {"ray": 400, "test_ui_partitions": 280, "test_ui": 265, "trained": 200, "test_s3": 160,
                 "test_video_graph": 125, "test_ui_video": 95, "test_ingest": 80, "test_postgres_instance": 75,
                 "test_gate": 65, "test_validation_scale": 55, "test_partitions": 55, "test_cli": 30,
                 "test_model_identity": 25, "test_model_stack": 20, "test_pipeline": 15}


def marks_for(item) -> set[str]:
    marks = set(MARKS_BY_FILE.get(item.path.name, ()))
    for name in item.fixturenames:
        marks |= MARKS_BY_FIXTURE.get(name, set())
    if RAY_IN_NAME.search(getattr(item, "originalname", item.name)):
        marks.add("ray")
    if marks & SLOW_MARKS or item.path.name in SLOW_FILES:
        marks.add("slow")
    return marks


def group_of(nodeid: str) -> str:
    """The xdist group of a test, from its node id ("paris_assets_tests/test_x.py::test_name[param]")."""
    path, _, rest = nodeid.partition("::")
    file, name = path.rsplit("/", 1)[-1], rest.rsplit("::", 1)[-1].split("[", 1)[0]
    if "ray" in MARKS_BY_FILE.get(file, ()) or RAY_IN_NAME.search(name):
        return "ray"
    return "trained" if file in TRAINED_FILES else file.removesuffix(".py")


@pytest.hookimpl(tryfirst=True)  # before the mark plugin deselects by -m
def pytest_collection_modifyitems(config, items):
    for item in items:
        for mark in sorted(marks_for(item)):
            item.add_marker(getattr(pytest.mark, mark))
    strays = sorted({item.path.name for item in items
                     if "trained" in item.fixturenames and group_of(item.nodeid) not in ("trained", "ray")})
    if strays:
        warnings.warn(f"conftest.TRAINED_FILES lacks {', '.join(strays)}: under xdist `trained` may be built twice")
    if hasattr(config, "workerinput"):
        # whole groups, heaviest first, each in its own order (so every dependency between its tests holds)
        groups: dict[str, list] = {}
        for item in items:
            groups.setdefault(group_of(item.nodeid), []).append(item)
        items[:] = [item for group in sorted(groups, key=lambda g: -GROUP_SECONDS.get(g, 0)) for item in groups[group]]


def pytest_xdist_make_scheduler(config, log):
    """--dist loadscope (or loadgroup) by group_of instead of by module. pytest-xdist's own xdist_group marks
    are lost under pytest 9 (xdist 3.8 writes the group into Item._nodeid, which pytest 9 no longer reads)."""
    if config.getvalue("dist") not in ("loadscope", "loadgroup"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return GroupScheduling(config, log)
