"""Devices, dtypes and the one way every role loads its weights."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


class ModelNotAvailable(RuntimeError):
    """Weights cannot be loaded; the message names the model and how to fetch it."""


@dataclass(frozen=True)
class ModelRef:
    model_id: str  # a Hugging Face hub id or a local folder saved with save_pretrained
    revision: str | None = None  # a hub commit or tag; None means the default branch
    subfolder: str | None = None


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype:
    """float16 on CUDA, float32 on CPU (CPU half-precision kernels are slow or missing), unless told."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]


def load_pretrained(cls, ref: ModelRef, role: str, **kwargs):
    """`cls.from_pretrained(ref)`, turning a missing download into an error that says what to do."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per load buries the run log
    try:
        extra = {"subfolder": ref.subfolder} if ref.subfolder else {}
        return cls.from_pretrained(ref.model_id, revision=ref.revision, **extra, **kwargs)
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (f"fetch it first on a machine with network: `huggingface-cli download {ref.model_id}`"
                + (f" --revision {ref.revision}" if ref.revision else "")
                + ", then run with the same HF_HOME" if not os.path.isdir(ref.model_id) else
                "the folder exists but does not hold a complete save_pretrained() output")
        raise ModelNotAvailable(
            f"{role}: cannot load {ref.model_id!r}{' (offline: HF_HUB_OFFLINE=1)' if offline else ''}: {hint}. "
            f"Or set models.profile: tiny for random-weight stand-ins. ({type(exc).__name__}: {exc})") from None
