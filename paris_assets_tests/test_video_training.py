"""media: video, the training side, on a small synthetic clip set written here: the upstream folders of the
video graph (kept.parquet with the clip columns, real mp4 clips in the crops shard, T5 states and mask, 5-D
latents, first-frame DINOv2), turned into a ShardSource by the assets' own _source; expert shards, the held-out
split and the router arrays written from it are read back by plain webdataset and numpy and by the loaders;
flow matching's draw; and a tiny 3-D conv expert (conditioned on the masked mean of the T5 states) and a tiny
router that both learn on them."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import webdataset as wds
from upath import UPath

from paris_assets.assets.training import _aligned, _rows_line_up, _source, video_facts
from paris_assets.io_managers import AssetFolder
from paris_assets.lib.outputs.shards import (heldout_mask, listed_shards, manifest_entries, write_expert_shards,
                                             write_router_arrays, write_shards)
from paris_assets.lib.outputs.tars import TarShardWriter
from paris_assets.lib.outputs.validation import verify_training_outputs
from paris_assets.lib.video.decode import decode_clip, encode_clip
from paris_assets.loaders import expert_dataset, noise_latent, router_dataset
from paris_assets.settings import parse_settings

from .arrays_on_disk import assert_chunked_and_plain

N, K = 60, 3  # clips, clusters
C, T, S = 4, 5, 8  # latent (C, T', h, w): 17 frames -> 5 latent frames
L, DT, P, DD = 16, 32, 16, 12  # tiny T5 (tokens, width), pooled CLIP width, DINOv2 width
FRAMES, SIDE, DISTINCT_CLIPS = 17, 16, 4
MEMBERS = {"latent.npy", "clip.npy", "clip_tokens.npy", "t5_tokens.npy", "t5_mask.npy", "dinov2.npy", "txt", "json",
           "mp4"}
EXPECT = {"latent.npy": ((C, T, S, S), "float16"), "clip.npy": ((P,), "float16"),
          "clip_tokens.npy": ((77, P), "float16"), "t5_tokens.npy": ((L, DT), "float16"),
          "t5_mask.npy": ((L,), "bool"), "dinov2.npy": ((DD,), "float32")}
CLIP_FACTS = {"duration", "source_fps", "fps", "num_frames", "window_start", "window_end", "rotation", "codec",
              "motion"}


def clips() -> list[bytes]:
    """A few real H.264 clips of FRAMES frames, SIDE x SIDE (a square moving across a tinted background)."""
    out = []
    for c in range(DISTINCT_CLIPS):
        frames = np.full((FRAMES, SIDE, SIDE, 3), 40 * c, np.uint8)
        for t in range(FRAMES):
            frames[t, 4:10, t % (SIDE - 6):t % (SIDE - 6) + 6] = 255
        out.append(encode_clip(frames, 8.0, preset="ultrafast"))
    return out


def upstream(root, rng) -> dict[str, np.ndarray]:
    """The folders expert_shards reads, as the video graph writes them. Each cluster has its own latent mean per
    channel (a 3-D conv with no positional input can learn it), pooled CLIP, T5 and DINOv2 centre, so that an expert and a router can learn something in a few steps; T5
    padding positions hold large values, so only a masked reduction sees the centre."""
    ids = np.array([f"{i:016x}" for i in range(N)])
    labels = rng.permutation(np.arange(N) % K).astype(np.int32)
    centre = lambda *shape: rng.standard_normal((K, *shape)).astype(np.float32)
    noise = lambda *shape: rng.standard_normal((N, *shape)).astype(np.float32)
    lengths = rng.integers(4, L + 1, N)
    mask = np.arange(L)[None, :] < lengths[:, None]
    arrays = {
        "latents": (centre(C, 1, 1, 1)[labels] + 0.3 * noise(C, T, S, S)).astype(np.float16),
        "pooled": (centre(P)[labels] + 0.1 * noise(P)).astype(np.float16),
        "tokens": noise(77, P).astype(np.float16),
        "t5_tokens": np.where(mask[..., None], centre(1, DT)[labels] + 0.1 * noise(L, DT), 50.0).astype(np.float16),
        "t5_mask": mask,
        "embeddings": (centre(DD)[labels] + 0.1 * noise(DD)).astype(np.float32),
    }
    stored = clips()
    kept = pd.DataFrame({
        "image_id": ids, "url": [f"http://example.com/{i}.mp4" for i in ids], "alt_text": [f"clip {i}" for i in ids],
        "aesthetic": rng.random(N) * 10, "punsafe": rng.random(N), "original_width": 640, "original_height": 360,
        "phash": "0f" * 8, "crop_shard": "crops/shard-000000.tar", "duration": rng.random(N) * 20 + 2,
        "source_fps": 29.97, "rotation": rng.choice([0, 90], N), "codec": "h264", "pix_fmt": "yuv420p",
        "window_start": rng.random(N), "window_end": rng.random(N) + 2.125, "cuts": 0, "motion": rng.random(N) * 5,
        "phash_middle": "1f" * 8, "phash_last": "2f" * 8})
    kept.loc[3, "motion"] = np.nan  # a missing fact is null in the json
    folders = {"filtered_images": {}, "captions": {}, "cluster_labels": {"labels": labels,
               "distances": rng.random(N).astype(np.float32), "centroids": np.zeros((K, DD), np.float32)},
               "latents": {"latents": arrays["latents"]},
               "clip_embeddings": {n: arrays[n] for n in ("pooled", "tokens", "t5_tokens", "t5_mask")},
               "dinov2_embeddings": {"embeddings": arrays["embeddings"]}, "quality_scores": {}}
    for name, named in folders.items():
        (root / name).mkdir(parents=True)
        for array_name, array in {**named, "image_ids": ids}.items():
            np.save(root / name / f"{array_name}.npy", array)
    kept.to_parquet(root / "filtered_images" / "kept.parquet")
    pd.DataFrame({"image_id": ids, "caption": [f"a caption of {i}" for i in ids]}).to_parquet(
        root / "captions" / "captions.parquet")
    pd.DataFrame({"image_id": ids}).to_parquet(root / "quality_scores" / "scores.parquet")
    (root / "filtered_images" / "crops").mkdir()
    with open(root / "filtered_images" / "crops" / "shard-000000.tar", "wb") as fh, TarShardWriter(fh) as writer:
        for i, image_id in enumerate(ids):
            writer.write(image_id, {"mp4": stored[i % DISTINCT_CLIPS]})
    return {**arrays, "labels": labels, "ids": ids, "kept": kept, "mp4": [stored[i % DISTINCT_CLIPS] for i in range(N)]}


def settings_for(root):
    return parse_settings({"media": "video", "data_dir": str(root / "data"), "captions": {"source": "alt_text"},
                           "shards": {"include_mp4": True, "heldout_fraction": 0.15}}, base_dir=root)


def folders_of(root) -> dict[str, AssetFolder]:
    names = ("filtered_images", "captions", "cluster_labels", "latents", "clip_embeddings", "quality_scores",
             "dinov2_embeddings")
    return {name: AssetFolder(UPath(str(root / name))) for name in names}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """(truth: the upstream arrays, data folder, manifest, held-out mask): expert_shards (5 samples a shard),
    heldout/ and router_pairs/ (chunks of 16 rows) written the way the assets write them."""
    root = tmp_path_factory.mktemp("video_training")
    truth = upstream(root, np.random.default_rng(0))
    settings, f = settings_for(root), folders_of(root)
    _aligned(f["filtered_images"], f["captions"], f["cluster_labels"], f["latents"], f["clip_embeddings"],
             f["dinov2_embeddings"])
    src = _source(settings, f["filtered_images"], f["captions"], f["cluster_labels"], f["latents"],
                  f["clip_embeddings"], f["quality_scores"], f["dinov2_embeddings"])
    _rows_line_up(src)
    held = heldout_mask(src.kept["image_id"], settings.shards.heldout_fraction, settings.heldout_max, settings.seed)
    assert settings.heldout_max == 2048 and 0 < held.sum() < N
    data = root / "data"
    stats = write_expert_shards(src, [np.flatnonzero((src.labels == c) & ~held) for c in range(K)],
                                data / "expert_shards", 5, 1 << 30, settings.seed, log=lambda _m: None)
    held_shards = write_shards(src, np.flatnonzero(held), data / "heldout" / "shards", 5, 1 << 30)
    write_router_arrays(data / "heldout", np.flatnonzero(held), src, src.video.dinov2)
    write_router_arrays(data / "router_pairs", np.flatnonzero(~held), src, src.video.dinov2, chunk_rows=16)
    manifest = {"media": "video", "video": video_facts(src), "k": K,  # as assets/training._manifest writes them
                "clusters": {c: manifest_entries(sh, "expert_shards") for c, sh in stats["clusters"].items()},
                "heldout": manifest_entries(held_shards, "heldout")}
    (data / "pipeline_manifest.json").write_text(json.dumps(manifest))
    return truth, data, manifest, held


def test_plain_webdataset_reads_every_member(video):
    """Every sample of every split, read by webdataset's own decoder: each member as written, the clip's facts
    in its json, its mp4 the stored clip; every clip exactly once, held-out ones only in heldout/."""
    truth, data, manifest, held = video
    row_of = {image_id: i for i, image_id in enumerate(truth["ids"])}
    seen = []
    for split, entry in listed_shards(manifest):
        for sample in wds.WebDataset(str(data / entry["path"]), shardshuffle=False).decode():
            row = row_of[sample["__key__"]]
            seen.append(sample["__key__"])
            assert {k for k in sample if not k.startswith("__")} == MEMBERS
            for member, source in {"latent.npy": "latents", "clip.npy": "pooled", "clip_tokens.npy": "tokens",
                                   "t5_tokens.npy": "t5_tokens", "t5_mask.npy": "t5_mask",
                                   "dinov2.npy": "embeddings"}.items():
                value = sample[member]
                assert (value.shape, str(value.dtype)) == EXPECT[member]
                np.testing.assert_array_equal(value, truth[source][row])
            record, kept = sample["json"], truth["kept"].iloc[row]
            assert record["media"] == "video" and set(record) >= CLIP_FACTS | {"image_id", "cluster", "phash"}
            assert record["cluster"] == truth["labels"][row] and (split == "heldout") == held[row]
            assert (record["fps"], record["num_frames"], record["codec"]) == (8.0, FRAMES, "h264")
            assert record["rotation"] == kept["rotation"] and record["duration"] == pytest.approx(kept["duration"])
            assert record["window_end"] == pytest.approx(kept["window_end"])
            assert record["motion"] is None if row == 3 else record["motion"] == pytest.approx(kept["motion"])
            assert sample["txt"] == f"a caption of {sample['__key__']}"
            assert sample["mp4"] == truth["mp4"][row]
    assert sorted(seen) == sorted(truth["ids"])
    assert decode_clip(truth["mp4"][0]).shape == (FRAMES, SIDE, SIDE, 3)


def test_integrity_check_passes_and_sees_the_media(video, tmp_path):
    """verify_training_outputs on clip shards (5-D latents, the mp4 left as bytes); a manifest that says image
    while the samples say video is a finding."""
    truth, data, manifest, held = video
    ok, facts = verify_training_outputs(str(data), truth["ids"], truth["ids"][held], EXPECT)
    assert ok, facts["problems"]
    assert facts["samples"] == N
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    (copy / "pipeline_manifest.json").write_text(json.dumps({**manifest, "media": "image"}))
    ok, facts = verify_training_outputs(str(copy), truth["ids"], truth["ids"][held], EXPECT)
    assert not ok and any("media video, the manifest image" in p for p in facts["problems"])


def test_manifest_and_missing_t5(video, tmp_path):
    """The manifest's clip facts; clip_embeddings without T5 arrays is refused with what to do."""
    _truth, _data, manifest, _held = video
    assert manifest["video"] == {"fps": 8.0, "num_frames": FRAMES, "latent_shape": [C, T, S, S],
                                 "t5_tokens_shape": [L, DT], "dinov2_shape": [DD]}
    upstream(tmp_path, np.random.default_rng(1))
    (tmp_path / "clip_embeddings" / "t5_tokens.npy").unlink()
    f = folders_of(tmp_path)
    with pytest.raises(ValueError, match="materialise clip_embeddings again with media: video"):
        _source(settings_for(tmp_path), *(f[n] for n in ("filtered_images", "captions", "cluster_labels", "latents",
                                                          "clip_embeddings", "quality_scores", "dinov2_embeddings")))


