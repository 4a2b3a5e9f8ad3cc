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
    few hundred bytes of settings). `settings` holds only LOADING_INPUTS; every other section has its defaults."""

    settings: "Settings"
    role: str

    @classmethod
    def for_role(cls, settings: "Settings", role: str) -> "ModelLoader":
        inputs = {name: getattr(settings, name) for name in LOADING_INPUTS}
        return cls(type(settings).model_construct(**inputs), role)  # already validated as a whole

    def prepare(self) -> None:
        """What must happen once before workers load: the tiny profile's models built (not raced by workers)."""
        from ..models.profiles import build_model

        build_model(self.settings, self.role)

    def __call__(self) -> Any:
        from ..models.profiles import load_model

        return load_model(self.settings, self.role)
