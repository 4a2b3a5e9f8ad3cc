"""Loaders for training code: the expert shards and the router pairs as PyTorch datasets.

    from paris_assets.loaders import expert_dataset, router_dataset
    experts = expert_dataset("data", k=3)            # (latent, text conditioning, caption)
    router = router_dataset("data")                  # (noisy latent x_t, t, cluster label)

Both split their work across DataLoader workers and torch.distributed ranks, so every process of a
multi-node job sees a different part of the data.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

NUM_TIMESTEPS = 1000


def manifest(data_dir: str | Path) -> dict:
    path = Path(data_dir) / "pipeline_manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: materialise expert_shards first")
    return json.loads(path.read_text())


def expert_shard_urls(data_dir: str | Path, k: int) -> list[str]:
    clusters = manifest(data_dir)["clusters"]
    if str(k) not in clusters:
        raise KeyError(f"no expert {k}: the shards hold clusters {', '.join(sorted(clusters, key=int))}")
    return [str(Path(data_dir) / shard["path"]) for shard in clusters[str(k)]]


def expert_dataset(data_dir: str | Path, k: int, conditioning: str = "tokens", shuffle: int = 1000,
                   resampled: bool = False, seed: int = 0) -> wds.WebDataset:
    """Expert k's samples as (latent (4, 32, 32) float32, conditioning, caption).

    `conditioning`: "tokens" -> (77, 768) CLIP per-token states (what Paris experts condition on), or "pooled"
    -> (768,). Shards are split across nodes and workers; `resampled=True` draws shards with replacement for an
    endless, seeded stream (restarting from a checkpoint then needs no position), `shuffle` is the sample
    buffer."""
    key = {"tokens": "clip_tokens.npy", "pooled": "clip.npy"}[conditioning]
    urls = expert_shard_urls(data_dir, k)
    dataset = wds.WebDataset(urls, shardshuffle=len(urls) if shuffle and not resampled else False,
                             resampled=resampled, nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker,
                             seed=seed, empty_check=False)
    if shuffle:
        dataset = dataset.shuffle(shuffle)
    return dataset.decode().to_tuple("latent.npy", key, "txt").map_tuple(
        lambda z: torch.from_numpy(np.asarray(z, dtype=np.float32)),
        lambda c: torch.from_numpy(np.asarray(c, dtype=np.float32)), str)


def linear_alphas_cumprod(steps: int = NUM_TIMESTEPS, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear schedule: alpha_bar_t = prod(1 - beta_s), s <= t."""
    return torch.cumprod(1 - torch.linspace(beta_start, beta_end, steps, dtype=torch.float64), dim=0).float()


class RouterDataset(torch.utils.data.IterableDataset):
    """(x_t, t, cluster) from router_pairs: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, with t uniform
    in [0, 1000) and eps ~ N(0, I) drawn on the fly (DDM's router training, Algorithm 1), under DDPM's linear
    schedule (beta 1e-4 to 0.02). Rows are shuffled per epoch with the seed and split across ranks and workers."""

    def __init__(self, data_dir: str | Path, seed: int = 0, epoch: int = 0, steps: int = NUM_TIMESTEPS):
        folder = Path(data_dir) / "router_pairs"
        self.latents = np.load(folder / "latents.npy", mmap_mode="r")
        self.labels = np.load(folder / "cluster_labels.npy", mmap_mode="r")
        self.seed, self.epoch = seed, epoch
        self.alphas_cumprod = linear_alphas_cumprod(steps)

    def __len__(self) -> int:
        return len(self.labels)

    def _my_rows(self) -> np.ndarray:
        rows = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels))
        rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) \
            if torch.distributed.is_available() and torch.distributed.is_initialized() else (0, 1)
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        return rows[rank * workers + worker::world * workers]

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
        gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, rank, info.id if info else 0)) % 2**63)
        for row in self._my_rows():
            x0 = torch.from_numpy(np.asarray(self.latents[row], dtype=np.float32))
            t = int(torch.randint(0, len(self.alphas_cumprod), (), generator=gen))
            a = self.alphas_cumprod[t]
            noise = torch.randn(x0.shape, generator=gen)
            yield math.sqrt(a) * x0 + math.sqrt(1 - a) * noise, t, int(self.labels[row])


def router_dataset(data_dir: str | Path, seed: int = 0, epoch: int = 0) -> RouterDataset:
    return RouterDataset(data_dir, seed, epoch)
