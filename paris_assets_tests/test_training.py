"""expert_shards, heldout, router_pairs and the manifest: read back by plain webdataset, the shard policy, a
smaller K leaving nothing stale, determinism, damage caught by the checks, the gate blocking them, and
loaders that train."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
import webdataset as wds
from dagster import AssetKey

from paris_assets.lib.store.arrays import open_named
from paris_assets.lib.outputs.shards import heldout_mask
from paris_assets.lib.outputs.tars import TarShardWriter, iter_samples
from paris_assets.lib.outputs.validation import verify_training_outputs
from paris_assets.loaders import expert_dataset, router_dataset
from paris_assets.settings import PROJECT_ROOT

from .arrays_on_disk import assert_chunked_and_plain, read_with_numpy

DOWNSTREAM = [AssetKey(k) for k in ("cluster_labels", "cluster_report", "expert_shards", "router_pairs")]
EXPECT = {"latent.npy": ((4, 32, 32), "float16"), "clip.npy": ((768,), "float16"),
          "clip_tokens.npy": ((77, 32), "float16")}


def kept_ids(data):
    import pandas as pd

    return pd.read_parquet(data / "filtered_images" / "kept.parquet")["image_id"].tolist()


@pytest.mark.parametrize("picked", ["none", "under_a_chunk", "one_chunk", "across_chunks"])
def test_router_arrays_stream_into_chunks(tmp_path, picked):
    """write_router_arrays over upstream chunked arrays: the picked rows, in order, in chunks of chunk_rows
    filled `block` rows at a time; numpy alone reads them back."""
    import pandas as pd

    from paris_assets.lib.store.arrays import ChunkedArrayWriter, open_array
    from paris_assets.lib.outputs.shards import ShardSource, write_router_arrays

    n, rng = 23, np.random.default_rng(0)
    upstream = {"latents": rng.standard_normal((n, 4, 2, 2)).astype(np.float16),
                "pooled": rng.standard_normal((n, 5)).astype(np.float16),
                "dinov2": rng.standard_normal((n, 3)).astype(np.float32)}
    for name, array in upstream.items():  # as the model stages write them: chunks of another size
        writer = ChunkedArrayWriter(tmp_path / "in" / name, chunk_rows=6)
        writer.append(array)
        writer.finish()
    opened = {name: open_array(str(tmp_path / "in" / name)) for name in upstream}
    ids = np.array([f"{i:016x}" for i in range(n)])
    src = ShardSource(kept=pd.DataFrame({"image_id": ids}), captions=[""] * n,
                      labels=rng.integers(0, 3, n).astype(np.int32), distances=np.zeros(n, np.float32),
                      latents=opened["latents"], pooled=opened["pooled"], tokens=None)
    rows = {"none": [], "under_a_chunk": [2, 5, 7], "one_chunk": [0, 1, 4, 9], "across_chunks": range(1, n, 2)}
    rows = np.asarray(rows[picked], dtype=np.int64)
    out = tmp_path / "out"
    shapes = write_router_arrays(out, rows, src, opened["dinov2"], block=3, chunk_rows=4)
    for name, source in {"latents": "latents", "clip_text_embeddings": "pooled",
                         "dinov2_embeddings": "dinov2"}.items():
        plain = assert_chunked_and_plain(out, name)
        np.testing.assert_array_equal(plain, upstream[source][rows])
        assert shapes[name] == [len(rows), *upstream[source].shape[1:]]
        index = json.loads((out / name / "index.json").read_text())
        assert index["chunk_rows"] == 4 and len(index["chunks"]) == -(-len(rows) // 4)
    np.testing.assert_array_equal(np.load(out / "cluster_labels.npy"), src.labels[rows])
    assert np.load(out / "image_ids.npy").tolist() == ids[rows].tolist() and shapes["cluster_labels"] == [len(rows)]


def test_plain_webdataset_reads_every_cluster(trained):
    _settings, _run, _instance, data = trained
    manifest = json.loads((data / "pipeline_manifest.json").read_text())
    assert sorted(manifest["clusters"]) == ["0", "1", "2", "3"]
    assert sorted(p.name for p in (data / "expert_shards").iterdir() if p.is_dir()) == [f"cluster_{k}" for k in range(4)]
    for k, shards in manifest["clusters"].items():
        samples = list(wds.WebDataset([str(data / s["path"]) for s in shards], shardshuffle=False).decode("pil"))
        assert len(samples) == sum(s["samples"] for s in shards)
        for sample in samples:
            assert sample["latent.npy"].shape == (4, 32, 32) and sample["latent.npy"].dtype == np.float16
            assert sample["clip_tokens.npy"].shape == (77, 32) and sample["clip.npy"].dtype == np.float16
            assert sample["json"]["cluster"] == int(k) and sample["json"]["image_id"] == sample["__key__"]
            assert sample["txt"] and sample["jpg"].size == (256, 256)
            assert set(sample["json"]) >= {"url", "alt_text", "caption", "aesthetic", "punsafe", "width", "height",
                                           "centroid_distance", "phash"}
        assert all(s["samples"] <= 6 for s in shards)  # the shard size policy
    assert manifest["counts"]["filtered_images"]["kept"] == len(kept_ids(data))
    assert manifest["models"]["latent_encoder"]["id"].endswith("models/tiny/latent_encoder")


def test_heldout_and_router_pairs_partition_the_kept_images(trained):
    _settings, _run, _instance, data = trained
    kept = kept_ids(data)
    held = np.load(data / "heldout" / "image_ids.npy").tolist()
    router = np.load(data / "router_pairs" / "image_ids.npy").tolist()
    assert held and not set(held) & set(router) and sorted(held + router) == sorted(kept)
    assert router == [i for i in kept if i not in set(held)]  # kept.parquet's order
    lengths = {n: len(open_named(str(data / "router_pairs"), n))
               for n in ("latents", "cluster_labels", "dinov2_embeddings", "clip_text_embeddings")}
    assert set(lengths.values()) == {len(router)}
    labels = np.load(data / "cluster_labels" / "labels.npy")
    assert np.array_equal(np.load(data / "router_pairs" / "cluster_labels.npy"),
                          labels[[kept.index(i) for i in router]])
    held_labels = set(labels[[kept.index(i) for i in held]].tolist())
    assert len(held_labels) >= 2  # stratified: more than one cluster is represented
    ok, facts = verify_training_outputs(str(data), kept, held, EXPECT)
    assert ok, facts["problems"]
    # an image the split trains on, found only in heldout/: neither missing nor twice, still a finding
    ok, facts = verify_training_outputs(str(data), kept, held[1:], EXPECT)
    assert not ok and facts["problems"] == [f"1 images in heldout/ are not held out (first: {held[0]})"]


@pytest.mark.parametrize("folder", ["router_pairs", "heldout"])
def test_router_arrays_are_chunked_folders_plain_numpy_reads(trained, folder):
    """The big router arrays are chunked folders (numpy alone reads them, as the project's reader does), row i
    the same image as image_ids.npy's row i; the small ones stay .npy."""
    _settings, _run, _instance, data = trained
    kept = kept_ids(data)
    ids = np.load(data / folder / "image_ids.npy").tolist()
    rows = [kept.index(i) for i in ids]
    upstream = {"latents": ("latents", "latents"), "dinov2_embeddings": ("dinov2_embeddings", "embeddings"),
                "clip_text_embeddings": ("clip_embeddings", "pooled")}
    for name, (asset, array) in upstream.items():
        plain = assert_chunked_and_plain(data / folder, name)
        np.testing.assert_array_equal(plain, read_with_numpy(data / asset / array)[rows])
    labels = np.load(data / "cluster_labels" / "labels.npy")
    np.testing.assert_array_equal(np.load(data / folder / "cluster_labels.npy"), labels[rows])


def test_rematerialising_is_byte_identical(trained):
    settings, run, _instance, data = trained
    before = json.loads((data / "pipeline_manifest.json").read_text())
    assert run(settings(), selection=[AssetKey("expert_shards")]).success
    after = json.loads((data / "pipeline_manifest.json").read_text())
    digests = lambda m: {s["path"]: s["sha256"] for sh in m["clusters"].values() for s in sh}  # noqa: E731
    assert digests(before) == digests(after)


@pytest.mark.parametrize("damage,message", [
    ("delete", "missing"), ("truncate", "sha256 differs"), ("extra", "not in the manifest"),
    ("duplicate", "more than once"),
])
def test_every_check_fails_on_damaged_output(trained, tmp_path, damage, message):
    _settings, _run, _instance, data = trained
    copy = tmp_path / "data"
    for name in ("expert_shards", "heldout"):
        shutil.copytree(data / name, copy / name)
    shutil.copy(data / "pipeline_manifest.json", copy / "pipeline_manifest.json")
    manifest = json.loads((copy / "pipeline_manifest.json").read_text())
    first = copy / manifest["clusters"]["0"][0]["path"]
    if damage == "delete":
        first.unlink()
    elif damage == "truncate":
        first.write_bytes(first.read_bytes()[:1536])
    elif damage == "extra":
        shutil.copy(first, first.with_name("shard-999999.tar"))
    else:  # the same image listed in a second shard too
        other = copy / manifest["clusters"]["1"][0]["path"]
        samples = [s for path in (other, first) for s in iter_samples(open(path, "rb"))]
        with open(other, "wb") as fh, TarShardWriter(fh) as writer:
            for key, fields in samples:
                writer.write(key, fields)
        manifest["clusters"]["1"][0]["sha256"] = hashlib.sha256(other.read_bytes()).hexdigest()
        manifest["clusters"]["1"][0]["samples"] = len(samples)
        (copy / "pipeline_manifest.json").write_text(json.dumps(manifest))
    kept = kept_ids(data)
    held = np.load(data / "heldout" / "image_ids.npy").tolist()
    ok, facts = verify_training_outputs(str(copy), kept, held, EXPECT)
    assert not ok and any(message in p for p in facts["problems"]), facts["problems"]


def test_expert_loader_trains(trained):
    """A tiny denoiser on one expert's shards: the loss falls clearly."""
    _settings, _run, _instance, data = trained
    torch.manual_seed(0)
    manifest = json.loads((data / "pipeline_manifest.json").read_text())
    biggest = max(manifest["clusters"], key=lambda k: sum(s["samples"] for s in manifest["clusters"][k]))
    batch = torch.utils.data.DataLoader(expert_dataset(data, int(biggest), shuffle=0), batch_size=8)
    latents = torch.cat([b[0] for b in batch])
    cond = torch.cat([b[1] for b in batch]).mean(dim=1)  # (N, 32) from the per-token states
    alphas = torch.linspace(0.99, 0.2, 100)
    denoiser = torch.nn.Sequential(torch.nn.Conv2d(4 + 1 + 32, 64, 3, padding=1), torch.nn.SiLU(),
                                   torch.nn.Conv2d(64, 4, 3, padding=1))
    opt = torch.optim.Adam(denoiser.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        idx = torch.randint(0, len(latents), (8,))
        t = torch.randint(0, 100, (8,))
        a = alphas[t].view(-1, 1, 1, 1)
        noise = torch.randn_like(latents[idx])
        x_t = a.sqrt() * latents[idx] + (1 - a).sqrt() * noise
        inputs = torch.cat([x_t, a.expand(-1, 1, 32, 32), cond[idx].view(-1, 32, 1, 1).expand(-1, 32, 32, 32)], 1)
        loss = torch.nn.functional.mse_loss(denoiser(inputs), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])


@pytest.mark.parametrize("interpolant", ["flow", "ddpm"])
def test_router_trains(trained, interpolant):
    """A tiny router on router_pairs under the flow interpolant (the default) and DDPM: the loss falls clearly."""
    _settings, _run, _instance, data = trained
    torch.manual_seed(0)
    dataset = router_dataset(data, seed=0, interpolant=interpolant)
    router_data = torch.utils.data.DataLoader(dataset, batch_size=16)
    k = int(np.load(data / "router_pairs" / "cluster_labels.npy").max()) + 1
    router = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4 * 32 * 32 + 1, 64), torch.nn.SiLU(),
                                 torch.nn.Linear(64, k))
    opt = torch.optim.Adam(router.parameters(), lr=2e-3)
    scale = 1.0 if interpolant == "flow" else 1000.0
    losses = []
    for epoch in range(12):
        dataset.set_epoch(epoch)
        for batch in router_data:
            features = torch.cat([batch["x_t"].flatten(1), (batch["t"].float() / scale).unsqueeze(1)], 1)
            loss = torch.nn.functional.cross_entropy(router(features), batch["cluster"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8])


