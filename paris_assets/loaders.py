"""Loaders for training code: the expert shards and the router pairs as PyTorch datasets.

    from paris_assets.loaders import expert_dataset, router_dataset
    experts = expert_dataset("data", k=3)      # (latent, text conditioning, caption)
    experts = expert_dataset("data", k=3, interpolant="flow")  # {"x_t", "t", "target", "latent", "cond", ...}
    router = router_dataset("data")            # {"x_t", "t", "cluster", "clip"} under flow matching

Both read clips (media: video, Paris 2.0) as they read images: latents of any rank ((C, T', h, w) for a clip),
and a clip's expert sample also holds "t5_tokens" (L, D) and "t5_mask" (L,). Flow matching (`noise_latent`): t in
[0, 1], 0 the clean latent and 1 pure noise, x_t = (1 - t) x0 + t eps, the target the velocity eps - x0, and
the model is handed t itself (a float; scale it inside the model if its embedding wants 0..1000).

Reproducible: every random choice (shard order, sample shuffle, resampling, noise, t) derives from `seed`,
the epoch (`set_epoch(n)`), and where it must, the rank and the DataLoader worker; seed 0 is a seed like any
other. No DDP hang: in every epoch each torch.distributed rank yields exactly `len(dataset)` samples, so every
rank runs the same number of batches (given the same batch size and num_workers on each). Shard members are
decoded by lib/outputs/samples (no pickle, no torch.load).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .lib.outputs.shards import decode_shard_sample
from .lib.outputs.tars import iter_members
from .lib.store.arrays import open_named
from .lib.store.storage import require_settled, root_upath

NUM_TIMESTEPS = 1000
INTERPOLANTS = ("flow", "ddpm")
ROUTER_BLOCK_BYTES = 8 * 2**20  # router rows read together: 1,024 image latents (4x32x32 f16), 51 clip latents


def manifest(data_dir: str | Path) -> dict:
    """pipeline_manifest.json, once the shard folders it lists are whole (not mid-commit on an object store)."""
    path = root_upath(str(data_dir)) / "pipeline_manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: materialise expert_shards first")
    require_settled(str(data_dir), "expert_shards", "heldout")
    return json.loads(path.read_text())


def expert_shards(data_dir: str | Path, k: int) -> list[tuple[str, int]]:
    """(path, samples) of every shard of expert k, in the manifest's order."""
    clusters = manifest(data_dir)["clusters"]
    if str(k) not in clusters:
        raise KeyError(f"no expert {k}: the shards hold clusters {', '.join(sorted(clusters, key=int))}")
    root = root_upath(str(data_dir))
    return [(str(root / shard["path"]), int(shard["samples"])) for shard in clusters[str(k)]]


def expert_shard_urls(data_dir: str | Path, k: int) -> list[str]:
    return [path for path, _samples in expert_shards(data_dir, k)]


def seed_of(*parts: int) -> int:
    """One 32-bit seed from non-negative integers (numpy's SeedSequence: well mixed, no collisions by addition)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def ranks(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world size): as given, else torch.distributed's when it is initialised, else (0, 1)."""
    if rank is None or world_size is None:
        dist = torch.distributed
        on = dist.is_available() and dist.is_initialized()
        rank = (dist.get_rank() if on else 0) if rank is None else rank
        world_size = (dist.get_world_size() if on else 1) if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    return rank, world_size


def worker_slice(total: int, rank: int, world: int, what: str) -> tuple[int, int]:
    """This DataLoader worker's [start, stop) of an epoch's `total` positions: each rank takes an equal block of
    total // world (the last total % world positions of the epoch's order are left out), split among the rank's
    workers."""
    per_rank = total // world
    if per_rank == 0:
        raise ValueError(f"{what} has {total} samples for {world} ranks: every rank needs at least one. Train it on "
                         "fewer ranks, or give it more data (e.g. a smaller clustering.k)")
    info = torch.utils.data.get_worker_info()
    worker, workers = (info.id, info.num_workers) if info else (0, 1)
    base = rank * per_rank
    return base + per_rank * worker // workers, base + per_rank * (worker + 1) // workers


