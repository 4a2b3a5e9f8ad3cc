"""T5-v1.1-XXL's encoder: the per-token prompt states Paris 2.0's video experts condition on, with their padding mask.

Which checkpoint. Paris 2.0 encodes prompts with T5-v1.1-XXL (and CLIP ViT-L/14). HunyuanVideo has no T5: its
`text_encoder` is a LLaVA-LLaMA-3-8B and its `text_encoder_2` is CLIP ViT-L/14, so "HunyuanVideo's text_encoder_2"
would be the wrong model. `google/t5-v1_1-xxl` is the original but holds the encoder *and* decoder as a 44.5 GB
float32 `pytorch_model.bin` (no safetensors), which this project's loader refuses (`load_weights` reads
safetensors only, `make models` fetches no .bin). `THUDM/CogVideoX-2b` ships that same T5-v1.1-XXL encoder,
frozen, as a diffusers `text_encoder` subfolder (`T5EncoderModel` in safetensors: 4.8B parameters, ~9.5 GB at 16
bits) with its T5 tokenizer in `tokenizer`, Apache-2.0, so that is the default. Float16 is safe here: transformers
keeps T5's `wo` projections in float32 (`_keep_in_fp32_modules`, which `load_weights` preserves) and clamps
infinities, the known T5-v1.1 half-precision overflow. Not pinned: no public source seen here names a commit;
`resolve_revision` records the commit the cache holds.

Max length 226: what CogVideoX's pipeline pads to (`max_sequence_length=226`), the length this encoder copy was
used at for text-to-video; alt-text captions are far shorter, so longer buys only padding (each position costs
4096 x 2 bytes per clip: 226 tokens are 1.85 MB per caption in float16). Overridable per run.

Unlike CogVideoX and SD3 (which run T5 without a mask), the encoder sees the attention mask, as PixArt does: the
states at real tokens then do not depend (beyond float rounding) on how much padding follows, so stored rows can
be trimmed to the longest caption, and the recorded mask is what a consumer's cross-attention should use. Padding
positions are stored as zeros.
"""

from __future__ import annotations

import numpy as np
import torch

from .common import ModelRef, load_pretrained, load_weights, pick_device, pick_dtype, resolve_revision

T5_V1_1_XXL = ModelRef("THUDM/CogVideoX-2b", None, "text_encoder")
MAX_LENGTH = 226  # CogVideoX's max_sequence_length for this encoder; captions rarely use a tenth of it


def tokenizer_ref(ref: ModelRef) -> ModelRef:
    """Where the tokenizer of a text encoder lives: a pipeline's `text_encoder[_N]` subfolder pairs with
    `tokenizer[_N]`; a plain folder (or hub id) holds both."""
    if ref.subfolder and ref.subfolder.startswith("text_encoder"):
        return ModelRef(ref.model_id, ref.revision, ref.subfolder.replace("text_encoder", "tokenizer", 1))
    return ref


class T5TextEncoder:
    """T5EncoderModel with its tokenizer, every caption padded (and truncated) to `max_length` tokens."""

    def __init__(self, ref: ModelRef = T5_V1_1_XXL, device: str = "auto", dtype: str = "auto",
                 max_length: int = MAX_LENGTH):
        if max_length < 2:
            raise ValueError(f"t5_encoder: max_length must be at least 2 (one token and </s>); got {max_length}")
        self.ref, self.max_length = ref, max_length
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.model = self.tokenizer = self.revision = None

    def load(self) -> T5TextEncoder:
        from transformers import AutoTokenizer, T5EncoderModel

        self.tokenizer = load_pretrained(AutoTokenizer, tokenizer_ref(self.ref), "t5_encoder")
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"t5_encoder: {self.ref.model_id!r}'s tokenizer has no pad token: pick a T5 tokenizer")
        self.model = load_weights(T5EncoderModel, self.ref, "t5_encoder", self.dtype, self.device)
        self.revision = resolve_revision(self.ref)
        return self

    @property
    def dims(self) -> tuple[int, int]:
        """(max_length, token width): (226, 4096) for T5-v1.1-XXL at the default length."""
        return self.max_length, int(self.model.config.d_model)

    def preprocess(self, captions: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(list(captions), padding="max_length", max_length=self.max_length, truncation=True,
                              add_special_tokens=True, return_attention_mask=True, return_tensors="pt")

    @torch.no_grad()
    def __call__(self, tokens) -> tuple[np.ndarray, np.ndarray]:
        """Tokens from `preprocess` (or a list of strings) -> ((N, L, D) float16 per-token last_hidden_state, zeros at
        padding; (N, L) bool attention mask, True at real tokens including the closing </s>), L = max_length."""
        if isinstance(tokens, list):
            tokens = self.preprocess(tokens)
        mask = tokens["attention_mask"].to(self.device)
        states = self.model(input_ids=tokens["input_ids"].to(self.device), attention_mask=mask).last_hidden_state
        states = states.float() * mask[..., None]  # padding states are whatever pad queries read: store none
        return states.cpu().numpy().astype(np.float16), mask.bool().cpu().numpy()
