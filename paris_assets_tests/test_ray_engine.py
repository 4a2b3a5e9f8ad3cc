"""The ray engine on a local Ray (127.0.0.1, two logical GPUs on this CPU machine): workers run side by side on
their own device, every model stage writes exactly the bytes the local engine writes, a worker killed mid-chunk
costs a retry and no row, a chunk that always fails is named, and the assets run on it end to end."""

import os
import signal
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ray import cloudpickle

from paris_assets.bench.models import make_kept
from paris_assets.engines import ray as ray_engine
from paris_assets.lib.run import stages
from paris_assets.lib.store.chunks import ChunkStore
from paris_assets.models.profiles import build_model, load_model
from paris_assets.settings import parse_settings

from .arrays_on_disk import read_with_numpy

N_IMAGES, CHUNK = 40, 8  # five chunks of eight images: a handful per worker

# The toy models and jobs below travel to the workers by value: a worker importing this module would import
# Dagster and the whole test stack, seconds per worker process.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """Kept crops (in crop shards of 16) and their table, as filtered_images writes them, plus tiny-profile
    settings with chunks of eight."""
    root = tmp_path_factory.mktemp("ray")
    make_kept(root / "filtered", N_IMAGES, distinct=N_IMAGES, per_shard=16)
    settings = parse_settings({"data_dir": str(root / "data"), "models": {
        "device": "cpu", "chunk_size": CHUNK, "image_batch_size": 4, "latent_batch_size": 4, "text_batch_size": 4,
        "caption_batch_size": 4}, "captions": {"min_new_tokens": 3, "max_new_tokens": 5}}, base_dir=root)
    build_model(settings, "image_embedder")  # builds the tiny models once, before any worker loads them
    return settings, pd.read_parquet(root / "filtered" / "kept.parquet"), root


def pool(settings, role, **kw) -> ray_engine.ModelPool:
    """A pool of the role's tiny model, every worker loaded before the first chunk (so each gets chunks)."""
    return ray_engine.ModelPool(partial(load_model, settings, role), label=role, log=lambda m: None,
                                **kw).wait_until_ready()


class Probe:
    """A model that records where it runs and takes its time, so two workers visibly overlap."""

    device = "probe"

    def preprocess(self, items):
        return items

    def __call__(self, items):
        started = time.time()
        time.sleep(0.5)
        n = len(items)
        return {"pid": np.full(n, os.getpid()), "cuda": np.full(n, int(os.environ["CUDA_VISIBLE_DEVICES"])),
                "started": np.full(n, started), "stopped": np.full(n, time.time())}


def _probe(model, items, _offset):
    return model(items)


def _rows(start, stop):
    return list(range(start, stop))


def test_two_gpu_workers_run_concurrently_each_on_its_own_device(ray_cluster, tmp_path):
    workers = ray_engine.ModelPool(Probe, workers=2, attributes=("device",), log=lambda m: None).wait_until_ready()
    try:
        store = ChunkStore(tmp_path, n_rows=16, chunk_size=4)
        job = stages.BatchedJob(_rows, stages._preprocess, _probe, batch_size=4, threads=1)
        stats = stages.run_batched(store, job, workers, lambda m: None, "probe")
    finally:
        workers.close()
    chunks = [{name: store.load(i, name)[0] for name in ("pid", "cuda", "started", "stopped")} for i in range(4)]
    assert stats["engine"] == "ray" and stats["workers"] == 2 and stats["gpus"] == 2
    assert {c["cuda"] for c in chunks} == {0, 1} and stats["worker_devices"] == ["0", "1"]
    by_device = {c["cuda"]: c["pid"] for c in chunks}
    assert len(set(by_device.values())) == 2  # one process per GPU, each with its own CUDA_VISIBLE_DEVICES
    overlaps = [(a["cuda"], b["cuda"]) for a in chunks for b in chunks
                if a["pid"] != b["pid"] and a["started"] < b["started"] < a["stopped"]]
    assert overlaps  # side by side: a chunk started on one worker while the other was inside its own
    assert workers.device == "probe"  # the pool answers for its workers' model


