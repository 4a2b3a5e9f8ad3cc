"""media: video, the whole graph on the video demo in a real (temporary) Dagster instance: every planted clip's
fate, the arrays and shards read back with the plain libraries, the quality gate failing and holding, a change
of K re-running only the clustering and what follows."""

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from dagster import AssetKey

from paris_assets.definitions import build_defs
from paris_assets.lib.ingest.sources import stable_id
from paris_assets.lib.video.decode import decode_clip
from paris_assets.lib.demo.video import KEPT
from paris_assets.settings import parse_settings

from .builders import graph_runner, temp_instance

UPSTREAM = ["raw_images", "filtered_images", "captions", "clip_embeddings", "dinov2_embeddings", "latents",
            "clip_image_embeddings", "quality_scores"]
CLUSTER = [AssetKey("cluster_labels"), AssetKey("cluster_report")]
TRAINING = [AssetKey("expert_shards"), AssetKey("router_pairs")]
SIZE = 128  # the clip side: a multiple of 8 for the VAE; x264 4:4:4 bytes are not reproducible below 120 px


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_graph")
    instance = temp_instance(root)

    def settings(k=4, **report):
        return parse_settings({
            "media": "video", "data_dir": str(root / "data"), "source": {"kind": "demo", "demo_size": 24},
            "ingest": {"processes": 1, "threads": 8}, "filter": {"processes": 2, "image_size": SIZE},
            "video": {"scene_cuts": "reject", "chunk_size": 8}, "captions": {"source": "alt_text"},
            "clustering": {"k": k}, "report": {"max_silhouette_drop": 1.0, **report},
            "shards": {"max_samples_per_shard": 6, "heldout_fraction": 0.1, "include_mp4": True}}, base_dir=root)

    run = graph_runner(instance)
    first = run(settings())
    return settings, run, instance, root / "data", first


