"""The settings file's sections, one typed class each: what every key means, its default and why. `Settings`
(settings.py) holds one of each and loads the file."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .lib.images.units import NUDENET_CLASSES
from .lib.ingest.urls import METADATA_HOSTS, REFUSED_NETWORKS, check_networks
from .lib.quality.captions import check_languages, check_patterns


class SettingsError(ValueError):
    """The settings file cannot be used; the message says which key and what to do."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSettings(_Section):
    # demo runs offline, anywhere; image_folder / video_folder: files with sidecar .txt captions (by media)
    kind: Literal["demo", "url_list", "image_folder", "video_folder", "webdataset"] = "demo"
    path: Optional[str] = None  # url_list: parquet/csv/jsonl file or glob (local or fsspec URL); folder; tar glob
    url_col: str = "url"  # LAION spells it URL; matching is case-insensitive
    caption_col: str = "caption"  # LAION spells it TEXT; matching is case-insensitive
    limit: Optional[int] = Field(None, ge=1)  # a seeded sample of this many rows, so a trial never reads 2B rows
    # clean items the demo makes, plus its planted problems; None: 2,000 images, or 200 clips with media: video
    demo_size: Optional[int] = Field(None, ge=16)

    @model_validator(mode="after")
    def _path_when_needed(self) -> "SourceSettings":
        if self.kind != "demo" and not self.path:
            raise ValueError(f"source.path is required when source.kind is {self.kind!r}")
        return self


class IngestSettings(_Section):
    processes: int = Field(2, ge=1)  # img2dataset worker processes: one per core is a good start
    threads: int = Field(16, ge=1)  # download threads per process: downloads wait on the network, not the CPU
    samples_per_shard: int = Field(1000, ge=1)  # img2dataset restarts workers per shard: small shards are slow
    timeout: float = Field(10.0, gt=0)  # seconds per request
    retries: int = Field(1, ge=0)  # extra attempts per URL after a failure
    distributor: Literal["multiprocessing", "pyspark", "ray"] = "multiprocessing"  # pyspark/ray spread over machines
    user_agent_token: Optional[str] = None  # added to the User-Agent so site owners can identify the crawler
    respect_opt_out: bool = True  # honour X-Robots-Tag noai/noimageai, as img2dataset does by default
    max_image_pixels: int = Field(89_478_485, ge=1)  # decoders refuse images declaring more (decompression bombs)
    # URLs of a url_list into these networks are refused, not fetched: link-local and cloud metadata hand out
    # the crawler's credentials. The list replaces the default: to add private ranges (10.0.0.0/8 ...) when
    # crawling from inside a cloud network, list them beside the defaults (docs/settings.md shows the whole list).
    refused_networks: tuple[str, ...] = REFUSED_NETWORKS
    refused_hosts: tuple[str, ...] = METADATA_HOSTS  # host names refused as they are written (metadata services)

    _networks_parse = field_validator("refused_networks")(check_networks)


class FilterSettings(_Section):
    image_size: int = Field(256, ge=16)  # side of the square crop every later stage sees (Paris: 256)
    resize_mode: Literal["center_crop", "border", "stretch"] = "center_crop"  # Paris trains on centre crops
    min_side: int = Field(64, ge=1)  # on the original size: tiny thumbnails upscale into mush
    max_aspect: float = Field(3.0, ge=1.0)  # on the original size: a centre crop of a banner shows nothing
    blank_std: float = Field(2.0, ge=0)  # pixel std (0-255) at or below which an image counts as blank
    max_punsafe: float = Field(0.5, ge=0, le=1)  # LAION punsafe above this is dropped, where the source has it
    max_pwatermark: float = Field(0.8, ge=0, le=1)  # LAION pwatermark above this is dropped, where present
    require_caption: bool = True  # Paris conditions on alt text: no usable caption, no sample
    nudenet: bool = False  # run the NudeNet detector (offline ONNX model in its wheel) on every kept image
    nudenet_classes: tuple[str, ...] = NUDENET_CLASSES  # exposed only: covered/face classes fire on ordinary photos
    nudenet_threshold: float = Field(0.6, ge=0, le=1)  # detection score at which an image is dropped
    phash_max_distance: int = Field(6, ge=0, le=32)  # pHash bits (of 64) within which images are near duplicates: docs/speed.md
    jpeg_quality: int = Field(95, ge=50, le=100)  # quality of the stored crops that every later stage decodes
    processes: int = Field(2, ge=1)  # decode/check worker processes
    chunk_size: int = Field(512, ge=1)  # images per work unit handed to a worker
    # caption filters, on the source text (alt text), counted by reason like the image checks; all off by default
    caption_languages: tuple[str, ...] = ()  # ISO 639-1 codes kept (e.g. [en]); empty: any language
    caption_min_language_score: float = Field(0.5, ge=0, le=1)  # detector confidence below this: language unknown, dropped
    caption_min_words: int = Field(0, ge=0)  # fewer words than this: dropped
    caption_boilerplate: tuple[str, ...] = ()  # regular expressions (case-insensitive); a caption matching one is dropped

    _patterns_compile = field_validator("caption_boilerplate")(check_patterns)
    _languages_iso = field_validator("caption_languages")(check_languages)