def test_failed_gate_leaves_training_outputs_unmaterialised(trained):
    settings, run, instance, _data = trained
    counts = lambda: {k: len(instance.fetch_materializations(AssetKey(k), limit=50).records)  # noqa: E731
                      for k in ("expert_shards", "router_pairs", "cluster_report")}
    before = counts()
    result = run(settings(min_silhouette=0.99), selection=DOWNSTREAM)
    assert not result.success
    after = counts()
    assert after["cluster_report"] == before["cluster_report"] + 1  # the report explains the failure
    assert after["expert_shards"] == before["expert_shards"] and after["router_pairs"] == before["router_pairs"]
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "cluster_report" in started and not {"expert_shards", "router_pairs"} & started


def test_smaller_k_leaves_nothing_stale(trained):
    settings, run, instance, data = trained
    upstream = {k: len(instance.fetch_materializations(AssetKey(k), limit=50).records)
                for k in ("filtered_images", "dinov2_embeddings", "latents", "clip_embeddings")}
    assert run(settings(k=3), selection=DOWNSTREAM).success
    assert {k: len(instance.fetch_materializations(AssetKey(k), limit=50).records) for k in upstream} == upstream
    assert sorted(p.name for p in (data / "expert_shards").iterdir() if p.is_dir()) == ["cluster_0", "cluster_1",
                                                                                       "cluster_2"]
    manifest = json.loads((data / "pipeline_manifest.json").read_text())
    assert manifest["k"] == 3 and sorted(manifest["clusters"]) == ["0", "1", "2"]
    assert np.load(data / "router_pairs" / "cluster_labels.npy").max() == 2
    ok, facts = verify_training_outputs(str(data), kept_ids(data), np.load(data / "heldout" / "image_ids.npy").tolist(),
                                        EXPECT)
    assert ok, facts["problems"]


