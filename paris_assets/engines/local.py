"""The `local` engine: everything on this machine, no Ray (the demo, the tests, a laptop, one GPU box)."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterable, Iterator

from ..lib.run.pool import map_in_processes

if TYPE_CHECKING:
    from ..settings import ExecutionSettings
    from .loader import ModelLoader


class LocalEngine:
    """Work units in `processes` spawned processes (lib/run/pool), the model loaded in this process, img2dataset
    with the distributor ingest.distributor names."""

    name = "local"

    def __init__(self, execution: "ExecutionSettings | None" = None):
        self.execution = execution

    def session(self, log: Callable[[str], None] = print) -> ContextManager[str]:
        return nullcontext("this machine")

    @contextmanager
    def units(self, processes: int, label: str, log: Callable[[str], None] = print
              ) -> Iterator[tuple[str, Callable[[Callable, list], Iterable]]]:
        yield f"local, {processes} processes", partial(map_in_processes, processes=processes)

    @contextmanager
    def model_pool(self, loader: "ModelLoader", label: str, chunks: int, log: Callable[[str], None] = print
                   ) -> Iterator[Any]:
        """The model itself, loaded here: the stage computes its chunks one after the other in this process."""
        yield loader()

    def download_options(self) -> dict:
        return {}

    def metadata(self, stats: dict) -> dict:
        return {"engine": stats["engine"], "workers": stats["workers"]}