class ModelSettings(_Section):
    profile: Literal["tiny", "paris"] = "tiny"  # tiny: random weights, offline, no semantics; paris: real HF ids
    device: str = "auto"  # auto: CUDA when present, else CPU; or cpu, cuda, cuda:1
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"  # auto: float16 on CUDA, float32 on CPU
    # Any from_pretrained target overrides a profile's model: a hub id, a local folder, a cached id.
    captioner_id: Optional[str] = None  # paris: Salesforce/blip2-opt-2.7b
    captioner_revision: Optional[str] = None
    text_encoder_id: Optional[str] = None  # paris: openai/clip-vit-large-patch14
    text_encoder_revision: Optional[str] = None
    image_embedder_id: Optional[str] = None  # paris: facebook/dinov2-large (1024-d); the seed used -base (768-d)
    image_embedder_revision: Optional[str] = None
    latent_encoder_id: Optional[str] = None  # paris: stabilityai/sd-vae-ft-mse
    latent_encoder_revision: Optional[str] = None
    # media: video (Paris 2.0): the causal video VAE and the T5 text encoder
    video_latent_encoder_id: Optional[str] = None  # paris: hunyuanvideo-community/HunyuanVideo (its vae/ subfolder)
    video_latent_encoder_revision: Optional[str] = None
    t5_encoder_id: Optional[str] = None  # paris: THUDM/CogVideoX-2b (its text_encoder/: T5-v1.1-XXL's encoder)
    t5_encoder_revision: Optional[str] = None
    dinov2_pooling: Literal["cls", "mean"] = "cls"  # CLS token, or the mean of the patch tokens
    latent_sampling: Literal["mean", "sample"] = "mean"  # the latent distribution's mean, or a seeded draw
    caption_batch_size: int = Field(16, ge=1)  # BLIP-2 is the heaviest model: keep batches modest
    text_batch_size: int = Field(128, ge=1)
    image_batch_size: int = Field(64, ge=1)
    latent_batch_size: int = Field(16, ge=1)
    chunk_size: int = Field(1024, ge=1)  # images per resumable chunk: a killed run redoes at most one chunk each
    loader_threads: int = Field(2, ge=1)  # threads decoding and preprocessing ahead of the model


class CaptionSettings(_Section):
    source: Literal["blip2", "alt_text"] = "blip2"  # blip2 re-captions; alt_text is what the Paris paper uses
    max_new_tokens: int = Field(30, ge=1)
    min_new_tokens: int = Field(0, ge=0)  # random tiny weights stop at once: tests set this above 0


class ClusteringSettings(_Section):
    k: int = Field(8, ge=2)  # experts; Paris trains 8 (and reports 16); each gets one partition
    method: Literal["hierarchical", "kmeans"] = "hierarchical"  # DDM/Paris two-stage, or one pass to K
    fine_k: int = Field(1024, ge=2)  # fine centroids of the first stage (reduced, with a note, on small data)
    backend: Literal["faiss", "sklearn"] = "faiss"  # faiss scales to millions; sklearn for comparison
    train_sample: int = Field(262_144, ge=100)  # k-means trains on a seeded sample this large at most
    iterations: int = Field(25, ge=1)


class ReportSettings(_Section):
    sample_size: int = Field(20_000, ge=100)  # silhouette is quadratic: a stratified sample, never all 11M
    min_silhouette: float = Field(0.02, ge=-1, le=1)  # below this the partitions are not worth an expert each
    max_silhouette_drop: float = Field(0.05, ge=0)  # vs the previous materialisation (absolute)
    max_davies_bouldin: float = Field(5.0, gt=0)  # WARN by default
    max_cluster_fraction: float = Field(0.4, gt=0, le=1)  # WARN by default: the seed's catch-all held 41.6%
    balance_severity: Literal["WARN", "ERROR"] = "WARN"  # severity of the two checks above


