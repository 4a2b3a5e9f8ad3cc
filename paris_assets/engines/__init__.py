"""Where the work runs: one engine object, chosen once from the settings' `execution` section.

A stage hands its work to the engine and never asks which one it is: `engine_for(execution)` is the only code that
reads `execution.engine`. Two engines today, one module each: `local` (this machine: spawned processes and a
model in this process) and `ray` (a Ray cluster, connected or started for the duration).

A third engine (Slurm, Spark, ...) is one new module here implementing `Engine`, one line in ENGINES and the
name in settings.ExecutionSettings.engine. What it must provide, and what the stages count on:

- outputs byte-identical to the local engine's, whatever the number of workers: work units and chunks are
  computed by the same functions, only where they run changes;
- workers that write into the run's folders themselves (crop shards, chunk files), so they must see this
  host's filesystem or the object store the settings name;
- errors that name the unit or chunk that failed, after its retries.
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager, Iterable, Protocol, runtime_checkable

from .loader import ModelLoader
from .local import LocalEngine
from .ray import RayEngine

# map_units(fn, units) -> fn(unit) for each unit, yielded in the units' order (fn and units picklable)
MapUnits = Callable[[Callable[[Any], Any], list], Iterable]


@runtime_checkable
class Engine(Protocol):
    """What a stage may ask of the engine it runs under."""

    name: str  # the execution.engine value that selects it

    def session(self, log: Callable[[str], None] = print) -> ContextManager[str]:
        """The engine ready for the duration of the block (a cluster connected, or started and stopped);
        yields a description of where the work runs, for logs."""
        ...

    def units(self, processes: int, label: str, log: Callable[[str], None] = print
              ) -> ContextManager[tuple[str, MapUnits]]:
        """For the block: (description for the metadata's `engine`, map_units). `processes` is the stage's local
        setting (filter.processes), for engines that run on this machine; `label` names the stage in errors."""
        ...

    def model_pool(self, loader: ModelLoader, label: str, chunks: int, log: Callable[[str], None] = print
                   ) -> ContextManager[Any]:
        """For the block: the role's model, or an object standing in for it with its plain attributes (ref,
        revision, device, dtype) and `run_chunks(store, job, log, label)` (lib/run/stages.ChunkEngine) that
        computes a stage's `chunks` chunks on workers, each calling `loader()` once. Only `loader` travels."""
        ...

    def download_options(self) -> dict:
        """img2dataset options this engine imposes (its distributor and how to reach the cluster), or {}."""
        ...

    def metadata(self, stats: dict) -> dict:
        """A model stage's materialisation metadata from its run stats: `engine`, `workers`, and what else this
        engine knows (cluster address, GPUs, start-up)."""
        ...


ENGINES: dict[str, Callable[[Any], Engine]] = {"local": LocalEngine, "ray": RayEngine}


def engine_for(execution) -> Engine:
    """The engine the `execution` settings section names (settings.ExecutionSettings)."""
    return ENGINES[execution.engine](execution)


__all__ = ["ENGINES", "Engine", "LocalEngine", "MapUnits", "ModelLoader", "RayEngine", "engine_for"]
