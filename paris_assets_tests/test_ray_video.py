"""media: video on the ray engine (a local Ray on 127.0.0.1, two logical GPUs on this CPU machine): the clip filter's
units as Ray tasks and the video model stages (the video VAE over whole clips, T5, DINOv2 over keyframes) on a pool
of workers write exactly the bytes the local engine writes."""

import sys

import pytest
from ray import cloudpickle

from paris_assets.engines import ray as ray_engine
from paris_assets.lib.run import stages
from paris_assets.lib.store.chunks import ChunkStore
from paris_assets.lib.demo.video import make_video_demo
from paris_assets.lib.video.filtering import filter_video_folder
from paris_assets.models.profiles import build_model, load_model
from paris_assets.settings import parse_settings

from .test_ray_engine import contents
from .test_video_filtering import PARAMS, PRE, read_output, write_raw_folder

CHUNK = 4

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def filtered(tmp_path_factory, ray_cluster):
    """The demo's clips filtered twice, in this process and as Ray tasks; the settings of the model stages."""
    root = tmp_path_factory.mktemp("ray_video")
    table = make_video_demo(root / "demo", n=16, seed=0)
    write_raw_folder(root / "raw", root / "demo" / "files", table)
    filter_video_folder(str(root / "raw"), str(root / "local"), PARAMS, PRE, chunk_size=6, log=lambda m: None)
    filter_video_folder(str(root / "raw"), str(root / "ray"), PARAMS, PRE, chunk_size=6, log=lambda m: None,
                        map_units=lambda fn, units: ray_engine.map_units(fn, units, label="filtered_images"))
    settings = parse_settings({"media": "video", "data_dir": str(root / "data"), "captions": {"source": "alt_text"},
                               "filter": {"image_size": PARAMS.image_size},
                               "models": {"device": "cpu", "chunk_size": CHUNK, "image_batch_size": 2,
                                          "latent_batch_size": 2, "text_batch_size": 2}}, base_dir=root)
    for role in ("video_latent_encoder", "image_embedder"):
        build_model(settings, role)  # the tiny models built once, before any worker loads them
    return root, settings


def test_the_clip_filter_on_ray_writes_what_local_processes_write(filtered):
    root, _settings = filtered
    local, remote = read_output(root / "local"), read_output(root / "ray")
    assert local["kept"].equals(remote["kept"]) and local["rejected"].equals(remote["rejected"])
    assert local["tars"] == remote["tars"] and len(local["kept"]) > 8


STAGES = {"latents": "video_latent_encoder", "t5": "t5_encoder", "keyframes": "image_embedder"}


def run_stage(name, settings, root, model, tag):
    import pandas as pd

    kept = pd.read_parquet(root / "local" / "kept.parquet")
    out, work = root / f"{name}-{tag}", root / f"{name}-{tag}-chunks"
    out.mkdir()
    common = dict(model=model, store=ChunkStore(work, len(kept), CHUNK), out_dir=out, batch_size=2, threads=2,
                  log=lambda s: None)
    if name == "latents":
        stats = stages.encode_latents(kept, crops_url=str(root / "local"), clips=True, **common)
    elif name == "t5":
        stats = stages.encode_t5(stages.captions_table(kept, None), **common)
    else:
        stats = stages.embed_images(kept, crops_url=str(root / "local"), frames="keyframes", **common)
    return out, stats


@pytest.mark.parametrize("name", list(STAGES))
def test_every_video_model_stage_writes_the_local_engines_bytes(filtered, name):
    import torch

    root, settings = filtered
    threads = torch.get_num_threads()
    # the workers' torch threads (execution.cpus_per_worker, 1): on a CPU, conv3d's sums depend on the thread count
    torch.set_num_threads(1)
    try:
        local_out, local = run_stage(name, settings, root, load_model(settings, STAGES[name]), "local")
    finally:
        torch.set_num_threads(threads)
    workers = ray_engine.ModelPool(lambda: load_model(settings, STAGES[name]), workers=2, label=name,
                                   log=lambda m: None).wait_until_ready()
    try:
        ray_out, remote = run_stage(name, settings, root, workers, "ray")
    finally:
        workers.close()
    assert (local["engine"], remote["engine"], remote["workers"]) == ("local", "ray", 2)
    assert len(set(remote["chunk_workers"].values())) == 2  # both workers computed chunks
    assert contents(local_out) == contents(ray_out)
    assert remote["shapes"] == local["shapes"] and local["shapes"]