class ShardSettings(_Section):
    max_samples_per_shard: int = Field(1000, ge=1)  # ~130 MB with clip tokens: many shards per worker
    max_shard_bytes: int = Field(256 * 2**20, ge=2**16)  # a shard is cut at whichever limit comes first
    include_clip_tokens: bool = True  # (77, 768) f16 per sample: what the Paris experts condition on
    include_jpg: bool = False  # the 256 px crop, for eyeballing or pixel-space training (images)
    include_mp4: bool = False  # media: video: the stored clip (H.264 mp4), for eyeballing or pixel-space training
    heldout_fraction: float = Field(0.01, ge=0, lt=1)  # cluster-stratified evaluation split, as Paris/DDM use
    # cap on the held-out set; None: 10,000 images, or 2,048 clips (Paris 2.0's evaluation set)
    heldout_max: Optional[int] = Field(None, ge=0)


class VideoSettings(_Section):
    """media: video: how filtered_images turns each downloaded video into a clip (lib/video/decode.VideoParams). The clip's
    side is filter.image_size and its displayed shorter side must reach filter.min_side, as for images."""
    fps: float = Field(8.0, gt=0)  # frames per second of the clip, sampled by presentation time (VFR plays right)
    num_frames: int = Field(17, ge=1)  # 4k+1: the causal VAE keeps frame 0 and packs the rest in fours (17 -> 5)
    min_seconds: float = Field(2.0, ge=0)  # shorter sources are refused (too_short) before any pixel is decoded
    max_seconds: float = Field(30.0, gt=0)  # how far scene_cuts: split looks for a cut-free window
    static_threshold: float = Field(0.2, ge=0)  # mean frame difference (grey levels, 32x32) below which: static
    scene_cuts: Literal["split", "reject"] = "split"  # split: the longest cut-free window; reject: refuse the clip
    cut_threshold: float = Field(20.0, gt=0)  # cut score at which a frame change is a hard cut (motion <= 3.6)
    phash_max_distance: int = Field(8, ge=0, le=32)  # bits per keyframe (first, middle, last) for near duplicates
    crf: int = Field(18, ge=0, le=51)  # H.264 quality of the stored clip every later stage decodes (38-43 dB)
    chunk_size: int = Field(16, ge=1)  # clips per filter work unit (filter.processes run units side by side)
    # what dinov2_embeddings and clip_image_embeddings see of a clip: its first frame (the Paris 2.0 router's
    # optional feature), or the normalised mean over three keyframes (first, middle, last)
    embed_frames: Literal["first", "keyframes"] = "first"

    @field_validator("num_frames")
    @classmethod
    def _four_k_plus_one(cls, value: int) -> int:
        if value % 4 != 1:
            raise ValueError(f"must be 4k+1 (1, 5, 9, 17, 33, ...) for the causal VAE, got {value}")
        return value


class SemDedupSettings(_Section):
    """SemDeDup (Abbas et al. 2023): inside each fine k-means cluster of the clustering's first stage, images
    whose embeddings have cosine similarity above 1 - eps are duplicates. `keep: paper` keeps the one farthest
    from its fine centroid and drops a row near any earlier one (the paper's rule); `keep: nearest_centroid` keeps
    the one closest to it, and only kept rows drop others (lib/dedup/semdedup.py). Off by default."""
    enabled: bool = False
    eps: float = Field(0.05, gt=0, lt=1)  # duplicates: cosine similarity > 1 - eps
    keep: Literal["paper", "nearest_centroid"] = "paper"  # paper: as facebookresearch/SemDeDup, to compare eps tables
    embedding: Literal["dinov2", "clip_image"] = "dinov2"  # which features are compared (fine clusters: DINOv2's)
    eps_table: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2)  # eps values whose removed fraction is reported


class ProtectedSettings(_Section):
    """Decontamination: training images near an image of the user's evaluation set are dropped (protected_eval)."""
    path: Optional[str] = None  # a folder of images, or a parquet/csv/jsonl of URLs (e.g. COCO val); None: off
    url_col: str = "url"  # the URL column of a table (case-insensitive)
    phash_radius: int = Field(6, ge=0, le=32)  # pHash bits within which a training image is a copy of a protected one
    # cosine similarity at or above which a training image is a near copy; None: 0.95 with real models, and no
    # embedding match with the tiny profile, whose random features are all alike (median cosine 0.83-0.89)
    min_similarity: Optional[float] = Field(None, gt=0, le=1)
    embedding: Literal["dinov2", "clip_image"] = "clip_image"  # the features compared
    heldout: bool = True  # also drop training images this near a held-out image (the split must measure unseen data)


TINY_FEATURES_NOTE = "the tiny profile's random features are all alike: set quality.protected.min_similarity to compare them"


