"""BLIP-2 re-captioning."""

from __future__ import annotations

import numpy as np
import torch

from .common import ModelRef, load_pretrained, load_weights, pick_device, pick_dtype, resolve_revision

BLIP2_OPT_2_7B = ModelRef("Salesforce/blip2-opt-2.7b", "59a1ef6c1e5117b3f65523d1c6066825bcf315e3")


class Captioner:
    """Blip2ForConditionalGeneration: one caption per image, greedy decoding (deterministic)."""

    def __init__(self, ref: ModelRef = BLIP2_OPT_2_7B, device: str = "auto", dtype: str = "auto",
                 max_new_tokens: int = 30, min_new_tokens: int = 0):
        self.ref, self.max_new_tokens, self.min_new_tokens = ref, max_new_tokens, min_new_tokens
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.model = self.processor = self.revision = None

    def load(self) -> "Captioner":
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        self.processor = load_pretrained(Blip2Processor, self.ref, "captioner")
        # In float16 the Q-Former and query tokens stay float32, as the model asks (`_keep_in_fp32_modules`).
        self.model = load_weights(Blip2ForConditionalGeneration, self.ref, "captioner", self.dtype, self.device)
        self.revision = resolve_revision(self.ref)
        return self

    def preprocess(self, images: np.ndarray) -> dict[str, torch.Tensor]:
        return self.processor(images=list(images), return_tensors="pt")

    @torch.no_grad()
    def __call__(self, inputs) -> list[str]:
        """Inputs from `preprocess` (or uint8 NHWC images) -> N captions ('' where the model said nothing)."""
        if isinstance(inputs, np.ndarray):
            inputs = self.preprocess(inputs)
        inputs = {k: v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device)
                  for k, v in inputs.items()}
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens,
                                  do_sample=False, num_beams=1)
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]
