"""Computed quality signals: clip_image_embeddings and quality_scores on the demo, and what cluster_labels drops on
them (low_aesthetic, protected_eval, semantic_duplicate), recorded with a reason and kept out of every shard."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from dagster import AssetKey, DagsterInstance

from paris_assets.lib.quality.pruning import Pruning, nearest_per_row
from paris_assets.lib.quality.signals import quality_drops, scores_table
from paris_assets.settings import PROJECT_ROOT, parse_settings

from .arrays_on_disk import read_with_numpy

FAN_IN = [AssetKey(k) for k in ("protected_images", "cluster_labels", "cluster_report", "expert_shards",
                                "router_pairs")]


def test_scores_keep_the_carried_value_beside_the_computed_one():
    kept = pd.DataFrame({"image_id": ["a", "b", "c"], "aesthetic": [6.0, np.nan, 0.0], "punsafe": [np.nan] * 3})
    computed = {"aesthetic": np.array([5.0, 4.0, 7.0]), "punsafe": np.array([0.1, 0.9, 0.2])}
    table = scores_table(kept, computed)
    assert table["aesthetic"].tolist() == [6.0, 4.0, 0.0]
    assert table["aesthetic_source"].tolist() == ["carried", "computed", "carried"]
    assert table["aesthetic_computed"].tolist() == [5.0, 4.0, 7.0]
    assert table["punsafe_source"].tolist() == ["computed"] * 3
    preferred = scores_table(kept, computed, prefer="computed")  # a source whose scores are zeroed
    assert preferred["aesthetic"].tolist() == [5.0, 4.0, 7.0] and set(preferred["aesthetic_source"]) == {"computed"}


def test_quality_drops_judge_computed_punsafe_only():
    kept = pd.DataFrame({"image_id": list("abcd"), "aesthetic": [6.0, 4.0, np.nan, np.nan],
                         "punsafe": [0.9, 0.0, np.nan, np.nan]})
    table = scores_table(kept, {"aesthetic": np.array([5, 5, 3, 6.0]), "punsafe": np.array([0, 0, 0.1, 0.8])})
    drops = quality_drops(table, min_aesthetic=4.5, max_punsafe=0.5)
    # a: its carried punsafe was the filter's to judge; b: carried 4.0; c: computed 3; d: computed punsafe 0.8
    assert drops["row"].tolist() == [1, 2, 3]
    assert drops["reason"].tolist() == ["low_aesthetic", "low_aesthetic", "punsafe"]
    assert "(carried)" in drops["detail"][0] and "(computed)" in drops["detail"][1]
    assert quality_drops(table, None, 1.0).empty


def test_pruning_records_every_drop_once_against_the_original_rows():
    ids = np.array([f"id{i}" for i in range(6)])
    pruning = Pruning(ids, rows=np.array([0, 2, 3, 5]))
    pruning.record(pd.DataFrame({"image_id": ["id1", "id4"], "reason": "duplicate_near", "detail": ["of id0", "of id3"]}))
    assert pruning.drop(np.array([1]), "low_aesthetic", ["2.0 < 5"]) == 1  # position 1 of [0, 2, 3, 5]: row 2
    assert pruning.rows.tolist() == [0, 3, 5]
    with pytest.raises(ValueError, match="twice"):
        pruning.drop(np.array([0, 0]), "x", ["", ""])
    assert pruning.dropped()["image_id"].tolist() == ["id1", "id4", "id2"]
    assert pruning.counts() == {"duplicate_near": 2, "low_aesthetic": 1}


def test_nearest_per_row_keeps_each_rows_best_match():
    rows, partners, values = nearest_per_row(np.array([3, 1, 3, 1]), np.array([7, 8, 9, 6]), np.array([0.9, 0.97, 0.99, 0.96]))
    assert rows.tolist() == [1, 3] and partners.tolist() == [8, 9]
    rows, partners, values = nearest_per_row(np.array([2, 2]), np.array([0, 1]), np.array([4, 1]), best="min")
    assert partners.tolist() == [1] and values.tolist() == [1]


def test_clip_image_embeddings_and_quality_scores_on_the_demo(trained):
    _settings, _run, instance, data = trained
    kept = pd.read_parquet(data / "filtered_images" / "kept.parquet")
    embeddings = read_with_numpy(data / "clip_image_embeddings" / "embeddings")  # a chunked folder, plain numpy
    assert embeddings.shape == (len(kept), 768) and embeddings.dtype == np.float16
    assert np.allclose(np.linalg.norm(embeddings.astype(np.float32), axis=1), 1, atol=2e-3)
    assert np.load(data / "clip_image_embeddings" / "image_ids.npy").tolist() == kept["image_id"].tolist()
    scores = pd.read_parquet(data / "quality_scores" / "scores.parquet")
    assert scores["image_id"].tolist() == kept["image_id"].tolist()
    assert set(scores["aesthetic_source"]) == {"carried"}  # the demo is LAION-style: it carries its scores
    assert np.allclose(scores["aesthetic"], kept["aesthetic"])
    assert scores["aesthetic_computed"].between(4.5, 5.5).all()  # the tiny head's harmless values
    assert scores["punsafe_computed"].between(0, 0.01).all()
    meta = instance.get_latest_materialization_event(AssetKey("quality_scores")).asset_materialization.metadata
    assert "| range | images |" in meta["aesthetic_histogram"].value and len(meta["heads"].value["aesthetic"]["sha256"]) == 16


@pytest.fixture(scope="module")
def pruned(trained, tmp_path_factory):
    """A copy of the trained outputs, re-clustered with every quality drop on: min_aesthetic, a protected folder
    holding two of the demo's own source files, SemDeDup."""
    _settings, _run, _instance, data = trained
    root = tmp_path_factory.mktemp("pruned")
    shutil.copytree(data, root / "data", symlinks=True)
    home = root / "home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    instance = DagsterInstance.local_temp(str(home))
    kept = pd.read_parquet(root / "data" / "filtered_images" / "kept.parquet")
    labels_before = np.load(data / "cluster_labels" / "image_ids.npy").tolist()
    good = kept[kept["aesthetic"] >= 5.5]
    victims = good.iloc[[0, 3]]  # kept, clustered, high enough to survive the aesthetic cut
    protected = root / "coco_val"
    protected.mkdir()
    for url in victims["url"]:
        name = url.rsplit("/", 1)[1]
        shutil.copy(root / "data" / "demo_source" / "files" / name, protected / name)

    def settings(**quality):
        return parse_settings({
            "data_dir": str(root / "data"), "source": {"kind": "demo", "demo_size": 64},
            "ingest": {"processes": 1, "threads": 8}, "filter": {"processes": 1}, "captions": {"source": "alt_text"},
            "clustering": {"k": 4}, "report": {"max_silhouette_drop": 1.0},
            "shards": {"max_samples_per_shard": 6, "heldout_fraction": 0.1, "include_jpg": True},
            "quality": quality}, base_dir=root)

    def run(s):
        result = build_defs(s).resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=FAN_IN, raise_on_error=False)
        assert result.success
        return result

    from paris_assets.definitions import build_defs

    run(settings(min_aesthetic=5.5, protected={"path": str(protected)},
                 semdedup={"enabled": True, "eps": 0.002}))
    return {"data": root / "data", "kept": kept, "victims": victims, "instance": instance, "settings": settings,
            "run": run, "labels_before": labels_before}


