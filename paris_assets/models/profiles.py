"""Which weights each role loads: the `paris` profile's Hugging Face ids, the `tiny` stand-ins, or overrides."""

from __future__ import annotations

from pathlib import Path

import torch

from ..lib.store import storage
from ..settings import Settings
from .captioner import BLIP2_OPT_2_7B, Captioner
from .clip_image_encoder import ClipImageEncoder
from .common import COMMIT, ModelRef, dtype_name, pick_device, pick_dtype, resolve_revision
from .image_embedder import DINOV2_BASE, DINOV2_LARGE, ImageEmbedder
from .latent_encoder import SD_VAE_FT_MSE, LatentEncoder
from .t5_encoder import T5_V1_1_XXL, T5TextEncoder
from .text_encoder import CLIP_VIT_L14, TextEncoder
from .tiny import TINY_VERSION, ensure_tiny_models, tiny_dir
from .tiny_video import TINY_VIDEO_VERSION, VIDEO_ROLES, ensure_tiny_video_models
from .video_latent_encoder import HUNYUAN_VIDEO_VAE, VideoLatentEncoder

PARIS = {"captioner": BLIP2_OPT_2_7B, "text_encoder": CLIP_VIT_L14, "image_embedder": DINOV2_LARGE,
         "latent_encoder": SD_VAE_FT_MSE}
# the video models (Paris 2.0, media/video.py): not pinned, no public source seen here names a commit (see
# their modules)
PARIS_VIDEO = {"video_latent_encoder": HUNYUAN_VIDEO_VAE, "t5_encoder": T5_V1_1_XXL}
# Commits pinned for the hub ids this project knows; an override naming one of them without a revision gets its pin.
PINNED = {ref.model_id: ref.revision for ref in (*PARIS.values(), DINOV2_BASE)}
# The model role behind each asset that runs one, for images (a media may run others: media/video.py).
ASSET_ROLES = {"captions": "captioner", "clip_embeddings": "text_encoder", "dinov2_embeddings": "image_embedder",
               "latents": "latent_encoder", "clip_image_embeddings": "clip_image_encoder"}
# Roles that load another role's checkpoint: CLIP's image tower comes from the text encoder's checkpoint, so the
# aesthetic and NSFW heads read the embedding space they were trained on, and one id/revision setting covers both.
SAME_CHECKPOINT = {"clip_image_encoder": "text_encoder"}


def _weights_role(role: str) -> str:
    """The role whose settings (`<role>_id`, `<role>_revision`) and tiny folder `role` loads."""
    return SAME_CHECKPOINT.get(role, role)


def tiny_root(settings: Settings) -> str:
    root = settings.data_root
    return str(storage.local_path(root)) if storage.is_local(root) else str(Path.home() / ".cache" / "paris-assets")


def model_ref(settings: Settings, role: str) -> ModelRef:
    """The weights `role` loads under these settings (an explicit `<role>_id` wins over the profile)."""
    m = settings.models
    role = _weights_role(role)
    override = getattr(m, f"{role}_id")
    revision = getattr(m, f"{role}_revision")
    if override:
        local = Path(settings.resolve(override)).exists()
        # the paris id of a role whose weights sit in a subfolder (the video VAE, T5) keeps its subfolder
        paris = {**PARIS, **PARIS_VIDEO}.get(role)
        subfolder = paris.subfolder if paris and override == paris.model_id else None
        return ModelRef(settings.resolve(override) if local else override,
                        revision or (None if local else PINNED.get(override)), subfolder)
    if m.profile == "tiny":
        return ModelRef(str(tiny_dir(tiny_root(settings), role)))
    paris = {**PARIS, **PARIS_VIDEO}[role]
    return ModelRef(paris.model_id, revision or paris.revision, paris.subfolder)


def build_model(settings: Settings, role: str):
    """The role's wrapper, not yet loaded (tiny models are built on first use)."""
    m = settings.models
    if m.profile == "tiny" and not getattr(m, f"{_weights_role(role)}_id"):
        (ensure_tiny_video_models if role in VIDEO_ROLES else ensure_tiny_models)(tiny_root(settings), seed=settings.seed)
    ref = model_ref(settings, role)
    if role == "captioner":
        return Captioner(ref, m.device, m.dtype, settings.captions.max_new_tokens, settings.captions.min_new_tokens)
    if role == "text_encoder":
        return TextEncoder(ref, m.device, m.dtype)
    if role == "image_embedder":
        return ImageEmbedder(ref, m.device, m.dtype, pooling=m.dinov2_pooling)
    if role == "clip_image_encoder":
        return ClipImageEncoder(ref, m.device, m.dtype)
    if role == "latent_encoder":
        return LatentEncoder(ref, m.device, m.dtype, sample=m.latent_sampling == "sample", seed=settings.seed)
    if role == "video_latent_encoder":
        return VideoLatentEncoder(ref, m.device, m.dtype, sample=m.latent_sampling == "sample", seed=settings.seed)
    if role == "t5_encoder":
        return T5TextEncoder(ref, m.device, m.dtype)
    raise ValueError(f"unknown model role {role!r}")


def load_model(settings: Settings, role: str):
    """The role's model, built and loaded where this runs. What a model worker calls (engines/loader.py, under the
    ray engine): its module imports no Dagster into the workers."""
    return build_model(settings, role).load()


