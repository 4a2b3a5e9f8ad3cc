"""The training loaders on a small synthetic data folder written here (uneven shards, router arrays): seeded and
reproducible, the same number of batches on every rank (also under a real torch.distributed group), the flow
and DDPM interpolants, and tampered shards that cannot run code in the loader or in the integrity check."""

import builtins
import datetime
import hashlib
import io
import json
import os
import pickle

import numpy as np
import pytest
import torch

from paris_assets.lib.store.arrays import ChunkedArrayWriter, open_named
from paris_assets.lib.outputs.samples import UnsafeMember
from paris_assets.lib.outputs.tars import TarShardWriter
from paris_assets.lib.outputs.validation import verify_training_outputs
from paris_assets.loaders import expert_dataset, router_dataset

SHARD_SIZES = [5, 5, 5, 5, 5, 5, 3]  # 33 samples, a short last shard as written by expert_shards
ROUTER_ROWS = 37
P, D = 8, 6


def npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def sample_fields(i: int) -> dict[str, bytes]:
    rng = np.random.default_rng(i)
    return {"latent.npy": npy(rng.standard_normal((4, 32, 32)).astype(np.float16)),
            "clip.npy": npy(rng.standard_normal(P).astype(np.float16)),
            "clip_tokens.npy": npy(rng.standard_normal((77, P)).astype(np.float16)),
            "txt": f"caption {i}".encode(), "json": json.dumps({"image_id": f"img{i:04d}", "cluster": 0}).encode()}


