"""What a model worker receives: the role and the settings that loading its model reads, nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..settings import Settings

# The settings build_model and load_model read (models/profiles.py): the models and captions sections, the
# seed, the data folder (where the tiny profile's models live), the media and the settings file's folder (relative
# model paths). A section profiles.py comes to read must be added here, or workers load with its defaults.
# Everything else stays on the driver: the alerts webhook, the source's URLs, storage options.
LOADING_INPUTS = ("media", "data_dir", "seed", "models", "captions", "base_dir")


@dataclass(frozen=True)
class ModelLoader:
    """A role's model, loaded where it is called: what an engine's model pool runs on each worker (picklable, a
    few hundred bytes). It carries the role and the values of LOADING_INPUTS, and builds from them, where it runs,
    a Settings whose every other section has its defaults."""

    inputs: dict
    role: str

    @classmethod
    def for_role(cls, settings: "Settings", role: str) -> "ModelLoader":
        return cls({name: getattr(settings, name) for name in LOADING_INPUTS}, role)

    @property
    def settings(self) -> "Settings":
        from ..settings import Settings

        return Settings.model_construct(**self.inputs)  # validated as a whole on the driver

    def prepare(self) -> None:
        """What must happen once before workers load: the tiny profile's models built (not raced by workers)."""
        from ..models.profiles import build_model

        build_model(self.settings, self.role)

    def __call__(self) -> Any:
        from ..models.profiles import load_model

        return load_model(self.settings, self.role)