def model_identity(settings: Settings, role: str) -> dict[str, str]:
    """What, besides its inputs, shapes a role's outputs: the weights (the resolved commit), the device type and
    the dtype. Cheap enough for a code version: no weights are loaded and the hub is not asked."""
    m = settings.models
    device = pick_device(m.device)
    if m.profile == "tiny" and not getattr(m, f"{_weights_role(role)}_id"):
        version = TINY_VIDEO_VERSION if role in VIDEO_ROLES else TINY_VERSION
        model_id, revision = "tiny", f"tiny-v{version}-seed{settings.seed}"  # built on first use
    else:
        ref = model_ref(settings, role)
        model_id, revision = ref.model_id, resolve_revision(ref)
    return {"model_id": model_id, "revision": revision, "device": device.type,
            "dtype": dtype_name(pick_dtype(device, m.dtype))}


def model_fingerprint(settings: Settings, asset: str, roles: tuple[str, ...]) -> str | None:
    """The identity of the models `asset` runs (its media's `roles`), folded into its code version (None for
    assets that run no model)."""
    if not roles or (asset == "captions" and settings.captions.source != "blip2"):
        return None
    revisions = [model_identity(settings, role)["revision"] for role in roles]
    revision = "+".join(r[:10] if COMMIT.match(r) else r for r in dict.fromkeys(revisions))
    # Never what this host resolves `device: auto` to: the UI's code server (often a CPU host) and the GPU worker
    # that materialises must compute the same code version, or the asset shows Unsynced for good. An explicit
    # device fixes the dtype `auto` means (cuda + auto = cuda + float16); the resolved pair goes into the chunk
    # key and the metadata either way.
    m = settings.models
    if m.device == "auto":
        return f"{revision}-auto-{m.dtype}"
    device = torch.device(m.device)
    return f"{revision}-{device.type}-{dtype_name(pick_dtype(device, m.dtype))}"


def model_metadata(model) -> dict:
    """The loaded model as materialisation metadata: id, requested and resolved revision, device, dtype."""
    return {"model_id": model.ref.model_id, "revision_requested": model.ref.revision or "default branch",
            "revision": model.revision, "device": str(model.device), "dtype": dtype_name(model.dtype)}



def expected_shapes(settings: Settings) -> dict[str, tuple[int, ...]]:
    """Per-row shapes the image models' arrays must have under these settings, read from the models' configs
    (a clip's: media/video.py, embedding_shapes and video_shapes)."""
    return {**embedding_shapes(settings), **latent_shapes(settings)}


def embedding_shapes(settings: Settings) -> dict[str, tuple[int, ...]]:
    """dinov2 (D,), clip_tokens (77, W), clip_pooled (P,) and clip_image (P,), from the models' configs."""
    from transformers import AutoConfig

    if settings.models.profile == "tiny":
        ensure_tiny_models(tiny_root(settings), seed=settings.seed)
    dino = AutoConfig.from_pretrained(model_ref(settings, "image_embedder").model_id,
                                      revision=model_ref(settings, "image_embedder").revision)
    clip = AutoConfig.from_pretrained(model_ref(settings, "text_encoder").model_id,
                                      revision=model_ref(settings, "text_encoder").revision)
    text = getattr(clip, "text_config", clip)
    projection = getattr(clip, "projection_dim", getattr(text, "projection_dim", text.hidden_size))
    vision = getattr(clip, "vision_config", None)
    return {"dinov2": (dino.hidden_size,), "clip_tokens": (77, text.hidden_size), "clip_pooled": (projection,),
            "clip_image": (getattr(vision, "projection_dim", projection),)}


def latent_shapes(settings: Settings) -> dict[str, tuple[int, ...]]:
    """latents (C, S/8, S/8) from the image VAE's config."""
    from diffusers import AutoencoderKL

    if settings.models.profile == "tiny":
        ensure_tiny_models(tiny_root(settings), seed=settings.seed)
    vae = AutoencoderKL.load_config(model_ref(settings, "latent_encoder").model_id,
                                    revision=model_ref(settings, "latent_encoder").revision)
    side = settings.filter.image_size // 2 ** (len(vae["block_out_channels"]) - 1)
    return {"latents": (vae["latent_channels"], side, side)}


def video_shapes(settings: Settings) -> dict[str, tuple[int, ...]]:
    """latents (C, (T-1)/4+1, S/8, S/8) from the video VAE's config; t5_tokens (226, d_model) and t5_mask (226,)."""
    from diffusers import AutoencoderKLHunyuanVideo
    from transformers import AutoConfig

    from .t5_encoder import MAX_LENGTH

    ensure = ensure_tiny_video_models if settings.models.profile == "tiny" else None
    if ensure:
        ensure(tiny_root(settings), seed=settings.seed)
    ref = model_ref(settings, "video_latent_encoder")
    vae = AutoencoderKLHunyuanVideo.load_config(ref.model_id, revision=ref.revision, subfolder=ref.subfolder)
    t5_ref = model_ref(settings, "t5_encoder")
    t5 = AutoConfig.from_pretrained(t5_ref.model_id, revision=t5_ref.revision, subfolder=t5_ref.subfolder or "")
    side = settings.filter.image_size // vae["spatial_compression_ratio"]
    frames = (settings.video.num_frames - 1) // vae["temporal_compression_ratio"] + 1
    return {"latents": (vae["latent_channels"], frames, side, side), "t5_tokens": (MAX_LENGTH, t5.d_model),
            "t5_mask": (MAX_LENGTH,)}
