"""raw_images and filtered_images materialised on the demo into a real (temporary) Dagster instance."""

import io

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from dagster import AssetKey, DagsterInstance, materialize
from PIL import Image

from paris_assets.definitions import build_defs
from paris_assets.lib.ingest.sources import SourceError, stable_id
from paris_assets.settings import parse_settings

from .builders import temp_instance


def run(settings, instance, selection=None):
    defs = build_defs(settings)
    assets = [defs.get_assets_def(AssetKey(k)) for k in ("raw_images", "filtered_images")]
    resources = {k: v for k, v in defs.resources.items()}
    return materialize(assets, instance=instance, resources=resources, selection=selection)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    settings = parse_settings({"data_dir": str(root / "data"), "source": {"kind": "demo", "demo_size": 64},
                               "ingest": {"processes": 1, "threads": 8, "samples_per_shard": 50},
                               "filter": {"processes": 2}}, base_dir=root)
    instance = temp_instance(root)  # the project's own instance settings
    result = run(settings, instance)
    return settings, instance, result, root / "data"


def test_both_assets_materialise_with_metadata(demo_run):
    _settings, instance, result, _data = demo_run
    assert result.success
    raw = instance.get_latest_materialization_event(AssetKey("raw_images")).asset_materialization
    filtered = instance.get_latest_materialization_event(AssetKey("filtered_images")).asset_materialization
    assert raw.metadata["requested"].value == raw.metadata["downloaded"].value + raw.metadata["failed"].value
    assert filtered.metadata["kept"].value > 60
    assert filtered.metadata["dropped_duplicate_near"].value == 12
    assert 0 < filtered.metadata["kept_fraction"].value < 1
    assert "kept_preview" in filtered.metadata and "dropped_by_reason" in filtered.metadata


def test_every_planted_problem_is_accounted_for(demo_run):
    _settings, _instance, _result, data = demo_run
    demo = pd.read_parquet(data / "demo_source" / "demo_rows.parquet")
    demo["image_id"] = [stable_id(i) for i in demo["demo_id"]]
    kept = pd.read_parquet(data / "filtered_images" / "kept.parquet")
    rejected = pd.read_parquet(data / "filtered_images" / "rejected.parquet")
    outcome = pd.concat([pd.Series("kept", index=kept["image_id"]), rejected.set_index("image_id")["reason"]])
    assert outcome.index.is_unique
    got = demo["image_id"].map(outcome)
    mismatched = demo.assign(got=got)[got != demo["expect"]][["name", "expect", "got"]]
    assert mismatched.empty, mismatched.to_string()
    assert (rejected["detail"].str.len() > 0).all()


def test_kept_crops_align_and_read_with_plain_webdataset(demo_run):
    _settings, _instance, _result, data = demo_run
    kept = pd.read_parquet(data / "filtered_images" / "kept.parquet")
    shards = sorted(str(p) for p in (data / "filtered_images" / "crops").glob("*.tar"))
    kept_ids = set(kept["image_id"])
    samples = [s for s in wds.WebDataset(shards, shardshuffle=False) if s["__key__"] in kept_ids]
    assert [s["__key__"] for s in samples] == kept["image_id"].tolist()
    assert kept["crop_shard"].tolist() == [f"crops/{s['__url__'].rsplit('/', 1)[-1]}" for s in samples]
    for sample in samples[:20]:
        image = Image.open(io.BytesIO(sample["jpg"]))
        assert image.size == (256, 256) and image.mode == "RGB"
    rotated = kept.index[kept["url"].str.endswith("/exif_rotated.jpg")][0]
    assert (kept.loc[rotated, "original_width"], kept.loc[rotated, "original_height"]) == (400, 300)
    gray = kept.index[kept["url"].str.endswith("/gray16.png")][0]
    arr = np.asarray(Image.open(io.BytesIO(samples[gray]["jpg"])))
    assert arr.std() > 20  # a 16-bit PNG is a gradient here, not a white page


def test_rematerialising_replaces_everything(demo_run):
    settings, instance, _result, data = demo_run
    stray = data / "filtered_images" / "crops" / "shard-999999.tar"
    stray.write_bytes(b"left over")
    result = run(settings, instance, selection=[AssetKey("filtered_images")])
    assert result.success
    assert not stray.exists()
    assert not list((data / ".staging").glob("*")) if (data / ".staging").exists() else True


def test_unusable_source_fails_before_any_download(tmp_path):
    settings = parse_settings({"data_dir": str(tmp_path / "data"),
                               "source": {"kind": "url_list", "path": "nowhere/urls.parquet"}}, base_dir=tmp_path)
    with pytest.raises(SourceError, match="nowhere/urls.parquet.*no such file"):
        run(settings, DagsterInstance.ephemeral())
    assert not (tmp_path / "data" / "raw_images").exists()
