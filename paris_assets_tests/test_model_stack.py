"""captions, clip_embeddings, dinov2_embeddings and latents on the demo, tiny profile, in a real instance."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance

from paris_assets.definitions import build_defs
from paris_assets.lib.store.arrays import open_named
from paris_assets.models.tiny import TINY_VERSION
from paris_assets.settings import PROJECT_ROOT, parse_settings

from .arrays_on_disk import assert_chunked_and_plain


def evaluations(result):
    return [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    settings = parse_settings({
        "data_dir": str(root / "data"), "source": {"kind": "demo", "demo_size": 64},
        "ingest": {"processes": 1, "threads": 8}, "filter": {"processes": 1},
        "captions": {"source": "blip2", "min_new_tokens": 3, "max_new_tokens": 5},
        "models": {"chunk_size": 24, "image_batch_size": 8, "latent_batch_size": 8, "caption_batch_size": 8},
    }, base_dir=root)
    home = root / "home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    instance = DagsterInstance.local_temp(str(home))
    result = build_defs(settings).resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
    return settings, instance, result, root / "data"


def test_all_assets_and_checks_pass(stack):
    _settings, _instance, result, _data = stack
    assert result.success
    checks = {e.event_specific_data.check_name: e.event_specific_data.passed for e in evaluations(result)}
    valid = ("dinov2_embeddings_valid", "clip_embeddings_valid", "clip_image_embeddings_valid", "latents_valid")
    assert {name: checks[name] for name in valid} == dict.fromkeys(valid, True)
    assert all(checks.values()), checks  # the whole graph ran, the gate and the shard checks too


def test_every_array_is_aligned_with_kept(stack):
    _settings, _instance, _result, data = stack
    kept = pd.read_parquet(data / "filtered_images" / "kept.parquet")["image_id"].tolist()
    n = len(kept)
    for folder, arrays in {"dinov2_embeddings": {"embeddings": (n, 32)},
                           "clip_embeddings": {"tokens": (n, 77, 32), "pooled": (n, 768)},
                           "latents": {"latents": (n, 4, 32, 32)}}.items():
        assert np.load(data / folder / "image_ids.npy").tolist() == kept
        for name, shape in arrays.items():
            array = assert_chunked_and_plain(data / folder, name)  # numpy alone reads the chunks
            assert array.shape == shape and np.isfinite(array).all()
            index = json.loads((data / folder / name / "index.json").read_text())
            assert index["chunk_rows"] == 24 and len(index["chunks"]) == -(-n // 24)  # models.chunk_size
    assert open_named(str(data / "latents"), "latents").dtype == np.float16
    captions = pd.read_parquet(data / "captions" / "captions.parquet")
    assert captions["image_id"].tolist() == kept
    assert set(captions["caption_source"]) <= {"blip2", "alt_text_fallback"}
    assert (captions["caption"].str.len() > 0).all()
    leftovers = [p.name for p in (data / ".staging").glob("*-chunks-*")] if (data / ".staging").exists() else []
    assert leftovers == []  # the chunk folders go once the contract files are written


def test_metadata_names_model_device_and_speed(stack):
    _settings, instance, _result, _data = stack
    meta = instance.get_latest_materialization_event(AssetKey("latents")).asset_materialization.metadata
    assert meta["model_id"].value.endswith("models/tiny/latent_encoder")
    assert meta["device"].value == "cpu" and meta["dtype"].value == "float32"
    assert meta["revision"].value == f"tiny-v{TINY_VERSION}-seed0"  # the weights' identity, resolved at load
    assert meta["scaling_factor"].value == 0.18215  # read from the VAE's config
    for asset in ("captions", "clip_embeddings", "dinov2_embeddings", "latents"):
        event = instance.get_latest_materialization_event(AssetKey(asset))
        # device: auto is folded in as written (the same on a CPU host and a GPU worker); the metadata resolves it
        assert event.asset_materialization.tags["dagster/code_version"].endswith(f"tiny-v{TINY_VERSION}-seed0-auto-auto")
    assert meta["images_per_s"].value > 0 and 0 < meta["model_time_share"].value <= 1


def test_latent_check_shows_reconstructions(stack):
    _settings, _instance, result, _data = stack
    latent = next(e.event_specific_data for e in evaluations(result) if e.event_specific_data.check_name == "latents_valid")
    assert "data:image/png;base64," in latent.metadata["reconstructions"].value
    assert np.isfinite(latent.metadata["psnr_mean_db"].value)
