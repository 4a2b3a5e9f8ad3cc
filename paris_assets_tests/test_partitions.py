"""Partitions: source parts registered from the source plan, per-image assets computed per part, duplicates judged
across parts at the fan-in, new source rows computed alone, and results that do not depend on the order parts ran in."""

import shutil

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey

from paris_assets import parts
from paris_assets.definitions import build_defs
from paris_assets.lib.ingest.partitions import PARTS, part_key, part_rows, plan_parts
from paris_assets.lib.ingest.sources import stable_id
from paris_assets.settings import parse_settings

from .builders import temp_instance

PART = 24  # source rows per part


def test_parts_tile_the_source_and_new_rows_become_new_parts():
    assert plan_parts(50, 20, []) == [part_key(0, 20), part_key(20, 40), part_key(40, 50)]
    registered = plan_parts(50, 20, [])
    assert plan_parts(50, 20, registered) == []
    # the short last part is never re-cut: appended rows start after it
    assert plan_parts(75, 20, registered) == [part_key(50, 70), part_key(70, 75)]
    assert part_rows(part_key(50, 70)) == (50, 70)
    with pytest.raises(ValueError, match="rows were removed or reordered"):
        plan_parts(45, 20, registered)
    with pytest.raises(ValueError, match="edited by hand"):
        plan_parts(75, 20, [part_key(0, 20), part_key(30, 40)])
    with pytest.raises(ValueError, match="not a source part name"):
        part_rows("2026-11-30")


def write_folder(folder, demo_files, count: int, copy_at: int | None = None):
    """The first `count` of the demo's clean images as an image folder (sidecar captions), in a fixed order; with
    `copy_at`, the file at that row is an exact copy of row 1's image, so the pair straddles two parts."""
    demo_dir, table = demo_files
    clean = table[table["expect"] == "kept"].reset_index(drop=True)
    folder.mkdir(exist_ok=True)
    for i in range(count):
        src = clean.iloc[1 if i == copy_at else i]
        shutil.copy(demo_dir / "files" / src["name"], folder / f"{i:04d}.jpg")
        (folder / f"{i:04d}.txt").write_bytes(src["caption"] or b"a picture")


@pytest.fixture(scope="module")
def grown(tmp_path_factory, demo_files):
    """40 images in parts of 24 (an exact copy at row 30 of the image at row 1), backfilled; then 20 images more,
    registered and backfilled with assign_to_existing."""
    root = tmp_path_factory.mktemp("parts")
    instance = temp_instance(root)
    images = root / "images"
    write_folder(images, demo_files, 40, copy_at=30)

    def settings(**partitions):
        return parse_settings({
            "data_dir": str(root / "data"), "executor": "in_process",
            "source": {"kind": "image_folder", "path": str(images)},
            "ingest": {"processes": 1, "threads": 4}, "filter": {"processes": 1}, "captions": {"source": "alt_text"},
            "clustering": {"k": 2}, "report": {"max_silhouette_drop": 1.0},
            "shards": {"max_samples_per_shard": 8, "heldout_fraction": 0.1},
            "partitions": {"size": PART, **partitions}}, base_dir=root)

    logs = []
    assert parts.backfill(settings(), instance, log=logs.append) == 0, logs
    first = labels_of(root / "data")
    first_runs = {k: marker_run(root / "data" / "latents" / k) for k in instance.get_dynamic_partitions(PARTS)}
    return settings, instance, root / "data", images, first, first_runs, logs


def labels_of(data) -> dict:
    folder = data / "cluster_labels"
    out = {name: np.load(folder / f"{name}.npy") for name in ("labels", "rows", "image_ids", "centroids")}
    out["duplicates"] = pd.read_parquet(folder / "dropped.parquet")
    return out


def marker_run(folder) -> str:
    import json

    return json.loads((folder / "_SUCCESS.json").read_text())["run_id"]


def test_each_part_is_its_own_output_and_duplicates_across_parts_are_dropped_at_the_fan_in(grown, demo_files):
    settings, instance, data, images, first, _runs, logs = grown
    keys = [part_key(0, 24), part_key(24, 40)]
    assert sorted(instance.get_dynamic_partitions(PARTS)) == keys
    for asset in ("raw_images", "filtered_images", "captions", "clip_embeddings", "dinov2_embeddings", "latents"):
        assert instance.get_materialized_partitions(AssetKey(asset)) == set(keys), asset
        for key in keys:
            assert (data / asset / key / "_SUCCESS.json").exists()
    # within its part the copy has no partner: both parts keep their image
    for key, n in zip(keys, (24, 16)):
        assert len(pd.read_parquet(data / "filtered_images" / key / "kept.parquet")) == n
    # across parts it has: the fan-in drops the later row and names the image it keeps
    dup = first["duplicates"]
    assert dup["image_id"].tolist() == [stable_id("0030.jpg")]
    assert dup["reason"].tolist() == ["duplicate_exact"] and stable_id("0001.jpg") in dup["detail"].iloc[0]
    assert first["rows"].tolist() == [r for r in range(40) if r != 30]
    assert stable_id("0030.jpg") not in set(first["image_ids"])
    # the dropped image is in no expert's shard and not among the router's rows
    manifest_ids = set()
    import webdataset as wds

    for tar in sorted((data / "expert_shards").rglob("*.tar")) + sorted((data / "heldout").rglob("*.tar")):
        manifest_ids |= {s["__key__"] for s in wds.WebDataset(str(tar), shardshuffle=False)}
    assert manifest_ids == set(first["image_ids"])
    import json

    counts = json.loads((data / "pipeline_manifest.json").read_text())["counts"]
    assert counts["parts"] == 2 and counts["raw_images"]["requested"] == 40 and counts["captions"]["rows"] == 40
    assert counts["filtered_images"] == {"kept": 40, "rejected": 0} and counts["cluster_labels"]["images"] == 39
    event = instance.get_latest_materialization_event(AssetKey("cluster_labels"))
    meta = event.asset_materialization.metadata
    assert meta["parts"].value == 2 and meta["duplicates_across_parts"].value == 1 and meta["images"].value == 39


