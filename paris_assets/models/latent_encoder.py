"""The Stable Diffusion VAE: 256x256 crops to the 4x32x32 latents the experts are trained on."""

from __future__ import annotations

import numpy as np
import torch

from .common import ModelRef, load_weights, pick_device, pick_dtype, resolve_revision

SD_VAE_FT_MSE = ModelRef("stabilityai/sd-vae-ft-mse", "31f26fdeee1355a5c34592e401dd41e45d25a493")


class LatentEncoder:
    """AutoencoderKL encode (and decode, for the reconstruction check), with diffusers' own `VaeImageProcessor`
    around it and the latent scale read from the VAE's config (0.18215 for sd-vae-ft-mse)."""

    def __init__(self, ref: ModelRef = SD_VAE_FT_MSE, device: str = "auto", dtype: str = "auto",
                 sample: bool = False, seed: int = 0):
        self.ref, self.sample, self.seed = ref, sample, seed
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.model = self.processor = self.revision = None
        self.scaling_factor = self.shift_factor = None

    def load(self) -> "LatentEncoder":
        from diffusers import AutoencoderKL
        from diffusers.image_processor import VaeImageProcessor

        self.model = load_weights(AutoencoderKL, self.ref, "latent_encoder", self.dtype, self.device)
        config = self.model.config
        self.scaling_factor = float(config.scaling_factor)
        self.shift_factor = float(config.get("shift_factor") or 0.0)  # SD3/Flux VAEs shift; SD's does not
        # As StableDiffusionPipeline builds it: sizes are kept to multiples of the VAE's downsampling factor.
        self.processor = VaeImageProcessor(vae_scale_factor=2 ** (len(config.block_out_channels) - 1))
        self.revision = resolve_revision(self.ref)
        return self

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1], by `VaeImageProcessor.preprocess` on PIL images,
        exactly as the diffusers pipelines prepare an image for `vae.encode`."""
        from PIL import Image

        return self.processor.preprocess([Image.fromarray(np.ascontiguousarray(image)) for image in images])

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor, offset: int = 0) -> np.ndarray:
        """Images from `preprocess` (or uint8 NHWC) -> (N, 4, H/8, W/8) float16 latents, already scaled:
        `(latent_dist.mean - shift_factor) * scaling_factor` from the VAE's config.

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
        return ((latents - self.shift_factor) * self.scaling_factor).float().cpu().numpy().astype(np.float16)

    @torch.no_grad()
    def decode(self, latents: np.ndarray) -> np.ndarray:
        """(N, 4, h, w) scaled latents -> uint8 (N, 8h, 8w, 3) images (`VaeImageProcessor.postprocess`)."""
        z = torch.from_numpy(np.asarray(latents, dtype=np.float32)) / self.scaling_factor + self.shift_factor
        images = self.model.decode(z.to(self.device, self.dtype)).sample.float()
        return (self.processor.postprocess(images, output_type="np") * 255).round().astype(np.uint8)
