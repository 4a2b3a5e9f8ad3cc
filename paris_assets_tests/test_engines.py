"""The engine seam without a cluster: engine_for picks the object the settings name, the local engine runs units in
spawned processes in order, what a model worker receives carries no secret and loads the same model, and the GPU
share per worker follows the cluster when unset. (The Ray engine on a real local Ray: test_ray_engine.py.)"""

import pickle

import pytest

from paris_assets.engines import ENGINES, Engine, LocalEngine, ModelLoader, RayEngine, engine_for
from paris_assets.engines.loader import LOADING_INPUTS
from paris_assets.engines.ray_pool import gpus_for_workers
from paris_assets.lib.run.pool import map_in_processes
from paris_assets.models.profiles import build_model
from paris_assets.settings import Settings, parse_settings

WEBHOOK = "https://hooks.slack.example/services/T0001/B0002/s3cr3t-webhook-token"
ROLES = ("captioner", "text_encoder", "image_embedder", "clip_image_encoder", "latent_encoder",
         "video_latent_encoder", "t5_encoder")


@pytest.mark.parametrize("name,kind", [("local", LocalEngine), ("ray", RayEngine)])
def test_engine_for_returns_the_engine_the_settings_name(name, kind):
    engine = engine_for(parse_settings({"execution": {"engine": name}}).execution)
    assert type(engine) is kind and engine.name == name and isinstance(engine, Engine)
    assert set(ENGINES) == {"local", "ray"}  # a third engine: one module and one line in ENGINES


def test_the_local_engine_runs_units_here_and_loads_the_model_in_this_process():
    engine = engine_for(parse_settings({}).execution)
    with engine.units(3, "filtered_images") as (description, map_units):
        assert description == "local, 3 processes"
        assert list(map_units(abs, [-3, 1, -2])) == [3, 1, 2]
    with engine.model_pool(lambda: "the model", "latents", chunks=4) as model:
        assert model == "the model"
    assert engine.download_options() == {}
    assert engine.metadata({"engine": "local", "workers": 1, "rows": 9}) == {"engine": "local", "workers": 1}
    with engine.session() as where:
        assert where == "this machine"


def test_the_ray_engine_downloads_with_img2dataset_on_its_own_cluster():
    run = parse_settings({"execution": {"engine": "ray", "ray_address": "head:6379",
                                        "local_object_store_mb": 300}}).execution
    assert engine_for(run).download_options() == {"distributor": "ray",
                                                  "ray": {"address": "head:6379", "object_store_mb": 300}}


@pytest.mark.parametrize("processes", [1, 2])
def test_the_process_pool_keeps_the_units_order_and_raises_a_units_error(processes):
    assert list(map_in_processes(int, ["3", "1", "2", "10"], processes)) == [3, 1, 2, 10]
    with pytest.raises(ValueError, match="invalid literal for int"):
        list(map_in_processes(int, ["1", "x", "2"], processes))


def full_settings(tmp_path) -> Settings:
    """Settings with a secret in every place that may hold one, and model settings away from their defaults."""
    return parse_settings({
        "data_dir": str(tmp_path / "data"), "seed": 7,
        "source": {"kind": "url_list", "path": "https://bucket.example/laion.parquet?X-Amz-Signature=s3cr3t-signature"},
        "alerts": {"webhook_url": WEBHOOK, "ui_base_url": "https://dagster.example/?auth=s3cr3t-auth"},
        "execution": {"engine": "ray"},
        "models": {"profile": "paris", "device": "cpu", "dinov2_pooling": "mean", "latent_sampling": "sample",
                   "image_embedder_id": "weights/dinov2"},
        "captions": {"source": "blip2", "max_new_tokens": 11, "min_new_tokens": 2},
    }, base_dir=tmp_path)


def test_what_a_model_worker_receives_carries_no_webhook_url_nor_other_secret(tmp_path):
    """Issue 25 item 2: the Ray pool ships the ModelLoader to every worker (engines/ray.py: model_pool); it holds
    the role and the sections model loading reads, not the whole Settings."""
    from ray import cloudpickle  # what Ray pickles actor arguments with

    settings = full_settings(tmp_path)
    assert WEBHOOK.encode() in cloudpickle.dumps(settings)  # the whole Settings would carry it
    for role in ROLES:
        payload = cloudpickle.dumps(ModelLoader.for_role(settings, role))
        assert b"s3cr3t" not in payload and b"hooks.slack" not in payload, role
        assert len(payload) < 8000
        loader = pickle.loads(payload)
        assert loader.settings.alerts.webhook_url is None and loader.role == role


@pytest.mark.parametrize("role", ROLES)
def test_a_worker_builds_the_model_the_whole_settings_build(tmp_path, role):
    """The loader's settings keep everything model loading reads: the wrapper a worker builds equals the one the
    whole settings give (weights and revision, relative paths resolved, device, dtype, role options)."""
    settings = full_settings(tmp_path)
    loader = ModelLoader.for_role(settings, role)
    assert {name: getattr(loader.settings, name) for name in LOADING_INPUTS} == \
        {name: getattr(settings, name) for name in LOADING_INPUTS}
    ours, theirs = vars(build_model(loader.settings, role)), vars(build_model(settings, role))
    assert ours == theirs and ours["ref"].model_id


@pytest.mark.parametrize("requested,cluster,expected", [
    (None, {"CPU": 8.0, "GPU": 4.0}, 1),
    (None, {"CPU": 2.0}, 0),
    (None, {"CPU": 2.0, "GPU": 0.0}, 0),
    (0.5, {"CPU": 8.0, "GPU": 4.0}, 0.5),
    (1, {"CPU": 2.0}, 1),  # an explicit value is kept: the pool then says no worker fits
    (0, {"CPU": 8.0, "GPU": 4.0}, 0),
])
def test_gpus_per_worker_follows_the_cluster_unless_set(requested, cluster, expected):
    gpus, chosen_by = gpus_for_workers(requested, cluster)
    assert gpus == expected
    assert chosen_by == ("execution.gpus_per_worker" if requested is not None else
                         f"the cluster's {cluster.get('GPU', 0):g} GPUs (execution.gpus_per_worker unset)")


def test_gpus_per_worker_is_unset_by_default_and_an_explicit_value_is_kept():
    assert parse_settings({}).execution.gpus_per_worker is None
    assert parse_settings({"execution": {"gpus_per_worker": 0.5}}).execution.gpus_per_worker == 0.5
