"""Devices, dtypes, revisions and the one way every role loads its weights."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

COMMIT = re.compile(r"^[0-9a-f]{40}$")
# What `make models` fetches: weights as safetensors, configs, tokenizer and processor files. No .bin/.h5/.msgpack.
FETCH_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model")


class ModelNotAvailable(RuntimeError):
    """Weights cannot be loaded; the message names the model and how to fetch it."""


@dataclass(frozen=True)
class ModelRef:
    model_id: str  # a Hugging Face hub id or a local folder saved with save_pretrained
    revision: str | None = None  # a hub commit (pinned) or tag; None means the default branch
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


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def resolve_revision(ref: ModelRef) -> str:
    """The commit `ref` loads, found without asking the hub: a pinned commit as is; a branch or tag through the
    local Hugging Face cache (the snapshot folder is named by its commit); a tiny model by its builder version;
    another local folder by a digest of its files' names, sizes and times. A hub id not in the cache yet
    keeps its branch name ('main'): `make models` fetches it."""
    folder = Path(ref.model_id)
    if folder.is_dir():
        if folder.parent.name == "snapshots" and COMMIT.match(folder.name):
            return folder.name  # a folder inside the HF cache
        stamp = folder / "tiny.json"
        if stamp.exists():
            tiny = json.loads(stamp.read_text())
            return f"tiny-v{tiny['version']}-seed{tiny['seed']}"
        files = sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                       for p in folder.rglob("*") if p.is_file())
        return "local-" + hashlib.sha256(json.dumps(files).encode()).hexdigest()[:12]
    revision = ref.revision or "main"
    if COMMIT.match(revision):
        return revision
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(ref.model_id, f"{ref.subfolder}/config.json" if ref.subfolder else "config.json",
                                    revision=revision)
    if isinstance(config, str):  # .../snapshots/<commit>/[subfolder/]config.json
        path = Path(config).parent
        return (path.parent if ref.subfolder else path).name
    return revision


def load_pretrained(cls, ref: ModelRef, role: str, **kwargs):
    """`cls.from_pretrained(ref)`, turning a missing download into an error that says what to do."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per load buries the run log
    try:
        extra = {"subfolder": ref.subfolder} if ref.subfolder else {}
        return cls.from_pretrained(ref.model_id, revision=ref.revision, **extra, **kwargs)
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        if os.path.isdir(ref.model_id):
            hint = "the folder exists but does not hold a complete save_pretrained() output (safetensors weights)"
        else:
            command = f"hf download {ref.model_id}" + (f" --revision {ref.revision}" if ref.revision else "")
            hint = (f"fetch it first on a machine with network: `make models` (or `{command}`), "
                    "then run with the same HF_HOME")
        raise ModelNotAvailable(
            f"{role}: cannot load {ref.model_id!r}{' (offline: HF_HUB_OFFLINE=1)' if offline else ''}: {hint}. "
            f"Or set models.profile: tiny for random-weight stand-ins. ({type(exc).__name__}: {exc})") from None


def load_weights(cls, ref: ModelRef, role: str, dtype: torch.dtype, device: torch.device):
    """The model in `dtype` on `device`, in eval mode, from safetensors only.

    The dtype goes to `from_pretrained`, which builds the model empty and casts each tensor as it is read, so no
    full float32 copy exists first, and the modules a model keeps in float32 (BLIP-2's Q-Former and query tokens,
    `_keep_in_fp32_modules`) stay float32; a `.to(dtype)` afterwards would cast those too. Transformers 5 calls
    the argument `dtype` (`torch_dtype` is deprecated there); diffusers still calls it `torch_dtype`."""
    dtype_arg = "torch_dtype" if cls.__module__.startswith("diffusers") else "dtype"
    model = load_pretrained(cls, ref, role, use_safetensors=True, **{dtype_arg: dtype})
    return model.to(device).eval()