def _shard_ids(data) -> dict[str, dict]:
    manifest = json.loads((data / "pipeline_manifest.json").read_text())
    paths = [data / s["path"] for shards in manifest["clusters"].values() for s in shards]
    paths += [data / s["path"] for s in manifest["heldout"]]
    return {s["__key__"]: s["json"] for s in wds.WebDataset([str(p) for p in paths], shardshuffle=False).decode()}


def test_every_quality_drop_has_a_reason_and_reaches_no_shard(pruned):
    data, kept = pruned["data"], pruned["kept"]
    dropped = pd.read_parquet(data / "cluster_labels" / "dropped.parquet")
    by_reason = dropped.groupby("reason")["image_id"].apply(set).to_dict()
    assert by_reason["low_aesthetic"] == set(kept.loc[kept["aesthetic"] < 5.5, "image_id"])
    assert by_reason["protected_eval"] == set(pruned["victims"]["image_id"])
    assert all("pHash distance 0 to protected" in d for d in dropped.loc[dropped["reason"] == "protected_eval", "detail"])
    assert by_reason.get("semantic_duplicate")  # the tiny features are alike: eps 0.002 finds some
    remaining = set(kept["image_id"]) - set(dropped["image_id"])
    labelled = np.load(data / "cluster_labels" / "image_ids.npy").tolist()
    assert set(labelled) == remaining and len(labelled) == len(remaining)
    samples = _shard_ids(data)
    assert set(samples) == remaining  # expert shards + held-out: exactly what was not dropped
    assert set(np.load(data / "router_pairs" / "image_ids.npy").tolist()) <= remaining
    # the partner a semantic duplicate names was kept, or (quality.semdedup.keep: paper) removed itself in a chain
    semantic = dropped.loc[dropped["reason"] == "semantic_duplicate"]
    partners = semantic["detail"].str.extract(r"to (\w+) ")[0]
    chained = semantic["detail"].str.endswith("(itself removed: a chain)")
    assert set(partners[~chained]) <= remaining and set(partners[chained]) <= set(semantic["image_id"])
    assert semantic["detail"][~chained].str.endswith("(kept: farther from its fine centroid)").all()
    record = next(iter(samples.values()))
    assert record["aesthetic_source"] == "carried" and record["punsafe_source"] == "carried"
    assert 4.5 < record["aesthetic_computed"] < 5.5 and record["aesthetic"] >= 5.5


def test_cluster_labels_reports_the_drops_and_the_eps_table(pruned):
    meta = pruned["instance"].get_latest_materialization_event(
        AssetKey("cluster_labels")).asset_materialization.metadata
    dropped = pd.read_parquet(pruned["data"] / "cluster_labels" / "dropped.parquet")
    assert meta["dropped"].value == len(dropped)
    assert meta["dropped_protected_eval"].value == 2 and meta["protected_phash_matches"].value == 2
    assert meta["semdedup_removed"].value == (dropped["reason"] == "semantic_duplicate").sum()
    table = meta["semdedup_eps"].value
    assert "| 0.002 |" in table and "| 0.2 |" in table
    assert "data:image/jpeg;base64," in meta["semdedup_pairs"].value
    assert (pruned["data"] / "cluster_labels" / "semdedup_pairs.png").exists()
    assert str(meta["protected_min_similarity"].value).startswith("off")  # tiny profile: no embedding match
    protected = pruned["instance"].get_latest_materialization_event(
        AssetKey("protected_images")).asset_materialization.metadata
    assert protected["images"].value == 2 and protected["failed"].value == 0


def test_turning_the_drops_off_leaves_nothing_stale(pruned):
    pruned["run"](pruned["settings"]())
    data = pruned["data"]
    dropped = pd.read_parquet(data / "cluster_labels" / "dropped.parquet")
    assert dropped.empty
    assert np.load(data / "cluster_labels" / "image_ids.npy").tolist() == pruned["labels_before"]
    assert set(_shard_ids(data)) == set(pruned["kept"]["image_id"])
    assert np.load(data / "protected_images" / "ids.npy").size == 0
