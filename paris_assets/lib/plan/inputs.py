"""What a plan reads and returns: PlanInputs (plain values) and the Plan of stage and asset rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .figures import (
    A100,
    CPUS_PER_GPU,
    CROP_JPEG_BYTES_256,
    DEFAULT_MFU,
    PARTITION_SIZE,
    RAW_JPEG_BYTES,
    STAGES,
    STORED_CLIP_BYTES_256,
    VIDEO_FIGURES,
    VIDEO_STAGES,
)
from .flops import PARIS_CONFIGS, PARIS_IDS, PARIS_VIDEO_IDS

@dataclass(frozen=True)
class PlanInputs:
    """Everything a plan depends on. `configs` maps role -> (model id, config dict)."""
    images: int
    gpus: int = 8
    cpus: int | None = None  # cores in all (ingest, filtering, decoding for the GPUs); None: gpus x cpus_per_gpu
    cpus_per_gpu: int = CPUS_PER_GPU
    partition_size: int = PARTITION_SIZE
    gpu_name: str = A100["name"]
    gpu_tflops: float = A100["tflops"]
    gpu_hbm_gbs: float = A100["hbm_gbs"]
    mfu: float = DEFAULT_MFU
    write_gbs: float | None = None  # aggregate write bandwidth to data_dir, GB/s; None: not modelled
    rates: dict[str, float] = field(default_factory=dict)  # stage -> images/s (per GPU, per core, or overall)
    configs: dict[str, tuple[str, dict]] = field(default_factory=lambda: {r: (i, PARIS_CONFIGS[i])
                                                                          for r, i in PARIS_IDS.items()})
    image_size: int = 256
    captions_blip2: bool = True
    max_new_tokens: int = 30
    caption_batch_size: int = 16
    loader_threads: int = 2  # models.loader_threads: threads decoding ahead of each GPU's model
    k: int = 8
    include_clip_tokens: bool = True
    include_jpg: bool = False
    max_samples_per_shard: int = 1000
    max_shard_bytes: int = 256 * 2 ** 20
    heldout_fraction: float = 0.01
    heldout_max: int = 10_000
    raw_bytes: int = RAW_JPEG_BYTES
    crop_bytes_256: int = CROP_JPEG_BYTES_256
    notes: tuple[str, ...] = ()
    # media: video (Paris 2.0): clips instead of images; `images` then counts clips
    media: str = "image"
    num_frames: int = 17  # video.num_frames (4k+1)
    fps: float = 8.0  # video.fps
    embed_frames: str = "first"  # video.embed_frames: first frame, or keyframes (first, middle, last)
    include_mp4: bool = False  # shards.include_mp4
    t5_tokens: int = 226  # T5's padded length (models/t5_encoder.MAX_LENGTH)
    # T5's float32 `wo` products: FP32 without TF32 (PyTorch's default for matmuls; this project leaves it)
    gpu_fp32_tflops: float = A100["fp32_tflops"]
    raw_video_bytes: int = int(VIDEO_FIGURES["source video"][0])
    clip_bytes_256: int = STORED_CLIP_BYTES_256  # a 17-frame clip at 256 px
    video_configs: dict[str, tuple[str, dict]] = field(default_factory=lambda: {
        r: (i, PARIS_CONFIGS[i]) for r, i in PARIS_VIDEO_IDS.items()})

    @property
    def video(self) -> bool:
        return CLIPS[self.media]

    @property
    def stages(self) -> tuple[str, ...]:
        return VIDEO_STAGES if self.video else STAGES

    @property
    def total_cpus(self) -> int:
        return self.cpus if self.cpus is not None else self.gpus * self.cpus_per_gpu


@dataclass
class StageRow:
    stage: str
    runs_on: str  # "GPU" (data-parallel over gpus), "CPU" (over all cores), "one process" (a global step)
    partitions: int | str
    rate: float  # images/s per GPU, per core, or of the one process
    rate_unit: str
    rate_source: str
    gpu_hours: float
    core_hours: float
    wall_hours: float
    writes: str
    bound: str = ""  # what sets the wall time: GPU, CPU, decoding CPU, writes (--write-gbs), measured
    wall_is_lower_bound: bool = False  # ingest: the network and remote hosts are not modelled

    @property
    def partition_seconds(self) -> float | None:
        """Wall seconds of one partition when the whole cluster works on it (None for the fan-in steps)."""
        return self.wall_hours * 3600 / self.partitions if isinstance(self.partitions, int) else None


@dataclass
class AssetRow:
    asset: str
    rows: int  # images it holds (training samples for the shards and router arrays)
    bytes_per_row: float
    fixed_bytes: float
    total_bytes: float
    what: str


@dataclass
class Plan:
    inputs: PlanInputs
    stages: list[StageRow]
    assets: list[AssetRow]
    models: dict[str, dict]
    partitions: int
    heldout: int
    shards: dict[str, int]
    wall_hours_serial: float
    wall_hours_overlapped: float
    assumptions: list[tuple[str, str, str]]

    def stage(self, name: str) -> StageRow:
        return next(s for s in self.stages if s.stage == name)

    def asset(self, name: str) -> AssetRow:
        return next(a for a in self.assets if a.asset == name)

    def as_dict(self) -> dict:
        out = asdict(self)
        for row, stage in zip(out["stages"], self.stages):
            row["partition_seconds"] = stage.partition_seconds
        out["inputs"]["configs"] = {role: model_id for role, (model_id, _) in self.inputs.configs.items()}
        if self.inputs.video:
            out["inputs"]["video_configs"] = {role: model_id for role, (model_id, _) in
                                              self.inputs.video_configs.items()}
        else:  # an image plan's JSON as before
            for key in VIDEO_INPUTS:
                out["inputs"].pop(key)
        out["inputs"]["total_cpus"] = self.inputs.total_cpus
        out["totals"] = {"gpu_hours": sum(s.gpu_hours for s in self.stages),
                         "core_hours": sum(s.core_hours for s in self.stages),
                         "storage_bytes": sum(a.total_bytes for a in self.assets),
                         "wall_hours_serial": self.wall_hours_serial,
                         "wall_hours_overlapped": self.wall_hours_overlapped}
        return out


# whether a media's items are clips (the planner's one lookup of `media`)
CLIPS = {"image": False, "video": True}
VIDEO_INPUTS = ("media", "num_frames", "fps", "embed_frames", "include_mp4", "t5_tokens", "gpu_fp32_tflops",
                "raw_video_bytes", "clip_bytes_256", "video_configs")