class QualitySettings(_Section):
    """Computed quality signals (clip_image_embeddings, quality_scores): LAION's heads over CLIP ViT-L/14 image
    embeddings, and what cluster_labels drops on them before clustering."""
    # LAION improved aesthetic predictor weights (sac+logos+ava1-l14-linearMSE.pth): a path or an http(s) URL;
    # None: the paris profile's public URL, the tiny profile's random MLP of the same shape
    aesthetic_weights: Optional[str] = None
    nsfw_weights: Optional[str] = None  # LAION CLIP-based NSFW detector (ViT-L/14); same rules
    prefer: Literal["carried", "computed"] = "carried"  # the value used where the source carries its own score
    min_aesthetic: Optional[float] = None  # drop images whose aesthetic score is below this (after embeddings)
    semdedup: SemDedupSettings = SemDedupSettings()
    protected: ProtectedSettings = ProtectedSettings()


class AlertSettings(_Section):
    webhook_url: Optional[str] = None  # Slack-compatible incoming webhook; alerts.jsonl is always written
    ui_base_url: str = "http://127.0.0.1:3000"  # where alert links to runs point


class ExecutionSettings(_Section):
    """Where the model stages compute their chunks. The outputs are byte-identical under both engines, so none of
    these keys is part of any asset's code version, and chunks finished under one engine are reused by the other."""

    # local: in this process, no Ray (the demo, the tests, a laptop); ray: on a pool of Ray workers, one per GPU,
    # each loading its model once (docs/ray.md)
    engine: Literal["local", "ray"] = "local"
    # with engine ray: a running cluster ("auto" for the one `ray start` runs on this host, "ray://head:10001"
    # for a remote or KubeRay head's client port, "head:6379"); empty: start a local Ray on 127.0.0.1 for the run
    ray_address: str = ""
    # model workers to start; 0: as many as the cluster's GPUs allow (gpus_per_worker each). Set it on an
    # autoscaling cluster, whose GPU nodes appear only once workers ask for them
    num_workers: int = Field(0, ge=0)
    # GPUs each model worker holds: 1 is one model copy per GPU; 0 runs CPU workers (a cluster without GPUs).
    # Unset: what the cluster has, 1 where it has GPUs, else 0 (so Ray on a laptop just runs); the metadata says which
    gpus_per_worker: Optional[float] = Field(None, ge=0)
    # CPUs Ray reserves per model worker, for its loader threads (models.loader_threads) decoding ahead of the model;
    # Ray also sets the worker's OMP_NUM_THREADS (torch's CPU threads) to it
    cpus_per_worker: float = Field(1, ge=0)
    # CPUs per task of CPU-only work spread with map_units (per-image filtering units)
    cpus_per_task: float = Field(1, gt=0)
    # attempts after the first for a chunk whose worker died or which raised; then the stage fails naming it
    max_retries: int = Field(3, ge=0)
    # object store of the local Ray the run starts (ray_address empty): chunks are written by the workers
    # themselves, so little passes through it (the kept table once per stage)
    local_object_store_mb: int = Field(256, ge=80)

    @field_validator("ray_address")
    @classmethod
    def _address_form(cls, value: str) -> str:
        value = value.strip()
        if value and value != "auto" and not value.startswith("ray://") and ":" not in value:
            raise ValueError(f"got {value!r}: use 'auto', 'ray://HOST:10001', 'HOST:6379', or leave it empty "
                             "to start a local Ray for the run")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ExecutionSettings":
        if self.engine == "local" and self.ray_address:
            raise ValueError(f"execution.ray_address is {self.ray_address!r} but execution.engine is 'local': set "
                             "engine: ray to use that cluster, or remove ray_address")
        if self.gpus_per_worker == 0 and self.cpus_per_worker == 0:  # unset on a cluster without GPUs: checked there
            raise ValueError("execution.gpus_per_worker and execution.cpus_per_worker are both 0: a model worker "
                             "must hold a GPU or at least part of a CPU")
        if self.engine == "ray":
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise ValueError("execution.engine is 'ray' but the ray package is not installed: "
                                 "pip install 'ray[data]' into this environment (and on the cluster's nodes), "
                                 "or set engine: local")
        return self


class PartitionSettings(_Section):
    """Partitions are how the data grows: the per-image assets (raw_images through latents) are computed per
    source part of `size` rows, and the global steps (duplicates across parts, clustering, report, shards, router
    arrays) fan in over every part. Adding source rows adds parts; only those are computed."""

    # source rows per part; 0: no partitions, every asset is computed whole (the demo, a laptop trial). Parts are
    # registered from the source plan (`python -m paris_assets.parts register`) and never re-cut: rows appended
    # to the source become new parts after the last one
    size: int = Field(0, ge=0)
    # with parts added since the last clustering and K unchanged: assign their images to the existing centroids
    # (cluster_labels' metadata counts them) instead of clustering everything again
    assign_to_existing: bool = False