def test_training_check_expects_the_clip_members(tmp_path, monkeypatch):
    """The blocking check's promised members: a clip adds T5 states, mask and DINOv2 to an image's."""
    import paris_assets.checks.training as checks

    shapes = {"latents": (C, T, S, S), "clip_pooled": (P,), "clip_tokens": (77, P), "t5_tokens": (L, DT),
              "t5_mask": (L,), "dinov2": (DD,)}
    monkeypatch.setattr(checks, "expected_shapes", lambda _settings: shapes)
    assert checks.expected_members(settings_for(tmp_path)) == EXPECT
    image = parse_settings({"data_dir": str(tmp_path)}, base_dir=tmp_path)
    assert set(checks.expected_members(image)) == {"latent.npy", "clip.npy", "clip_tokens.npy"}


def test_router_chunks_are_bounded_by_bytes(video, tmp_path, monkeypatch):
    """Wide rows (clip latents) get fewer rows a chunk, so no chunk passes ROUTER_CHUNK_BYTES; narrow arrays
    keep chunk_rows."""
    from paris_assets.lib.outputs import shards

    truth, _data, _manifest, _held = video
    row = C * T * S * S * 2
    monkeypatch.setattr(shards, "ROUTER_CHUNK_BYTES", 7 * row)
    src = shards.ShardSource(kept=pd.DataFrame({"image_id": truth["ids"]}), captions=[""] * N, labels=truth["labels"],
                             distances=np.zeros(N, np.float32), latents=truth["latents"], pooled=truth["pooled"],
                             tokens=None)
    shards.write_router_arrays(tmp_path, np.arange(N), src, truth["embeddings"], block=5, chunk_rows=16)
    index = lambda name: json.loads((tmp_path / name / "index.json").read_text())
    assert index("latents")["chunk_rows"] == 7 and index("clip_text_embeddings")["chunk_rows"] == 16
    np.testing.assert_array_equal(assert_chunked_and_plain(tmp_path, "latents"), truth["latents"])


