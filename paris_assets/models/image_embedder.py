"""DINOv2 image features: what the clustering (and the router's features) read."""

from __future__ import annotations

import numpy as np
import torch

from .common import ModelRef, load_pretrained, load_weights, pick_device, pick_dtype, resolve_revision

DINOV2_LARGE = ModelRef("facebook/dinov2-large", "47b73eefe95e8d44ec3623f8890bd894b6ea2d6c")  # 1024-d, as in Paris
DINOV2_BASE = ModelRef("facebook/dinov2-base", "f9e44c814b77203eaa57a6bdbbd535f21ede1415")  # 768-d, as the seed used


class ImageEmbedder:
    """DINOv2 with its own image processor; CLS token (`pooler_output`) or mean of patch tokens."""

    def __init__(self, ref: ModelRef = DINOV2_LARGE, device: str = "auto", dtype: str = "auto", pooling: str = "cls"):
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        self.ref, self.pooling = ref, pooling
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.model = self.processor = self.revision = None

    def load(self) -> "ImageEmbedder":
        from transformers import AutoImageProcessor, Dinov2Model

        self.processor = load_pretrained(AutoImageProcessor, self.ref, "image_embedder")
        self.model = load_weights(Dinov2Model, self.ref, "image_embedder", self.dtype, self.device)
        self.revision = resolve_revision(self.ref)
        return self

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> the model's pixel_values (CPU, float32). Safe to run in a loader thread."""
        return self.processor(images=list(images), return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor) -> np.ndarray:
        """pixel_values from `preprocess` (or uint8 NHWC images) -> (N, D) float32, L2-normalised."""
        if isinstance(pixel_values, np.ndarray):
            pixel_values = self.preprocess(pixel_values)
        out = self.model(pixel_values=pixel_values.to(self.device, self.dtype))
        feats = out.pooler_output if self.pooling == "cls" else out.last_hidden_state[:, 1:].mean(dim=1)
        feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy().astype(np.float32)