# stage -> (role, the files and chunked array folders it writes, workers: one for the text stages, to spare process start-ups).
# dinov2_embeddings is compared byte for byte through its asset, on two workers, at the end of this file.
STAGES = {
    "latents": ("latent_encoder", ["latents", "image_ids.npy"], 2),
    "clip_embeddings": ("text_encoder", ["tokens", "pooled", "image_ids.npy"], 1),
    "captions": ("captioner", ["captions.parquet"], 1),
    "clip_image_embeddings": ("clip_image_encoder", ["embeddings", "image_ids.npy"], 1),
}


def contents(path: Path) -> dict[str, bytes]:
    """A file's bytes, or those of every file in a folder (a chunked array: index.json and its chunks)."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def run_stage(name, settings, kept, root, model, tag):
    out, work = root / f"{name}-{tag}", root / f"{name}-{tag}-chunks"
    out.mkdir()
    store = ChunkStore(work, len(kept), CHUNK)
    m = settings.models
    common = dict(model=model, store=store, out_dir=out, threads=2, log=lambda s: None)
    if name == "latents":
        stats = stages.encode_latents(kept, batch_size=m.latent_batch_size, crops_url=str(root / "filtered"),
                                      **common)
    elif name == "clip_embeddings":
        stats = stages.encode_texts(stages.captions_table(kept, None), batch_size=m.text_batch_size, **common)
    elif name == "clip_image_embeddings":
        stats = stages.embed_images(kept, batch_size=m.image_batch_size, crops_url=str(root / "filtered"),
                                    label=name, **common)
    else:
        stats = stages.caption_images(kept, batch_size=m.caption_batch_size, crops_url=str(root / "filtered"),
                                      **common)
    return out, work, stats


@pytest.mark.parametrize("name", list(STAGES))
def test_every_model_stage_writes_the_local_engines_bytes(ray_cluster, kept, name):
    settings, table, root = kept
    role, files, n_workers = STAGES[name]
    local_out, local_work, local = run_stage(name, settings, table, root, load_model(settings, role), "local")
    workers = pool(settings, role, workers=n_workers)
    try:
        ray_out, ray_work, remote = run_stage(name, settings, table, root, workers, "ray")
    finally:
        workers.close()
    assert (local["engine"], remote["engine"], remote["workers"]) == ("local", "ray", n_workers)
    assert len(set(remote["chunk_workers"].values())) == n_workers  # every worker computed chunks
    print(f"{name}: local {local['wall_seconds']} s; ray {remote['wall_seconds']} s on {n_workers} workers, "
          f"started in {remote['startup_seconds']} s, overhead {remote['overhead_per_chunk_s']} s per chunk")
    chunk_files = sorted(p.name for p in local_work.glob("chunk-*.npy"))
    assert len(chunk_files) == (len(table) // CHUNK) * (len(files) - ("image_ids.npy" in files))
    assert chunk_files == sorted(p.name for p in ray_work.glob("chunk-*.npy"))
    for chunk in chunk_files:
        assert (local_work / chunk).read_bytes() == (ray_work / chunk).read_bytes(), chunk
    for file in files:
        assert contents(local_out / file) == contents(ray_out / file), file


class KillOnce:
    """The latent encoder, except that the first worker to reach row `at` SIGKILLs its own process mid-chunk
    (half its batches done), leaving its pid in `marker`; the restarted worker goes through."""

    def __init__(self, settings, marker: str, at: int):
        self.inner, self.marker, self.at = load_model(settings, "latent_encoder"), marker, at

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def preprocess(self, images):
        return self.inner.preprocess(images)

    def __call__(self, pixels, offset=0):
        if offset == self.at and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner(pixels, offset=offset)


def test_a_worker_killed_mid_chunk_is_retried_and_no_row_is_lost_or_doubled(ray_cluster, kept):
    settings, table, root = kept
    marker = root / "killed.pid"
    kill_at = 2 * CHUNK + 4  # the second batch of chunk 2: its first batch is done, nothing saved
    workers = ray_engine.ModelPool(partial(KillOnce, settings, str(marker), kill_at), workers=1, max_retries=1,
                                   log=lambda m: None)
    try:
        out, work, stats = run_stage("latents", settings, table, root, workers, "killed")
    finally:
        workers.close()
    killed = int(marker.read_text())
    assert stats["chunks_computed"] == len(table) // CHUNK and stats["chunk_workers"][2] != killed
    local_out, _work, _ = run_stage("latents", settings, table, root, load_model(settings, "latent_encoder"), "ref")
    assert np.load(out / "image_ids.npy").tolist() == table["image_id"].tolist()
    latents = read_with_numpy(out / "latents")
    assert latents.shape[0] == len(table)
    assert contents(out / "latents") == contents(local_out / "latents")
    # the rows, each exactly once, in order: row r's latent is the one the local engine computed for row r
    assert len({row.tobytes() for row in latents}) == len(table)


def _fail_on_chunk_3(model, items, offset):
    if offset // 10 == 3:
        raise ValueError(f"cannot read row {offset}")
    return {"x": np.asarray(items, dtype=np.int64)}


class Nothing:
    def preprocess(self, items):
        return items


def test_a_chunk_that_always_fails_fails_the_stage_naming_it(ray_cluster, tmp_path):
    workers = ray_engine.ModelPool(Nothing, workers=2, gpus_per_worker=0, cpus_per_worker=0.5, max_retries=1,
                                   attributes=(), log=lambda m: None)
    store = ChunkStore(tmp_path, n_rows=50, chunk_size=10)
    job = stages.BatchedJob(_rows, stages._preprocess, _fail_on_chunk_3, batch_size=5, threads=1)
    try:
        with pytest.raises(ray_engine.WorkFailed) as err:
            stages.run_batched(store, job, workers, lambda m: None, "toy")
    finally:
        workers.close()
    message = str(err.value)
    assert "toy: chunk 3 (rows 30-39 of 50) failed after 2 attempts" in message
    assert "last error: ValueError: cannot read row 30" in message
    assert 3 in store.missing() and store.done(0)  # the chunks that finished are kept
    assert str(tmp_path) in message


def _square(x):
    return x * x


def _odd_fails(x):
    if x == 7:
        raise KeyError("seven")
    return x


def test_map_units_keeps_order_and_names_a_failing_unit(ray_cluster):
    assert list(ray_engine.map_units(_square, range(12), cpus_per_task=0.5, in_flight=3)) == [x * x for x in range(12)]
    with pytest.raises(ray_engine.WorkFailed, match=r"filter: unit 7 failed after 2 attempts; last error: KeyError"):
        list(ray_engine.map_units(_odd_fails, range(10), max_retries=1, label="filter"))


def test_a_cluster_without_gpus_is_refused_with_what_to_set(ray_cluster):
    with pytest.raises(RuntimeError, match="execution.gpus_per_worker: 0"):
        ray_engine.ModelPool(Nothing, gpus_per_worker=4, attributes=(), label="latents")


def test_an_asset_run_with_engine_ray_uses_it_and_says_so(ray_cluster, tmp_path_factory):
    """dinov2_embeddings materialised in a real instance, first locally, then with execution.engine: ray over
    the same filtered_images (four chunks on two workers): the same bytes (the contract array is its chunks
    end to end), and the metadata names the engine, its workers and GPUs."""
    from dagster import AssetKey, DagsterInstance

    from paris_assets.definitions import build_defs

    root = tmp_path_factory.mktemp("asset")
    raw = {"data_dir": str(root / "data"), "source": {"kind": "demo", "demo_size": 50},
           "ingest": {"processes": 1, "threads": 8}, "filter": {"processes": 1}, "captions": {"source": "alt_text"},
           "models": {"chunk_size": 16, "image_batch_size": 8}}
    instance = DagsterInstance.ephemeral()

    def materialise(settings, keys):
        job = build_defs(settings).resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(instance=instance, asset_selection=[AssetKey(k) for k in keys])
        assert result.success
        return contents(root / "data" / "dinov2_embeddings" / "embeddings")

    local = materialise(parse_settings(raw, base_dir=root), ["raw_images", "filtered_images", "dinov2_embeddings"])
    on_ray = materialise(parse_settings({**raw, "execution": {"engine": "ray", "num_workers": 2}}, base_dir=root),
                         ["dinov2_embeddings"])
    assert on_ray == local
    meta = instance.get_latest_materialization_event(AssetKey("dinov2_embeddings")).asset_materialization.metadata
    assert (meta["engine"].value, meta["workers"].value, meta["gpus"].value) == ("ray", 2, 2)
    assert set(meta["worker_devices"].value) <= {"0", "1"} and 1 <= meta["workers_used"].value <= 2
    assert meta["ray_address"].value == "local (started for the run)"
    # execution.gpus_per_worker unset: one GPU each on a cluster that has GPUs, and the metadata says so
    assert meta["gpus_per_worker"].value == 1
    assert meta["gpus_per_worker_from"].value == "the cluster's 2 GPUs (execution.gpus_per_worker unset)"
    assert not list((root / "data" / ".staging").glob("dinov2_embeddings-chunks-*"))


# A Ray started as a user trying it on a laptop would (no GPU), in a child process: this one's Ray has two logical GPUs.
# The model is a toy (its module is the script itself, which Ray's pickler sends by value), loaded by the engine.
NO_GPU_SCRIPT = """
import json, sys, tempfile
import numpy as np
from paris_assets.engines import engine_for
from paris_assets.engines.ray import _loopback_only
from paris_assets.lib.run import stages
from paris_assets.lib.store.chunks import ChunkStore
from paris_assets.settings import parse_settings