def heldout_state(data, instance) -> tuple[list[str], dict, dict]:
    manifest = json.loads((data / "pipeline_manifest.json").read_text())
    meta = instance.fetch_materializations(AssetKey("expert_shards"), limit=1).records[0].asset_materialization.metadata
    return np.load(data / "heldout" / "image_ids.npy").tolist(), manifest, meta


@pytest.mark.parametrize("k", [2, 4])
def test_heldout_images_do_not_move_with_k(trained, k):
    """A new K re-clusters everything, yet the same images stay held out; per-cluster counts and the worst
    deviation from stratified are in the manifest and the metadata."""
    settings, run, instance, data = trained
    kept = kept_ids(data)
    expected = [i for i, h in zip(kept, heldout_mask(kept, 0.1, 10_000, 0)) if h]
    assert run(settings(k=k), selection=DOWNSTREAM).success
    held, manifest, meta = heldout_state(data, instance)
    assert held == expected and manifest["k"] == k
    labels = np.load(data / "cluster_labels" / "labels.npy")
    split = manifest["heldout_split"]
    counts = np.bincount(labels[[kept.index(i) for i in held]], minlength=k)
    assert [split["per_cluster"][str(c)]["heldout"] for c in range(k)] == counts.tolist()
    assert split["heldout"] == len(held) and meta["heldout_per_cluster"].value == split["per_cluster"]
    assert meta["heldout_worst_deviation_images"].value == split["worst_deviation_images"]
    rate = len(held) / len(kept)
    worst = max(abs(c - n * rate) for c, n in zip(counts, np.bincount(labels, minlength=k)))
    assert split["worst_deviation_images"] == pytest.approx(worst, abs=0.01)