def _check_seed(seed: int, epoch: int) -> None:
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed ({seed}) and epoch ({epoch}) must be non-negative integers")


class ExpertDataset(torch.utils.data.IterableDataset):
    """Expert k's samples as (latent (4, 32, 32) float32, conditioning float32, caption[, image_id]).

    With an `interpolant` ("flow" or "ddpm", see noise_latent), or on clips (the manifest's media: video), a
    dict instead: "latent" (the clean x0, any rank: (C, T', h, w) for a clip), "cond", "caption", a clip's
    "t5_tokens" (L, D) float32 and "t5_mask" (L,) bool, "key" with `with_key`, and under an interpolant
    "x_t", "t" and "target". The noise and t of a sample are drawn from (seed, epoch, its key): the same in an
    epoch whatever the ranks, workers or shuffle. `t_sampling` is "uniform" (t ~ U(0, 1)) or "logit_normal".

    Each epoch the shards are put in an order drawn from (seed, epoch), the same on every rank; the samples in
    that order are cut into equal blocks, one per rank, each split among the rank's workers (a worker may start
    or stop inside a shard: skipped samples are not decoded). `resampled=True` instead draws each worker's
    shards with replacement (weighted by their sample counts) from (seed, epoch, rank, worker), yielding the
    same number of samples. `shuffle` is a per-worker buffer seeded from (seed, epoch, rank, worker)."""

    def __init__(self, data_dir: str | Path, k: int, conditioning: str = "tokens", shuffle: int = 1000,
                 resampled: bool = False, seed: int = 0, epoch: int = 0, with_key: bool = False,
                 rank: int | None = None, world_size: int | None = None, interpolant: str | None = None,
                 t_sampling: str = "uniform", steps: int = NUM_TIMESTEPS):
        if conditioning not in ("tokens", "pooled"):
            raise ValueError(f"conditioning must be 'tokens' or 'pooled', not {conditioning!r}")
        _check_interpolant(interpolant, t_sampling, optional=True)
        _check_seed(seed, epoch)
        self.k, self.shuffle, self.resampled, self.seed, self.epoch = k, shuffle, resampled, seed, epoch
        self.cond = {"tokens": "clip_tokens.npy", "pooled": "clip.npy"}[conditioning]
        self.with_key, self.rank, self.world_size = with_key, rank, world_size
        self.interpolant, self.t_sampling = interpolant, t_sampling
        self.alphas_cumprod = linear_alphas_cumprod(steps).numpy()
        self.video = "video" in manifest(data_dir)  # clips: the manifest holds their facts (fps, frames, shapes)
        self.shards = expert_shards(data_dir, k)
        self.counts = np.array([n for _path, n in self.shards], dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Call before iterating each epoch (with persistent_workers=False, the DataLoader's default, so that
        the workers see it)."""
        _check_seed(self.seed, epoch)
        self.epoch = epoch

    def __len__(self) -> int:
        """Samples this rank yields per epoch: the same on every rank."""
        return int(self.counts.sum()) // ranks(self.rank, self.world_size)[1]

    def segments(self, start: int, stop: int, rank: int, worker: int) -> list[tuple[int, int, int]]:
        """(shard index, samples to skip, samples to take) that make up positions [start, stop) of the epoch."""
        if self.resampled:
            rng = np.random.default_rng([self.seed, self.epoch, rank, worker])
            out, need = [], stop - start
            while need > 0:
                shard = int(rng.choice(len(self.counts), p=self.counts / self.counts.sum()))
                out.append((shard, 0, min(int(self.counts[shard]), need)))
                need -= out[-1][2]
            return out
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.counts))
        ends = np.cumsum(self.counts[order])
        out = []
        for shard, end, size in zip(order, ends, self.counts[order]):
            first = end - size
            if end > start and first < stop:
                skip = max(start - first, 0)
                out.append((int(shard), int(skip), int(min(stop, end) - first - skip)))
        return out

    def read(self, shard: int, skip: int, take: int) -> Iterator[dict]:
        """`take` samples of one shard after the first `skip`, decoded safely (only what is yielded)."""
        path, listed = self.shards[shard]
        wanted = {"latent.npy", self.cond, "txt"} | ({"t5_tokens.npy", "t5_mask.npy"} if self.video else set())
        seen, sample = 0, None
        with root_upath(path).open("rb") as fh:
            for name, _size, stream in iter_members(fh):
                key, _, member = name.rpartition("/")[2].partition(".")
                if sample is None or key != sample["__key__"]:
                    if sample is not None and seen > skip:
                        yield decode_shard_sample(sample, wanted)
                    if seen == skip + take:
                        return
                    seen += 1
                    sample = {"__key__": key, "__url__": path}
                if seen > skip:
                    sample[member] = stream.read() if member in wanted else b""
            if sample is not None and skip < seen <= skip + take:
                yield decode_shard_sample(sample, wanted)
        if seen < skip + take:
            raise ValueError(f"{path}: {seen} samples, the manifest says {listed}: the shards changed since "
                             "pipeline_manifest.json was written; re-materialise expert_shards")

    def __iter__(self):
        rank, world = ranks(self.rank, self.world_size)
        start, stop = worker_slice(int(self.counts.sum()), rank, world, f"expert {self.k}")
        info = torch.utils.data.get_worker_info()
        worker = info.id if info else 0
        stream = (s for seg in self.segments(start, stop, rank, worker) for s in self.read(*seg))
        if self.shuffle > 1:
            stream = buffer_shuffle(stream, self.shuffle, random.Random(seed_of(self.seed, self.epoch, rank, worker)))
        for sample in stream:
            yield self.item(sample)

    def item(self, sample: dict) -> tuple | dict:
        """What a decoded sample yields: the tuple of an image sample with no interpolant, else the dict."""
        latent = np.array(sample["latent.npy"], dtype=np.float32)
        cond = torch.from_numpy(np.array(sample[self.cond], dtype=np.float32))
        if self.interpolant is None and not self.video:
            item = (torch.from_numpy(latent), cond, sample["txt"])
            return item + (sample["__key__"],) if self.with_key else item
        out = {"latent": torch.from_numpy(latent), "cond": cond, "caption": sample["txt"]}
        if self.video:
            out["t5_tokens"] = torch.from_numpy(np.array(sample["t5_tokens.npy"], dtype=np.float32))
            out["t5_mask"] = torch.from_numpy(np.array(sample["t5_mask.npy"], dtype=bool))
        if self.interpolant is not None:
            rng = np.random.default_rng([self.seed, self.epoch, key_word(sample["__key__"])])
            x_t, out["t"], target = noise_latent(latent, rng, self.interpolant, self.t_sampling,
                                                 alphas_cumprod=self.alphas_cumprod)
            out["x_t"], out["target"] = torch.from_numpy(x_t), torch.from_numpy(target)
        if self.with_key:
            out["key"] = sample["__key__"]
        return out


def key_word(key: str) -> int:
    """A sample key as a 64-bit integer for seeding (the first 8 bytes of its sha256)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def noise_latent(x0: np.ndarray, rng: np.random.Generator, interpolant: str = "flow", t_sampling: str = "uniform",
                 logit_mean: float = 0.0, logit_std: float = 1.0,
                 alphas_cumprod: np.ndarray | None = None) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """One training draw for a clean latent x0 of any shape: (x_t float32, t, target float32); eps ~ N(0, I) is
    drawn from `rng` first, then t.

    "flow" (rectified flow, what Paris 2.0 trains with): t a float32 in [0, 1], 0 the clean latent and 1 pure
    noise, uniform (`t_sampling="uniform"`) or logit-normal (sigmoid of N(logit_mean, logit_std), SD3's);
    x_t = (1 - t) x0 + t eps, and the target is the velocity dx_t/dt = eps - x0 (so x0 = x_t - t v). The model
    is handed t as it is. "ddpm": t an int64 step uniform in [0, len(alphas_cumprod)) (default: DDPM's linear
    schedule, NUM_TIMESTEPS steps), x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, and the target is eps."""
    eps = rng.standard_normal(x0.shape, dtype=np.float32)
    if interpolant == "flow":
        t = rng.random() if t_sampling == "uniform" else \
            1 / (1 + math.exp(-(logit_mean + logit_std * rng.standard_normal())))
        x_t = (1 - t) * x0 + t * eps
        return np.asarray(x_t, np.float32), torch.tensor(t, dtype=torch.float32), np.asarray(eps - x0, np.float32)
    alphas = linear_alphas_cumprod().numpy() if alphas_cumprod is None else alphas_cumprod
    step = int(rng.integers(len(alphas)))
    a = float(alphas[step])
    x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
    return np.asarray(x_t, np.float32), torch.tensor(step, dtype=torch.int64), eps


def _check_interpolant(interpolant: str | None, t_sampling: str, optional: bool = False) -> None:
    if interpolant not in INTERPOLANTS and not (optional and interpolant is None):
        raise ValueError(f"interpolant must be {' or '.join(map(repr, INTERPOLANTS))}"
                         f"{' or None' if optional else ''}, not {interpolant!r}")
    if t_sampling not in ("logit_normal", "uniform"):
        raise ValueError(f"t_sampling must be 'logit_normal' or 'uniform', not {t_sampling!r}")


def buffer_shuffle(stream: Iterator, size: int, rng: random.Random) -> Iterator:
    """Yield a stream in a seeded shuffled order, holding at most `size` items."""
    buf = []
    for item in stream:
        buf.append(item)
        if len(buf) >= size:
            i = rng.randrange(len(buf))
            buf[i], buf[-1] = buf[-1], buf[i]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


def expert_dataset(data_dir: str | Path, k: int, conditioning: str = "tokens", shuffle: int = 1000,
                   resampled: bool = False, seed: int = 0, epoch: int = 0, with_key: bool = False,
                   rank: int | None = None, world_size: int | None = None, **options) -> ExpertDataset:
    """Expert k's samples; `conditioning`: "tokens" -> (77, 768) CLIP per-token states (what Paris experts
    condition on), or "pooled" -> (768,); `options`: interpolant, t_sampling, steps. See ExpertDataset."""
    return ExpertDataset(data_dir, k, conditioning, shuffle, resampled, seed, epoch, with_key, rank, world_size,
                         **options)


def linear_alphas_cumprod(steps: int = NUM_TIMESTEPS, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear schedule: alpha_bar_t = prod(1 - beta_s), s <= t."""
    return torch.cumprod(1 - torch.linspace(beta_start, beta_end, steps, dtype=torch.float64), dim=0).float()


class RouterDataset(torch.utils.data.IterableDataset):
    """The router's training samples from router_pairs, one dict per image: "x_t" (4, 32, 32) float32 noisy
    latent ((C, T', h, w) for a clip), "t", "cluster" (int), "clip" the pooled CLIP text embedding (P,) float32,
    and with `with_dinov2` "dinov2" (D,) float32 (a clip's first frame): what the Paris 2.0 router reads beside
    the noisy latent.

    `interpolant="flow"` (the default, Paris 2.0 / DDM): x_t = (1 - t) x_0 + t eps, t in (0, 1) a float32
    (0 = clean), drawn logit-normal (sigmoid of N(logit_mean, logit_std), SD3's choice) or uniform
    (`t_sampling`). `interpolant="ddpm"`: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t an int64 uniform
    in [0, steps) under DDPM's linear schedule (beta 1e-4 to 0.02), DDM's Algorithm 1. eps ~ N(0, I) and t are
    drawn from (seed, epoch, row), so an image gets the same noise in an epoch whatever the number of ranks or
    workers. Rows are shuffled per epoch from (seed, epoch) and cut into equal blocks per rank."""

    def __init__(self, data_dir: str | Path, seed: int = 0, epoch: int = 0, interpolant: str = "flow",
                 t_sampling: str = "logit_normal", logit_mean: float = 0.0, logit_std: float = 1.0,
                 steps: int = NUM_TIMESTEPS, with_dinov2: bool = False, rank: int | None = None,
                 world_size: int | None = None):
        _check_interpolant(interpolant, t_sampling)
        _check_seed(seed, epoch)
        folder = str(root_upath(str(data_dir)) / "router_pairs")
        require_settled(str(data_dir), "router_pairs")
        # chunked folders or .npy files, whichever router_pairs holds (lib/store/arrays.open_named): only the rows asked
        # for are read, except the labels (44 MB at 11M), read whole: the shuffled rows of a block are ~10k rows
        # apart, so ranged reads of 4-byte rows would fetch the gaps between them too
        try:
            self.latents, self.clip = open_named(folder, "latents"), open_named(folder, "clip_text_embeddings")
            self.labels = np.asarray(open_named(folder, "cluster_labels"))
            self.dinov2 = open_named(folder, "dinov2_embeddings") if with_dinov2 else None
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{folder} lacks a router array ({exc}): materialise router_pairs first") from None
        self.seed, self.epoch, self.interpolant, self.t_sampling = seed, epoch, interpolant, t_sampling
        self.logit_mean, self.logit_std, self.rank, self.world_size = logit_mean, logit_std, rank, world_size
        self.alphas_cumprod = linear_alphas_cumprod(steps).numpy()
        row_bytes = int(np.prod(self.latents.shape[1:], dtype=np.int64)) * np.dtype(self.latents.dtype).itemsize
        self.block_rows = max(1, min(1024, ROUTER_BLOCK_BYTES // max(1, row_bytes)))  # rows read together

    def set_epoch(self, epoch: int) -> None:
        """Call before iterating each epoch (with persistent_workers=False, the DataLoader's default)."""
        _check_seed(self.seed, epoch)
        self.epoch = epoch

    def __len__(self) -> int:
        """Samples this rank yields per epoch: the same on every rank."""
        return len(self.labels) // ranks(self.rank, self.world_size)[1]

    def noisy(self, row: int, rows: dict[str, np.ndarray] | None = None) -> dict:
        """The item of one row; `rows` holds its arrays' rows when already read (a block read by __iter__)."""
        if rows is None:
            rows = {"latents": self.latents[row], "labels": self.labels[row], "clip": self.clip[row]}
            if self.dinov2 is not None:
                rows["dinov2"] = self.dinov2[row]
        rng = np.random.default_rng([self.seed, self.epoch, row])
        x0 = np.asarray(rows["latents"], dtype=np.float32)
        x_t, t, _target = noise_latent(x0, rng, self.interpolant, self.t_sampling, self.logit_mean, self.logit_std,
                                       self.alphas_cumprod)
        item = {"x_t": torch.from_numpy(x_t), "t": t, "cluster": int(rows["labels"]),
                "clip": torch.from_numpy(np.array(rows["clip"], dtype=np.float32))}
        if self.dinov2 is not None:
            item["dinov2"] = torch.from_numpy(np.array(rows["dinov2"], dtype=np.float32))
        return item

    def __iter__(self):
        rank, world = ranks(self.rank, self.world_size)
        start, stop = worker_slice(len(self.labels), rank, world, "router_pairs")
        rows = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels))[start:stop]
        arrays = {"latents": self.latents, "labels": self.labels, "clip": self.clip, "dinov2": self.dinov2}
        for first in range(0, len(rows), self.block_rows):  # one read per array per block, not one per row
            block = rows[first:first + self.block_rows]
            read = {name: a[block] for name, a in arrays.items() if a is not None}
            for j, row in enumerate(block):
                yield self.noisy(int(row), {name: values[j] for name, values in read.items()})


def router_dataset(data_dir: str | Path, seed: int = 0, epoch: int = 0, **options) -> RouterDataset:
    """RouterDataset(data_dir, seed, epoch, **options): interpolant, t_sampling, logit_mean, logit_std, steps,
    with_dinov2, rank, world_size."""
    return RouterDataset(data_dir, seed, epoch, **options)
