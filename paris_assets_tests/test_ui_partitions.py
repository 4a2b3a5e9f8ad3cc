"""Partitions in the Dagster UI, in a real browser: the source parts are registered with the documented command,
then "Materialize all" in the UI launches a backfill over every part, the daemon runs it (a run per part, then
the fan-in), and every per-image asset has every part while the global steps have their one output."""

import subprocess
import sys
import time

from paris_assets.assets.common import PER_PART
from paris_assets.lib.ingest.partitions import part_rows
from paris_assets.settings import PROJECT_ROOT

from .builders import chromium_page, dagster_dev, dagster_site, graphql, require_chromium, shot


def backfills(base: str) -> list[dict]:
    return graphql(base, "{ partitionBackfillsOrError { ... on PartitionBackfills { results { id status "
                         "numPartitions } } } }")["partitionBackfillsOrError"]["results"]


def wait_for_backfill(base: str, timeout: int = 900) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = backfills(base)
        if found and found[0]["status"] not in ("REQUESTED", "CANCELING"):
            return found[0]
        time.sleep(3)
    raise AssertionError(f"the backfill did not finish within {timeout} s: {backfills(base)}")


def materialised_parts(base: str, asset: str) -> set[str]:
    query = ('{ assetNodes(assetKeys: [{path: ["%s"]}]) { assetPartitionStatuses { ... on DefaultPartitionStatuses '
             '{ materializedPartitions } } } }' % asset)
    return set(graphql(base, query)["assetNodes"][0]["assetPartitionStatuses"]["materializedPartitions"])


def parts_on_disk(root) -> list[str]:
    from dagster import DagsterInstance

    from paris_assets.lib.ingest.partitions import PARTS

    with DagsterInstance.from_config(str(root / "home")) as instance:
        return instance.get_dynamic_partitions(PARTS)


def test_backfill_every_part_from_the_ui(tmp_path):
    require_chromium()
    site = dagster_site(tmp_path, (
        "data_dir: data\nexecutor: in_process\nsource: {kind: demo, demo_size: 64}\n"
        "ingest: {processes: 1, threads: 8}\nfilter: {processes: 1}\ncaptions: {source: alt_text}\n"
        "clustering: {k: 4}\nreport: {max_silhouette_drop: 1.0}\npartitions: {size: 100}\n"))
    base = site.base
    registered = subprocess.run([sys.executable, "-m", "paris_assets.parts", "register"], env=site.env,
                                cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert registered.returncode == 0, registered.stderr[-3000:]
    assert "added" in registered.stdout
    with dagster_dev(site):
        with chromium_page() as page:
            page.goto(f"{base}/asset-groups", wait_until="networkidle")
            page.get_by_text("embeddings", exact=True).last.wait_for(timeout=60_000)
            page.get_by_role("button", name="Materialize all").click()
            dialog = page.get_by_role("dialog")
            dialog.wait_for(timeout=60_000)
            dialog.get_by_text("All", exact=True).click()  # every registered part
            dialog.get_by_text(f"{len(parts_on_disk(tmp_path))} partitions").wait_for(timeout=30_000)
            shot(page, "ui-partitions-launch.jpg")
            dialog.get_by_role("button", name="Launch backfill").click()
            done = wait_for_backfill(base)
            shot(page, "ui-partitions-backfill.jpg")
        parts = graphql(base, '{ partitionSetsOrError: assetNodes(assetKeys: [{path: ["latents"]}]) '
                              '{ partitionKeys } }')["partitionSetsOrError"][0]["partitionKeys"]
        assert len(parts) >= 2 and [part_rows(k)[0] for k in parts] == sorted(part_rows(k)[0] for k in parts)
        assert done["status"] == "COMPLETED_SUCCESS", (done, (tmp_path / "dagster-dev.log").read_text()[-4000:])
        for asset in PER_PART:
            assert materialised_parts(base, asset) == set(parts), asset
            for key in parts:
                assert (tmp_path / "data" / asset / key / "_SUCCESS.json").exists()
        assert (tmp_path / "data" / "pipeline_manifest.json").exists()
        assert (tmp_path / "data" / "cluster_labels" / "dropped.parquet").exists()
        # the demo's last part holds only planted bad rows: complete, with empty outputs the fan-in skips
        import numpy as np
        import pandas as pd

        last = parts[-1]
        assert len(pd.read_parquet(tmp_path / "data" / "filtered_images" / last / "kept.parquet")) == 0
        empty = np.load(tmp_path / "data" / "latents" / last / "latents.npy")
        assert empty.shape[0] == 0 and empty.ndim == 4