def test_a_part_computed_again_later_changes_nothing_downstream(grown):
    """The fan-in reads parts in row order, whatever order (or time) they were computed in."""
    settings, instance, data, images, first, runs, _logs = grown
    defs = build_defs(settings())
    again = defs.resolve_job_def("one_part").execute_in_process(instance=instance, partition_key=part_key(0, 24))
    assert again.success
    assert marker_run(data / "latents" / part_key(0, 24)) != runs[part_key(0, 24)]
    assert defs.resolve_job_def("fan_in").execute_in_process(instance=instance).success
    second = labels_of(data)
    for name in ("labels", "rows", "image_ids", "centroids"):
        assert np.array_equal(first[name], second[name]), name
    pd.testing.assert_frame_equal(first["duplicates"], second["duplicates"])


def test_new_source_rows_are_new_parts_computed_alone_and_assigned_to_existing_centroids(grown, demo_files):
    settings, instance, data, images, first, runs, _logs = grown
    before = {k: marker_run(data / "latents" / k) for k in instance.get_dynamic_partitions(PARTS)}
    write_folder(images, demo_files, 60, copy_at=30)  # the same 40 files, then 20 more
    logs = []
    assert parts.backfill(settings(assign_to_existing=True), instance, log=logs.append) == 0, logs
    assert any("1 of 3 parts to run" in line for line in logs), logs
    keys = sorted(instance.get_dynamic_partitions(PARTS))
    assert keys == [part_key(0, 24), part_key(24, 40), part_key(40, 60)]
    for key, run in before.items():  # the model outputs of earlier parts were not computed again
        assert marker_run(data / "latents" / key) == run
    after = labels_of(data)
    assert np.array_equal(after["centroids"], labels_of_centroids(first))
    meta = instance.get_latest_materialization_event(AssetKey("cluster_labels")).asset_materialization.metadata
    assert meta["assigned_to_existing_centroids"].value == 20 and meta["images"].value == 59
    # earlier images keep the expert they had
    old = np.isin(after["image_ids"], first["image_ids"])
    assert np.array_equal(after["labels"][old], first["labels"])


def labels_of_centroids(labels: dict) -> np.ndarray:
    return labels["centroids"]


def test_the_cli_refuses_without_partitions_and_reports_status(tmp_path, monkeypatch, capsys):
    config = tmp_path / "paris.yaml"
    config.write_text("data_dir: data\n")
    assert parts.main(["status", "--config", str(config)]) == 2
    assert "partitions.size is 0" in capsys.readouterr().err


def test_the_fan_in_reads_parts_in_row_order_and_an_empty_part_adds_nothing(tmp_path):
    """A part whose every image was rejected holds empty outputs (no typed columns, a '<U1' id array): the union of
    the parts skips it instead of failing on mismatched types."""
    from paris_assets.io_managers import open_parts
    from paris_assets.lib.store import storage

    keys = [part_key(3, 5), part_key(0, 2), part_key(2, 3)]
    for key, n in zip(keys, (2, 2, 0)):
        staged = storage.staging_dir(str(tmp_path), "x")
        ids = np.array([f"{key[-1]}-{i}" for i in range(n)]) if n else np.empty(0, "<U1")
        np.save(staged / "image_ids.npy", ids)
        np.save(staged / "features.npy", np.full((n, 3), part_rows(key)[0], np.float32))
        kept = pd.DataFrame({"image_id": list(ids), "crop_shard": ["crops/shard-000000.tar"] * n}) if n else \
            pd.DataFrame({"image_id": [], "crop_shard": []})
        kept.to_parquet(staged / "kept.parquet")
        storage.commit_folder(staged, str(tmp_path), f"x/{key}")
    parts = open_parts(str(tmp_path), "x", sorted(keys, key=part_rows))
    assert np.asarray(parts.array("image_ids")).tolist() == ["2-0", "2-1", "5-0", "5-1"]
    assert np.asarray(parts.array("features"))[:, 0].tolist() == [0, 0, 3, 3]
    assert parts.column("kept", "image_id").to_pylist() == ["2-0", "2-1", "5-0", "5-1"]
    assert parts.table("kept")["crop_shard"].tolist() == [f"{part_key(0, 2)}/crops/shard-000000.tar"] * 2 + \
        [f"{part_key(3, 5)}/crops/shard-000000.tar"] * 2
    with pytest.raises(storage.IncompleteOutput, match="1 of 4 parts have no complete output"):
        open_parts(str(tmp_path), "x", sorted([*keys, part_key(5, 9)], key=part_rows))