class Toy:
    device = "cpu"
    def preprocess(self, items):
        return items

class ToyLoader:
    def prepare(self):
        pass
    def __call__(self):
        return Toy()

def rows(start, stop):
    return list(range(start, stop))

def forward(model, pre, offset):
    return {"x": np.asarray(pre, np.int64) * 2}

_loopback_only()
import ray
ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="paris-ray-"))
out = {}
for name, execution in (("unset", {}), ("explicit", {"gpus_per_worker": 1})):
    engine = engine_for(parse_settings({"execution": {"engine": "ray", **execution}}).execution)
    try:
        with engine.model_pool(ToyLoader(), "toy", chunks=2, log=lambda m: None) as pool:
            store = ChunkStore(f"{sys.argv[1]}/{name}", n_rows=8, chunk_size=4)
            job = stages.BatchedJob(rows, stages._preprocess, forward, batch_size=2, threads=1)
            stats = stages.run_batched(store, job, pool, lambda m: None, "toy")
            out[name] = {**engine.metadata(stats), "x": store.load(1, "x").tolist()}
    except RuntimeError as exc:
        out[name] = str(exc)
ray.shutdown()
print(json.dumps(out))
"""


def test_on_a_cluster_without_gpus_model_workers_default_to_cpu_workers(tmp_path):
    """Issue 25 item 7: execution.gpus_per_worker unset on a Ray without GPUs (ray.init(num_cpus=2)) runs CPU
    workers and says so in the metadata; an explicit 1 is kept, and refused there with what to set."""
    import json
    import subprocess

    done = subprocess.run([sys.executable, "-c", NO_GPU_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    unset = out["unset"]
    assert (unset["engine"], unset["gpus_per_worker"], unset["gpus"], unset["workers"]) == ("ray", 0, 0, 2)
    assert unset["gpus_per_worker_from"] == "the cluster's 0 GPUs (execution.gpus_per_worker unset)"
    assert unset["x"] == [8, 10, 12, 14]  # chunk 1 (rows 4-7), doubled by a CPU worker
    assert "the Ray cluster has 0 GPUs for workers of 1 GPU each" in out["explicit"]
    assert "execution.gpus_per_worker: 0" in out["explicit"]
