"""The HunyuanVideo causal 3D VAE: 4k+1-frame clips to the cached video latents Paris 2.0's experts train on.

Real weights: `hunyuanvideo-community/HunyuanVideo`, subfolder `vae`, the diffusers-format copy of Tencent's VAE
that diffusers' own docs load `AutoencoderKLHunyuanVideo` from (16 latent channels, 8x spatial and 4x temporal
compression, scaling_factor 0.476986 in its config). Not pinned: no public source seen here names a commit of that
repository, so it resolves to the default branch and `resolve_revision` records the commit the cache holds.

Memory (the real config traced on PyTorch's meta device in float16, live tensors only): weights 0.46 GiB; a
256x256 clip peaks at 1.4 GiB of activations to encode and 2.4 GiB to decode, the same for 17, 33 or 65 frames
(diffusers' framewise tiles: 16+1 frames at a time), for a batch of 8 (slicing: one clip at a time) and at 512 px
(spatial tiles above 256 px). Without slicing a batch of 8 would take 11 / 19 GiB, without framewise tiles a
65-frame clip 5 / 9 GiB. With the CUDA context and convolution workspaces a 24 GB GPU has ample room.
"""

from __future__ import annotations

import numpy as np
import torch

from .common import ModelRef, load_weights, pick_device, pick_dtype, resolve_revision

HUNYUAN_VIDEO_VAE = ModelRef("hunyuanvideo-community/HunyuanVideo", None, "vae")


def check_clip_shape(frames: int, height: int, width: int, temporal: int = 4, spatial: int = 8) -> None:
    """Raise unless a clip is 4k+1 frames (the causal VAE encodes the first frame alone, then groups of 4) and its
    sides are multiples of the spatial compression."""
    if frames < 1 or (frames - 1) % temporal:
        below = (frames - 1) // temporal * temporal + 1
        raise ValueError(f"video_latent_encoder: clips must have {temporal}k+1 frames (1, 5, 9, 17, 33, ...); got "
                         f"{frames}: set filter num_frames to {max(below, 1)} or {below + temporal}")
    if height % spatial or width % spatial:
        raise ValueError(f"video_latent_encoder: frame sides must be multiples of {spatial}; got {height}x{width}: "
                         f"set filter image_size to a multiple of {spatial}")


class VideoLatentEncoder:
    """AutoencoderKLHunyuanVideo encode (and decode, for the reconstruction check), tiling and slicing on a GPU, the latent
    scale read from the VAE's config."""

    def __init__(self, ref: ModelRef = HUNYUAN_VIDEO_VAE, device: str = "auto", dtype: str = "auto",
                 sample: bool = False, seed: int = 0):
        self.ref, self.sample, self.seed = ref, sample, seed
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.model = self.revision = None
        self.scaling_factor = self.shift_factor = None
        self.temporal = self.spatial = None

    def load(self) -> VideoLatentEncoder:
        from diffusers import AutoencoderKLHunyuanVideo

        self.model = load_weights(AutoencoderKLHunyuanVideo, self.ref, "video_latent_encoder", self.dtype, self.device)
        config = self.model.config
        self.scaling_factor = float(config.scaling_factor)
        self.shift_factor = float(config.get("shift_factor") or 0.0)  # HunyuanVideo's VAE does not shift
        self.temporal = int(config.temporal_compression_ratio)
        self.spatial = int(config.spatial_compression_ratio)
        # Memory aids for a GPU. On a CPU, where memory is not short, they cost 3.5x the time (tiny VAE, 128 px:
        # slicing hands conv3d a batch of one), and a clip's latent then depends on its batch by float rounding.
        if self.device.type == "cuda":
            self.model.enable_tiling()  # spatial tiles above 256 px; the 17-frame temporal tiles are on by default
            self.model.enable_slicing()  # one clip of a batch at a time: the peak does not grow with the batch
        self.revision = resolve_revision(self.ref)
        return self

    @property
    def latent_channels(self) -> int:
        return int(self.model.config.latent_channels)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, (T-1)/4+1, H/8, W/8): the per-clip latent shape for a clip of this size."""
        check_clip_shape(frames, height, width, self.temporal, self.spatial)
        return (self.latent_channels, (frames - 1) // self.temporal + 1, height // self.spatial, width // self.spatial)

    def preprocess(self, clips: np.ndarray) -> torch.Tensor:
        """uint8 (N, T, H, W, 3) -> float32 (N, 3, T, H, W) in [-1, 1], as diffusers' VideoProcessor scales frames."""
        clips = np.asarray(clips)
        if clips.ndim != 5 or clips.shape[-1] != 3 or clips.dtype != np.uint8:
            raise ValueError(f"video_latent_encoder: expected uint8 clips (N, T, H, W, 3); got {clips.dtype} "
                             f"{clips.shape}")
        check_clip_shape(*clips.shape[1:4], self.temporal or 4, self.spatial or 8)
        return torch.from_numpy(np.ascontiguousarray(clips)).permute(0, 4, 1, 2, 3).float().div(255).mul(2).sub(1)

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor | np.ndarray, offset: int = 0) -> np.ndarray:
        """Clips from `preprocess` (or uint8 (N, T, H, W, 3)) -> (N, C, (T-1)/4+1, H/8, W/8) float16 latents, already
        scaled: `(latent_dist.mean - shift_factor) * scaling_factor` from the VAE's config (C = 16 for the real VAE).

        The distribution's mean by default; with `sample`, row i draws its noise from a generator seeded by
        (seed, offset + i), so a clip's latent does not depend on the batch it was computed in."""
        if isinstance(pixels, np.ndarray):
            pixels = self.preprocess(pixels)
        if pixels.ndim != 5 or pixels.shape[1] != 3:
            raise ValueError(f"video_latent_encoder: expected pixels (N, 3, T, H, W) from preprocess; got "
                             f"{tuple(pixels.shape)}")
        check_clip_shape(*pixels.shape[2:5], self.temporal, self.spatial)
        dist = self.model.encode(pixels.to(self.device, self.dtype)).latent_dist
        latents = dist.mean
        if self.sample:
            noise = torch.stack([
                torch.randn(dist.mean.shape[1:], device=self.device, dtype=dist.mean.dtype,
                            generator=torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + offset + i))
                for i in range(dist.mean.shape[0])])
            latents = dist.mean + dist.std * noise
        return ((latents - self.shift_factor) * self.scaling_factor).float().cpu().numpy().astype(np.float16)

    @torch.no_grad()
    def decode(self, latents: np.ndarray) -> np.ndarray:
        """(N, C, t, h, w) scaled latents -> uint8 (N, 4(t-1)+1, 8h, 8w, 3) clips."""
        z = torch.from_numpy(np.asarray(latents, dtype=np.float32)) / self.scaling_factor + self.shift_factor
        video = self.model.decode(z.to(self.device, self.dtype)).sample.float().clamp(-1, 1)
        return video.add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()