def write_folder(root, first_fields=None, router_form="chunked") -> list[str]:
    """expert_shards/cluster_0/ + pipeline_manifest.json + router_pairs/ (its big arrays as chunked folders of 8
    rows a chunk, as router_pairs writes them, or as the monolithic .npy files of earlier outputs); returns the
    kept ids."""
    folder = root / "expert_shards" / "cluster_0"
    folder.mkdir(parents=True)
    entries, ids, i = [], [], 0
    for n, size in enumerate(SHARD_SIZES):
        path = folder / f"shard-{n:06d}.tar"
        with open(path, "wb") as fh, TarShardWriter(fh) as writer:
            for _ in range(size):
                fields = sample_fields(i)
                if i == 0 and first_fields:
                    fields.update(first_fields)
                writer.write(f"img{i:04d}", fields)
                ids.append(f"img{i:04d}")
                i += 1
        entries.append({"path": f"expert_shards/cluster_0/{path.name}", "samples": size,
                        "bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    (root / "pipeline_manifest.json").write_text(json.dumps({"k": 1, "clusters": {"0": entries}, "heldout": []}))
    router = root / "router_pairs"
    router.mkdir()
    rng = np.random.default_rng(0)
    big = {"latents": rng.standard_normal((ROUTER_ROWS, 4, 32, 32)).astype(np.float16),
           "clip_text_embeddings": rng.standard_normal((ROUTER_ROWS, P)).astype(np.float16),
           "dinov2_embeddings": rng.standard_normal((ROUTER_ROWS, D)).astype(np.float32)}
    for name, array in big.items():
        if router_form == "chunked":
            writer = ChunkedArrayWriter(router / name, chunk_rows=8)
            writer.append(array)
            writer.finish(n_rows=ROUTER_ROWS)
        else:
            np.save(router / f"{name}.npy", array)
    np.save(router / "cluster_labels.npy", rng.integers(0, 3, ROUTER_ROWS).astype(np.int32))
    return ids


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("loaders")
    write_folder(root)
    return root


@pytest.fixture(scope="module", params=["chunked", "npy"])
def router_data(request, data, tmp_path_factory):
    """The data folder with router arrays as router_pairs writes them (chunked), or as monolithic .npy files."""
    if request.param == "chunked":
        return data
    root = tmp_path_factory.mktemp("loaders-npy")
    write_folder(root, router_form="npy")
    return root


def router_array(data, name: str) -> np.ndarray:
    return np.asarray(open_named(str(data / "router_pairs"), name))


def keys(dataset, workers=0, batch_size=4) -> list[list[str]]:
    """The keys of each batch a DataLoader gives."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    return [list(batch[3]) for batch in loader]


@pytest.mark.parametrize("resampled", [False, True])
def test_same_seed_same_keys(data, resampled):
    make = lambda seed, epoch=0: expert_dataset(data, 0, seed=seed, epoch=epoch, resampled=resampled,  # noqa: E731
                                                with_key=True)
    first = keys(make(0), workers=2)
    assert first == keys(make(0), workers=2)  # seed 0 is a seed, not "random"
    assert first != keys(make(1), workers=2)
    other_epoch = make(0)
    other_epoch.set_epoch(1)
    assert keys(other_epoch, workers=2) != first
    flat = [k for batch in first for k in batch]
    assert len(flat) == sum(SHARD_SIZES)
    if not resampled:
        assert len(set(flat)) == len(flat)  # an epoch reads every sample once


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("resampled", [False, True])
def test_every_rank_gets_the_same_number_of_batches(data, world, workers, resampled):
    per_rank = [keys(expert_dataset(data, 0, seed=3, resampled=resampled, with_key=True, rank=r, world_size=world),
                     workers=workers, batch_size=2) for r in range(world)]
    assert len({len(batches) for batches in per_rank}) == 1
    flat = [[k for b in batches for k in b] for batches in per_rank]
    assert {len(f) for f in flat} == {sum(SHARD_SIZES) // world}
    assert all(len(expert_dataset(data, 0, rank=r, world_size=world)) == len(flat[r]) for r in range(world))
    if not resampled:
        every = [k for f in flat for k in f]
        assert len(set(every)) == len(every)  # the ranks read disjoint samples


def test_too_many_ranks_is_a_clear_error(data):
    dataset = expert_dataset(data, 0, rank=0, world_size=sum(SHARD_SIZES) + 1)
    with pytest.raises(ValueError, match="every rank needs at least one"):
        next(iter(dataset))


def _ddp_worker(rank, world, folder, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world,
                                         timeout=datetime.timedelta(seconds=60))
    try:
        counts = []
        for make in (lambda: expert_dataset(folder, 0, seed=0), lambda: router_dataset(folder, seed=0)):
            loader = torch.utils.data.DataLoader(make(), batch_size=3, num_workers=2)
            counts.append(sum(1 for _ in loader))
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, counts)
        if rank == 0:
            with open(out, "w") as fh:
                json.dump(gathered, fh)
    finally:
        torch.distributed.destroy_process_group()


def test_ranks_of_a_real_process_group_agree_on_batches(data, tmp_path):
    """Two gloo ranks, two DataLoader workers each: rank and world come from torch.distributed."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "counts.json"
    torch.multiprocessing.start_processes(_ddp_worker, args=(2, str(data), port, str(out)), nprocs=2,
                                          start_method="fork")
    expert, router = zip(*json.loads(out.read_text()))
    assert len(set(expert)) == 1 and len(set(router)) == 1, (expert, router)


def test_router_flow_by_default(router_data):
    data = router_data
    items = list(router_dataset(data, seed=0, with_dinov2=True))
    again = list(router_dataset(data, seed=0, with_dinov2=True))
    assert len(items) == ROUTER_ROWS
    assert all(torch.equal(a["x_t"], b["x_t"]) and a["t"] == b["t"] for a, b in zip(items, again))
    latents = router_array(data, "latents").astype(np.float32)
    clip = router_array(data, "clip_text_embeddings").astype(np.float32)
    dinov2 = router_array(data, "dinov2_embeddings")
    labels = np.load(data / "router_pairs" / "cluster_labels.npy")
    ts = []
    for item in items:
        t = float(item["t"])
        assert item["t"].dtype == torch.float32 and 0 < t < 1
        row = int(np.flatnonzero((clip == item["clip"].numpy()).all(axis=1))[0])  # which image this is
        assert item["cluster"] == labels[row] and np.array_equal(item["dinov2"].numpy(), dinov2[row])
        eps = (item["x_t"].numpy() - (1 - t) * latents[row]) / t  # x_t = (1 - t) x0 + t eps
        assert abs(eps.std() - 1) < 0.1 and abs(eps.mean()) < 0.1
        ts.append(t)
    assert 0.3 < np.median(ts) < 0.7 and np.std(ts) > 0.1  # logit-normal around 1/2


def test_router_ddpm_option(router_data):
    from paris_assets.loaders import linear_alphas_cumprod

    data = router_data
    alphas = linear_alphas_cumprod().numpy()
    latents = router_array(data, "latents").astype(np.float32)
    clip = router_array(data, "clip_text_embeddings").astype(np.float32)
    for item in router_dataset(data, seed=0, interpolant="ddpm"):
        t = int(item["t"])
        assert item["t"].dtype == torch.int64 and 0 <= t < 1000 and "dinov2" not in item
        row = int(np.flatnonzero((clip == item["clip"].numpy()).all(axis=1))[0])
        eps = (item["x_t"].numpy() - np.sqrt(alphas[t]) * latents[row]) / np.sqrt(1 - alphas[t])
        assert abs(eps.std() - 1) < 0.1
    with pytest.raises(ValueError, match="interpolant"):
        router_dataset(data, interpolant="edm")


def test_router_without_router_pairs_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="materialise router_pairs first"):
        router_dataset(tmp_path)


class Payload:
    """Unpickling this creates the marker file: code run by a loader."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


@pytest.mark.parametrize("member", ["pyd", "pickle", "pth", "latent.npy"])
def test_tampered_shard_runs_no_code(tmp_path, member):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Payload(str(marker)))
    if member == "latent.npy":  # an object array: a pickle inside a valid .npy
        buf = io.BytesIO()
        np.save(buf, np.array([Payload(str(marker))], dtype=object), allow_pickle=True)
        payload = buf.getvalue()
    root = tmp_path / "data"
    ids = write_folder(root, first_fields={member: payload})
    with pytest.raises(UnsafeMember, match=member.replace(".", r"\.")):
        list(expert_dataset(root, 0, shuffle=0))
    ok, facts = verify_training_outputs(str(root), ids, [], {"latent.npy": ((4, 32, 32), "float16")})
    assert not ok and any("UnsafeMember" in p and member in p for p in facts["problems"]), facts["problems"]
    assert not marker.exists()