def checks_of(result) -> dict:
    return {e.event_specific_data.check_name: e.event_specific_data for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def latest(instance, key: str) -> dict:
    return instance.get_latest_materialization_event(AssetKey(key)).asset_materialization.metadata


def test_the_video_graph_materialises_with_every_check_passing(video):
    settings, _run, instance, _data, first = video
    failures = [e.message for e in first.all_events if e.event_type_value == "STEP_FAILURE"]
    assert first.success, failures
    checks = checks_of(first)
    assert checks and all(c.passed for c in checks.values()), {n: c.metadata for n, c in checks.items() if not c.passed}
    defs = build_defs(settings())
    latents = defs.get_assets_def(AssetKey("latents"))
    assert "video" in latents.specs_by_key[AssetKey("latents")].kinds
    assert "HunyuanVideo" in latents.specs_by_key[AssetKey("latents")].description
    filtered = latest(instance, "filtered_images")
    assert filtered["kept"].value >= 20 and filtered["dropped_scene_cut"].value == 1
    assert filtered["clips_per_s"].value > 0


def test_each_planted_clip_meets_its_fate(video):
    _settings, _run, _instance, data, _first = video
    demo = pd.read_parquet(data / "demo_source" / "demo_rows.parquet")
    demo["image_id"] = [stable_id(i) for i in demo["demo_id"]]
    kept = pd.read_parquet(data / "filtered_images" / "kept.parquet")
    rejected = pd.read_parquet(data / "filtered_images" / "rejected.parquet")
    outcome = pd.concat([pd.Series(KEPT, index=kept["image_id"]), rejected.set_index("image_id")["reason"]])
    assert outcome.index.is_unique
    got = demo["image_id"].map(outcome)
    mismatched = demo.assign(got=got)[got != demo["expected"]][["name", "expected", "got"]]
    assert mismatched.empty, mismatched.to_string()
    assert (rejected["detail"].str.len() > 0).all()
    rotated = kept.set_index("url").filter(like="rotated_0.mp4", axis=0)
    assert len(rotated) == 1 and rotated["original_height"].iat[0] > rotated["original_width"].iat[0]


def test_arrays_have_the_video_shapes(video):
    _settings, _run, instance, data, _first = video
    n = len(pd.read_parquet(data / "filtered_images" / "kept.parquet"))
    from paris_assets.lib.store.arrays import open_array

    latents = open_array(str(data / "latents" / "latents"))
    assert latents.shape == (n, 4, 5, SIZE // 8, SIZE // 8) and latents.dtype == np.float16
    t5 = open_array(str(data / "clip_embeddings" / "t5_tokens"))
    mask = open_array(str(data / "clip_embeddings" / "t5_mask"))
    assert t5.shape[:2] == mask.shape == (n, 226) and mask.dtype == bool
    real = np.asarray(mask[:]).sum(axis=1)
    assert (real >= 2).all() and (real < 40).all()  # a caption and </s>, far below the 226 padded to
    assert not np.asarray(t5[:])[~np.asarray(mask[:])].any()  # zeros at padding
    assert open_array(str(data / "dinov2_embeddings" / "embeddings")).shape[0] == n
    meta = latest(instance, "clip_embeddings")
    assert meta["t5_max_length"].value == 226 and meta["t5_tokens_max"].value == real.max()
    assert meta["t5_encoder_model_id"].value.endswith("t5_encoder") and meta["t5_truncated"].value == 0
    recon = checks_of_latest(instance, "latents_valid")
    assert "data:image/png;base64," in recon["reconstructions"].value and "psnr_mean_db" in recon


def checks_of_latest(instance, name: str) -> dict:
    from dagster import AssetCheckKey

    record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [AssetCheckKey(AssetKey("latents"), name)])[AssetCheckKey(AssetKey("latents"), name)]
    return record.event.dagster_event.event_specific_data.metadata


def test_expert_shards_read_back_with_plain_webdataset(video):
    _settings, _run, _instance, data, _first = video
    manifest = json.loads((data / "pipeline_manifest.json").read_text())
    assert manifest["media"] == "video"
    shards = sorted(str(p) for p in (data / "expert_shards").glob("cluster_*/*.tar"))
    samples = list(wds.WebDataset(shards, shardshuffle=False))
    assert samples
    for sample in samples[:5]:
        latent = np.load(io.BytesIO(sample["latent.npy"]))
        assert latent.shape == (4, 5, SIZE // 8, SIZE // 8)
        assert np.load(io.BytesIO(sample["t5_tokens.npy"])).shape == (226, 32)
        assert np.load(io.BytesIO(sample["t5_mask.npy"])).dtype == bool
        assert np.load(io.BytesIO(sample["dinov2.npy"])).ndim == 1
        record = json.loads(sample["json"])
        assert record["media"] == "video" and record["num_frames"] == 17
        assert decode_clip(sample["mp4"]).shape == (17, SIZE, SIZE, 3)
    router = data / "router_pairs"
    assert (router / "cluster_labels.npy").exists()


def test_a_failed_gate_blocks_the_video_shards_in_a_later_run(video):
    settings, run, instance, _data, _first = video
    shards_before = len(instance.fetch_materializations(AssetKey("expert_shards"), limit=100).records)
    failed = run(settings(min_silhouette=0.99), selection=CLUSTER)
    assert not failed.success and not checks_of(failed)["silhouette_above_minimum"].passed
    later = run(settings(min_silhouette=0.99), selection=TRAINING)
    assert not later.success
    messages = {e.step_key: e.step_failure_data.error.message for e in later.get_step_failure_events()}
    assert all("refused: the quality gate on the latest cluster_report" in m for m in messages.values()), messages
    assert set(messages) == {"expert_shards", "router_pairs"}
    assert len(instance.fetch_materializations(AssetKey("expert_shards"), limit=100).records) == shards_before


def test_changing_k_reruns_only_the_clustering_and_what_follows(video):
    settings, run, instance, data, _first = video
    before = {key: len(instance.fetch_materializations(AssetKey(key), limit=100).records) for key in UPSTREAM}
    result = run(settings(k=3), selection=[*CLUSTER, *TRAINING])
    assert result.success
    after = {key: len(instance.fetch_materializations(AssetKey(key), limit=100).records) for key in UPSTREAM}
    assert after == before
    assert np.load(data / "cluster_labels" / "centroids.npy").shape[0] == 3
    assert sorted(p.name for p in (data / "expert_shards").glob("cluster_*")) == ["cluster_0", "cluster_1", "cluster_2"]


def test_a_partitioned_video_folder_drops_a_copy_across_parts(tmp_path):
    """A video_folder source (clips with sidecar captions) in parts of 8, backfilled: each part keeps its clips
    (the copy has no partner inside its part), and the fan-in drops the copy across parts by keyframe pHash."""
    from paris_assets import parts
    from paris_assets.lib.ingest.partitions import PARTS

    demo = make_video_demo_rows(tmp_path / "demo")
    clean = demo[demo["expected"] == KEPT].reset_index(drop=True)
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(12):  # row 10 is an exact copy of row 1: the pair straddles the two parts
        src = clean.iloc[1 if i == 10 else i]
        shutil.copy(tmp_path / "demo" / "files" / src["name"], folder / f"{i:04d}.mp4")
        (folder / f"{i:04d}.txt").write_text(src["caption"])
    instance = temp_instance(tmp_path)
    settings = parse_settings({
        "media": "video", "data_dir": str(tmp_path / "data"), "executor": "in_process",
        "source": {"kind": "video_folder", "path": str(folder)}, "ingest": {"processes": 1, "threads": 4},
        "filter": {"processes": 1, "image_size": SIZE}, "captions": {"source": "alt_text"},
        "clustering": {"k": 2}, "report": {"max_silhouette_drop": 1.0},
        "shards": {"heldout_fraction": 0.1}, "partitions": {"size": 8}}, base_dir=tmp_path)
    logs = []
    assert parts.backfill(settings, instance, log=logs.append) == 0, logs
    data = tmp_path / "data"
    keys = sorted(instance.get_dynamic_partitions(PARTS))
    assert [len(pd.read_parquet(data / "filtered_images" / k / "kept.parquet")) for k in keys] == [8, 4]
    dropped = pd.read_parquet(data / "cluster_labels" / "dropped.parquet")
    assert dropped["reason"].tolist() == ["duplicate_exact"]
    kept_ids = pd.read_parquet(data / "filtered_images" / keys[0] / "kept.parquet")["image_id"]
    assert dropped["detail"].iat[0].startswith(f"of {kept_ids.iat[1]} ")
    manifest = json.loads((data / "pipeline_manifest.json").read_text())
    assert manifest["media"] == "video" and manifest["counts"]["expert_samples"] + manifest["counts"]["heldout_samples"] == 11


def make_video_demo_rows(folder):
    from paris_assets.lib.demo.video import make_video_demo

    return make_video_demo(folder, n=16, seed=0)
