"""The Stable Diffusion VAE: 256x256 crops to the 4x32x32 latents the experts are trained on."""

from __future__ import annotations

import numpy as np
import torch

from .common import ModelRef, load_pretrained, pick_device, pick_dtype

SD_VAE_FT_MSE = ModelRef("stabilityai/sd-vae-ft-mse")
SCALING_FACTOR = 0.18215  # Stable Diffusion's latent scale: latents ~ unit variance


class LatentEncoder:
    """AutoencoderKL encode (and decode, for the reconstruction check)."""

    def __init__(self, ref: ModelRef = SD_VAE_FT_MSE, device: str = "auto", dtype: str = "auto",
                 sample: bool = False, seed: int = 0):
        self.ref, self.sample, self.seed = ref, sample, seed
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.model = None

    def load(self) -> "LatentEncoder":
        from diffusers import AutoencoderKL

        self.model = load_pretrained(AutoencoderKL, self.ref, "latent_encoder", torch_dtype=self.dtype)
        self.model = self.model.to(self.device).eval()
        return self

    @staticmethod
    def preprocess(images: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1]."""
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor, offset: int = 0) -> np.ndarray:
        """Images from `preprocess` -> (N, 4, H/8, W/8) float16 latents, already x0.18215.

        The distribution's mean by default; with `sample`, a draw seeded by (seed, row offset), so a chunk
        computed again gives the same latents."""
        if isinstance(pixels, np.ndarray):
            pixels = self.preprocess(pixels)
        dist = self.model.encode(pixels.to(self.device, self.dtype)).latent_dist
        if self.sample:
            gen = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + offset)
            latents = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen, device=self.device,
                                                          dtype=dist.mean.dtype)
        else:
            latents = dist.mean
        return (latents.float() * SCALING_FACTOR).cpu().numpy().astype(np.float16)

    @torch.no_grad()
    def decode(self, latents: np.ndarray) -> np.ndarray:
        """(N, 4, h, w) scaled latents -> uint8 (N, 8h, 8w, 3) images."""
        z = torch.from_numpy(np.asarray(latents, dtype=np.float32) / SCALING_FACTOR).to(self.device, self.dtype)
        images = self.model.decode(z).sample.float().clamp(-1, 1)
        return ((images + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