@pytest.mark.parametrize("folder", ["router_pairs", "heldout"])
def test_router_arrays_of_clips(video, folder):
    """latents (N, C, T', h, w), clip_text_embeddings (N, P) pooled, dinov2_embeddings (N, D): chunked folders
    numpy alone reads, row i the clip of image_ids.npy's row i; cluster_labels.npy beside them."""
    truth, data, _manifest, held = video
    rows = np.flatnonzero(held if folder == "heldout" else ~held)
    assert np.load(data / folder / "image_ids.npy").tolist() == truth["ids"][rows].tolist()
    for name, source in {"latents": "latents", "clip_text_embeddings": "pooled",
                         "dinov2_embeddings": "embeddings"}.items():
        plain = assert_chunked_and_plain(data / folder, name)
        np.testing.assert_array_equal(plain, truth[source][rows])
    assert assert_chunked_and_plain(data / folder, "latents").shape == (len(rows), C, T, S, S)
    np.testing.assert_array_equal(np.load(data / folder / "cluster_labels.npy"), truth["labels"][rows])


@pytest.mark.parametrize("shape", [(3,), (4, 8, 8), (C, T, S, S)])
@pytest.mark.parametrize("interpolant", ["flow", "ddpm"])
def test_noise_latent(shape, interpolant):
    """Flow: x_t = (1 - t) x0 + t eps, target eps - x0, t float32 in [0, 1); DDPM: x_t = sqrt(a) x0 +
    sqrt(1 - a) eps, target eps, t an int64 step. eps is the first draw of the generator, for any rank."""
    from paris_assets.loaders import linear_alphas_cumprod

    x0 = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    x_t, t, target = noise_latent(x0, np.random.default_rng(7), interpolant)
    eps = np.random.default_rng(7).standard_normal(shape, dtype=np.float32)
    assert x_t.shape == target.shape == shape and x_t.dtype == target.dtype == np.float32
    if interpolant == "flow":
        assert t.dtype == torch.float32 and 0 <= float(t) < 1
        np.testing.assert_allclose(target, eps - x0, rtol=1e-6)
        np.testing.assert_allclose(x_t, (1 - float(t)) * x0 + float(t) * eps, rtol=1e-5, atol=1e-6)
    else:
        a = float(linear_alphas_cumprod()[int(t)])
        assert t.dtype == torch.int64 and 0 <= int(t) < 1000
        np.testing.assert_allclose(x_t, np.sqrt(a) * x0 + np.sqrt(1 - a) * target, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(target, eps)


def test_expert_loader_reads_clips_under_flow(video):
    """Each expert's samples: the latent, T5 states and mask as written, x_t and the velocity target consistent
    with them (x0 = x_t - t v), t uniform in [0, 1), the same draw again for the same seed and epoch and a new
    one for the next epoch."""
    truth, data, manifest, _held = video
    row_of = {image_id: i for i, image_id in enumerate(truth["ids"])}
    ts = []
    for k in range(K):
        dataset = expert_dataset(data, k, conditioning="pooled", shuffle=0, with_key=True, interpolant="flow")
        items = list(dataset)
        assert len(items) == sum(s["samples"] for s in manifest["clusters"][str(k)])
        again = list(expert_dataset(data, k, conditioning="pooled", shuffle=0, with_key=True, interpolant="flow"))
        assert all(torch.equal(a["x_t"], b["x_t"]) and a["t"] == b["t"] for a, b in zip(items, again))
        dataset.set_epoch(1)
        assert all(a["t"] != b["t"] for a, b in zip(items, dataset))
        for item in items:
            row = row_of[item["key"]]
            np.testing.assert_array_equal(item["latent"].numpy(), truth["latents"][row].astype(np.float32))
            np.testing.assert_array_equal(item["t5_tokens"].numpy(), truth["t5_tokens"][row].astype(np.float32))
            assert item["t5_mask"].dtype == torch.bool and torch.equal(item["t5_mask"],
                                                                       torch.from_numpy(truth["t5_mask"][row]))
            assert item["cond"].shape == (P,) and item["x_t"].shape == item["target"].shape == (C, T, S, S)
            t = float(item["t"])
            np.testing.assert_allclose(item["x_t"] - t * item["target"], item["latent"], atol=1e-4)
            ts.append(t)
    assert min(ts) < 0.2 and max(ts) > 0.8 and 0.3 < np.mean(ts) < 0.7  # uniform, not logit-normal
    loader = torch.utils.data.DataLoader(expert_dataset(data, 0, conditioning="pooled", interpolant="flow"),
                                         batch_size=4, num_workers=2)
    batch = next(iter(loader))
    assert batch["x_t"].shape == (4, C, T, S, S) and batch["t5_mask"].shape == (4, L) and len(batch["caption"]) == 4


def test_expert_loader_without_interpolant_gives_clean_clips(video):
    """Clips come as a dict even with no interpolant: the clean latent, CLIP tokens, caption and the T5 pair."""
    truth, data, _manifest, _held = video
    item = next(iter(expert_dataset(data, 1, shuffle=0, with_key=True)))
    assert set(item) == {"latent", "cond", "caption", "t5_tokens", "t5_mask", "key"} and item["cond"].shape == (77, P)
    row = truth["ids"].tolist().index(item["key"])
    np.testing.assert_array_equal(item["cond"].numpy(), truth["tokens"][row].astype(np.float32))


def test_image_expert_loader_ddpm_option(tmp_path):
    """Images keep their tuple unless an interpolant is asked for; then x_t = sqrt(a) x0 + sqrt(1 - a) eps."""
    from paris_assets.loaders import linear_alphas_cumprod

    from .test_loaders import write_folder

    write_folder(tmp_path)
    assert isinstance(next(iter(expert_dataset(tmp_path, 0, shuffle=0))), tuple)
    alphas = linear_alphas_cumprod().numpy()
    for item in expert_dataset(tmp_path, 0, shuffle=0, interpolant="ddpm"):
        a = float(alphas[int(item["t"])])
        assert item["t"].dtype == torch.int64 and "t5_tokens" not in item
        np.testing.assert_allclose(item["x_t"], np.sqrt(a) * item["latent"] + np.sqrt(1 - a) * item["target"],
                                   atol=1e-4)
    with pytest.raises(ValueError, match="interpolant"):
        expert_dataset(tmp_path, 0, interpolant="edm")


def test_router_loader_reads_clips(video):
    truth, data, _manifest, held = video
    items = list(router_dataset(data, seed=0, with_dinov2=True, t_sampling="uniform"))
    assert len(items) == int((~held).sum())
    rows = np.flatnonzero(~held)
    for item in items:
        assert item["x_t"].shape == (C, T, S, S) and item["dinov2"].shape == (DD,) and item["clip"].shape == (P,)
        row = rows[int(np.flatnonzero((truth["embeddings"][rows] == item["dinov2"].numpy()).all(axis=1))[0])]
        assert item["cluster"] == truth["labels"][row]


class TinyVideoExpert(torch.nn.Module):
    """A 3-D conv velocity predictor: x_t (C, T', h, w), t and a text vector broadcast over the latent."""

    def __init__(self, text_width: int, hidden: int = 32):
        super().__init__()
        self.text = torch.nn.Linear(text_width, 8)
        self.net = torch.nn.Sequential(torch.nn.Conv3d(C + 1 + 8, hidden, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv3d(hidden, hidden, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv3d(hidden, C, 3, padding=1))

    def forward(self, x_t, t, text):
        grid = x_t.shape[2:]
        t_map = t.view(-1, 1, 1, 1, 1).expand(-1, 1, *grid)
        text_map = self.text(text).view(-1, 8, 1, 1, 1).expand(-1, 8, *grid)
        return self.net(torch.cat([x_t, t_map, text_map], 1))


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of the T5 states over the real tokens (padding left out)."""
    weights = mask.unsqueeze(-1).float()
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)


@pytest.fixture
def one_thread():
    """Tiny convolutions on one thread: more only contend on a shared machine (40 s instead of 4 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_video_expert_and_router_learn(video, one_thread):
    """A tiny 3-D conv expert on the biggest cluster's shards under flow matching (velocity MSE), conditioned on
    the masked mean of the T5 states, and a tiny router (noisy clip latent, t, pooled CLIP, DINOv2 -> K logits,
    cross-entropy) on router_pairs: both losses fall clearly, and the same seeds give the same losses."""
    _truth, data, manifest, _held = video
    biggest = max(range(K), key=lambda k: sum(s["samples"] for s in manifest["clusters"][str(k)]))

    def train_expert() -> list[float]:
        torch.manual_seed(0)
        dataset = expert_dataset(data, biggest, conditioning="pooled", shuffle=0, seed=0, interpolant="flow")
        model = TinyVideoExpert(DT)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        losses = []
        for epoch in range(20):
            dataset.set_epoch(epoch)
            for batch in torch.utils.data.DataLoader(dataset, batch_size=6):
                pred = model(batch["x_t"], batch["t"], masked_mean(batch["t5_tokens"], batch["t5_mask"]))
                loss = torch.nn.functional.mse_loss(pred, batch["target"])
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
        return losses

    def train_router() -> list[float]:
        torch.manual_seed(0)
        dataset = router_dataset(data, seed=0, with_dinov2=True, t_sampling="uniform")
        width = C * T * S * S + 1 + P + DD
        model = torch.nn.Sequential(torch.nn.Linear(width, 32), torch.nn.SiLU(), torch.nn.Linear(32, K))
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        losses = []
        for epoch in range(8):
            dataset.set_epoch(epoch)
            for batch in torch.utils.data.DataLoader(dataset, batch_size=8):
                features = torch.cat([batch["x_t"].flatten(1), batch["t"].unsqueeze(1), batch["clip"],
                                      batch["dinov2"]], 1)
                loss = torch.nn.functional.cross_entropy(model(features), batch["cluster"])
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
        return losses

    expert = train_expert()
    # the loss starts near 1 + E[x0^2] (about 2) and settles near 1: the velocity is not identifiable at small t
    assert len(expert) >= 60 and np.mean(expert[-8:]) < 0.75 * np.mean(expert[:4]), expert
    router = train_router()
    assert len(router) >= 40 and np.mean(router[-6:]) < 0.5 * np.mean(router[:6]), router
    assert train_expert() == expert and train_router() == router  # seeded: the same runs twice