def test_notebooks_run_top_to_bottom(trained, monkeypatch, tmp_path):
    """Every notebook under notebooks/, executed with a real kernel against these outputs, found through the
    settings file named by PARIS_CONFIG (as a user points it anywhere); committed clean."""
    import nbformat
    import yaml
    from nbclient import NotebookClient

    settings, _run, _instance, data = trained
    (tmp_path / "paris.yaml").write_text(yaml.safe_dump(settings().as_dict()))
    monkeypatch.setenv("PARIS_CONFIG", str(tmp_path / "paris.yaml"))
    monkeypatch.delenv("PARIS_DATA_DIR", raising=False)
    notebooks = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), f"{path.name} has outputs"
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
        outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
        assert not [o for o in outputs if o.output_type == "error"]
        mimes = {m for o in outputs for m in o.get("data", {})}
        assert "application/vnd.plotly.v1+json" in mimes and "image/png" in mimes


def test_integrity_check_reads_object_storage(trained):
    """The same verification over fsspec's memory:// (as on s3://): passes on a faithful copy, fails on a damaged one."""
    import fsspec

    _settings, _run, _instance, data = trained
    fs = fsspec.filesystem("memory")
    root = f"memory://verify-{__import__('uuid').uuid4().hex[:8]}"
    for path in [data / "pipeline_manifest.json"] + [p for d in ("expert_shards", "heldout") for p in (data / d).rglob("*")
                                                     if p.is_file()]:
        rel = path.relative_to(data)
        fs.pipe(f"{root}/{rel}", path.read_bytes())
    kept = kept_ids(data)
    held = np.load(data / "heldout" / "image_ids.npy").tolist()
    ok, facts = verify_training_outputs(root, kept, held, EXPECT)
    assert ok, facts["problems"]
    manifest = json.loads((data / "pipeline_manifest.json").read_text())
    fs.rm(f"{root}/{manifest['clusters']['0'][0]['path']}")
    ok, facts = verify_training_outputs(root, kept, held, EXPECT)
    assert not ok and any("missing" in p for p in facts["problems"])


def test_report_link_points_at_the_committed_report(trained):
    _settings, _run, instance, data = trained
    meta = instance.fetch_materializations(AssetKey("cluster_report"), limit=1).records[0].asset_materialization.metadata
    assert meta["report_html"].value == str(data / "cluster_report" / "report.html")
    assert (data / "cluster_report" / "report.html").stat().st_size > 0


@pytest.mark.parametrize("array", [np.arange(12, dtype=np.float16).reshape(3, 4), np.ones((4, 32, 32), np.float16),
                                   np.zeros((0, 3), np.float32), np.array(["ab", "c"]),
                                   np.arange(10, dtype=">i4")[::2]])
def test_npy_bytes_are_what_np_save_writes(array):
    import io

    from paris_assets.lib.outputs.shards import npy_bytes

    expected = io.BytesIO()
    np.save(expected, np.ascontiguousarray(array))
    assert npy_bytes(array) == expected.getvalue()
    assert np.array_equal(np.load(io.BytesIO(npy_bytes(array))), array)
