"""CLIP ViT-L/14's text encoder: per-token states the experts condition on, pooled embeddings the router reads."""

from __future__ import annotations

import numpy as np
import torch

from .common import ModelRef, load_pretrained, load_weights, pick_device, pick_dtype, resolve_revision

CLIP_VIT_L14 = ModelRef("openai/clip-vit-large-patch14", "32bd64288804d66eefd0ccbe215aa642df71cc41")
MAX_TOKENS = 77


class TextEncoder:
    """CLIPTextModelWithProjection with its tokenizer (padded/truncated to 77 tokens), as Stable Diffusion's
    `encode_prompt` runs it: no attention mask (CLIP's configs do not ask for one), so the padding positions
    hold what SD-style experts are trained and sampled with."""

    def __init__(self, ref: ModelRef = CLIP_VIT_L14, device: str = "auto", dtype: str = "auto"):
        self.ref = ref
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.model = self.tokenizer = self.revision = None

    def load(self) -> "TextEncoder":
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        self.tokenizer = load_pretrained(AutoTokenizer, self.ref, "text_encoder")
        if self.tokenizer.model_max_length != MAX_TOKENS:
            raise ValueError(f"text_encoder: {self.ref.model_id!r}'s tokenizer pads to {self.tokenizer.model_max_length} "
                             f"tokens; the experts condition on CLIP's {MAX_TOKENS}: pick a CLIP text encoder")
        self.model = load_weights(CLIPTextModelWithProjection, self.ref, "text_encoder", self.dtype, self.device)
        self.revision = resolve_revision(self.ref)
        return self

    @property
    def dims(self) -> tuple[int, int]:
        """(token width, pooled width): (768, 768) for ViT-L/14."""
        return int(self.model.config.hidden_size), int(self.model.config.projection_dim)

    def preprocess(self, captions: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(list(captions), padding="max_length", max_length=MAX_TOKENS, truncation=True,
                              return_tensors="pt")

    @torch.no_grad()
    def __call__(self, tokens) -> tuple[np.ndarray, np.ndarray]:
        """Tokens from `preprocess` (or a list of strings) -> ((N, 77, H) float16 per-token last_hidden_state,
        what `StableDiffusionPipeline.encode_prompt` returns; (N, P) float16 pooled: the projected end-of-text
        state `text_embeds`, CLIP's text embedding, which SDXL also takes as its pooled prompt embedding)."""
        if isinstance(tokens, list):
            tokens = self.preprocess(tokens)
        # As encode_prompt: a mask only for a text encoder whose config asks for one (CLIP's do not).
        mask = tokens["attention_mask"].to(self.device) if getattr(self.model.config, "use_attention_mask", False) \
            else None
        out = self.model(input_ids=tokens["input_ids"].to(self.device), attention_mask=mask)
        return (out.last_hidden_state.float().cpu().numpy().astype(np.float16),
                out.text_embeds.float().cpu().numpy().astype(np.float16))
