"""CLIP ViT-L/14's image tower: the image embeddings LAION's aesthetic and NSFW heads read (quality_scores)."""

from __future__ import annotations

import numpy as np
import torch

from .common import ModelRef, load_pretrained, load_weights, pick_device, pick_dtype, resolve_revision
from .text_encoder import CLIP_VIT_L14


class ClipImageEncoder:
    """CLIPVisionModelWithProjection from the same checkpoint as the text encoder (openai/clip-vit-large-patch14
    holds both towers), with that checkpoint's CLIPImageProcessor (shorter side 224, centre crop 224)."""

    def __init__(self, ref: ModelRef = CLIP_VIT_L14, device: str = "auto", dtype: str = "auto"):
        self.ref = ref
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.model = self.processor = self.revision = None

    def load(self) -> ClipImageEncoder:
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        self.processor = load_pretrained(CLIPImageProcessor, self.ref, "clip_image_encoder")
        self.model = load_weights(CLIPVisionModelWithProjection, self.ref, "clip_image_encoder", self.dtype,
                                  self.device)
        self.revision = resolve_revision(self.ref)
        return self

    @property
    def dim(self) -> int:
        """768 for ViT-L/14: the width LAION's heads were trained on."""
        return int(self.model.config.projection_dim)

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> pixel_values (CPU, float32). Safe to run in a loader thread."""
        return self.processor(images=list(images), return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor) -> np.ndarray:
        """pixel_values (or uint8 NHWC images) -> (N, P) float16 `image_embeds`, L2-normalised as LAION's heads
        expect (normalised in float32 before the cast)."""
        if isinstance(pixel_values, np.ndarray):
            pixel_values = self.preprocess(pixel_values)
        out = self.model(pixel_values=pixel_values.to(self.device, self.dtype))
        feats = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
        return feats.cpu().numpy().astype(np.float16)
