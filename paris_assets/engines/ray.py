"""The `ray` engine: the work of a stage spread over a Ray cluster, connected (or started) for the duration.

- units: a filter's work units as plain Ray tasks (map_units below), results in the units' order.
- model pool: a stage's chunks on Ray actors, one per GPU, each loading its model once (ray_pool.ModelPool).
- download: img2dataset's own `ray` distributor on the same cluster.

Ray is imported only when the engine is used: the local engine never needs it.
"""

from __future__ import annotations

from collections import deque
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterable, Iterator

from ..lib.run.ray_session import WORKER_ENV, _loopback_only, ray_session  # noqa: F401 (tests, bench)
from .ray_pool import ModelPool, WorkFailed, _last_error, gpus_for_workers

if TYPE_CHECKING:
    from ..settings import ExecutionSettings
    from .loader import ModelLoader

__all__ = ["RayEngine", "ModelPool", "WorkFailed", "gpus_for_workers", "map_units", "ray_session"]

class RayEngine:
    """execution.engine: ray. Each piece of work opens a session on the cluster the `execution` section names
    (ray_address; empty starts a local Ray on 127.0.0.1 for the run) and closes it when done. Workers write
    their outputs (crop shards, chunks) themselves, so they must share this host's filesystem: a local Ray, or a
    cluster with a shared mount."""

    name = "ray"

    def __init__(self, execution: "ExecutionSettings"):
        self.execution = execution

    def session(self, log: Callable[[str], None] = print) -> ContextManager[str]:
        return ray_session(self.execution.ray_address, object_store_mb=self.execution.local_object_store_mb,
                           log=log)

    @contextmanager
    def units(self, processes: int, label: str, log: Callable[[str], None] = print
              ) -> Iterator[tuple[str, Callable[[Callable, list], Iterable]]]:
        """Ray tasks of execution.cpus_per_task CPUs each (`processes`, a local setting, is not used)."""
        run = self.execution
        with self.session(log) as where:
            yield f"ray: {where}", partial(map_units, cpus_per_task=run.cpus_per_task, max_retries=run.max_retries,
                                           label=label)

    @contextmanager
    def model_pool(self, loader: "ModelLoader", label: str, chunks: int, log: Callable[[str], None] = print
                   ) -> Iterator[ModelPool]:
        """A ModelPool of the loader's role (no more workers than `chunks`), closed at the end."""
        run = self.execution
        loader.prepare()  # the tiny profile's models are built once here, not raced by the workers
        with self.session(log):
            pool = ModelPool(loader, workers=run.num_workers, chunks=chunks, gpus_per_worker=run.gpus_per_worker,
                             cpus_per_worker=run.cpus_per_worker, max_retries=run.max_retries, label=label, log=log)
            try:
                yield pool
            finally:
                pool.close()

    def download_options(self) -> dict:
        """img2dataset's `ray` distributor on this engine's cluster, whatever ingest.distributor says."""
        return {"distributor": "ray", "ray": {"address": self.execution.ray_address,
                                              "object_store_mb": self.execution.local_object_store_mb}}

    def metadata(self, stats: dict) -> dict:
        """A model stage's metadata: the cluster, its workers and GPUs (a list becomes JSON metadata)."""
        return {"engine": stats["engine"], "workers": stats["workers"],
                "ray_address": self.execution.ray_address or "local (started for the run)",
                "workers_used": stats["workers_used"], "gpus": stats["gpus"],
                "gpus_per_worker": stats["gpus_per_worker"], "worker_devices": list(stats["worker_devices"]),
                "worker_startup_s": stats["startup_seconds"],
                "overhead_per_chunk_s": stats["overhead_per_chunk_s"] or 0.0,
                "gpus_per_worker_from": stats["gpus_per_worker_from"]}


def map_units(fn: Callable[[Any], Any], units: Iterable, *, cpus_per_task: float = 1, max_retries: int = 3,
              in_flight: int = 0, label: str = "") -> Iterator:
    """fn(unit) for every unit as plain Ray tasks (CPU work: decoding, checks, hashes), yielded in the units'
    order. A task whose process dies, or that raises, is retried `max_retries` times; then the iteration stops
    with an error naming the unit. At most `in_flight` tasks run or wait at once (default: twice the cluster's
    CPUs), so a long list of units does not flood the object store. `fn` must be picklable (a module-level
    function or a partial of one) and return something picklable."""
    import ray

    task = ray.remote(num_cpus=cpus_per_task, max_retries=max_retries, retry_exceptions=True)(fn)
    limit = in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    pending: deque = deque()
    for index, unit in enumerate(units):
        pending.append((index, task.remote(unit)))
        if len(pending) >= limit:
            yield _unit_result(pending.popleft(), max_retries, label)
    while pending:
        yield _unit_result(pending.popleft(), max_retries, label)


def _unit_result(entry: tuple, max_retries: int, label: str):
    import ray

    index, ref = entry
    try:
        return ray.get(ref)
    except (ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError) as exc:
        raise WorkFailed(f"{label}: unit {index} failed after {max_retries + 1} attempts; last error: "
                          f"{_last_error(exc)}") from None
