"""The Ray engine's model pool: a stage's chunks computed on Ray actors, one per GPU, each loading its model once.

The stage's work is the same `BatchedJob` the local engine runs (lib/run/stages.py); only where chunk i is computed
changes. Each worker reads its chunk's rows, decodes and preprocesses them in its own loader threads, runs the
model and saves the chunk into the shared ChunkStore itself (atomic files, `.done` last), so resumption, chunk
keys and assembly are the local engine's. Nothing but a few numbers travels back to the driver.

Why actors and not Ray Data `map_batches`: the unit of work that must be retried, resumed and written atomically
is the chunk, and a chunk is one actor call here; through Ray Data the rows would flow as blocks that need order
kept (`preserve_order`), a sink re-implementing the ChunkStore, and CPU reservations tuned so read tasks do not
starve behind the GPU actors (a silent hang on a 2-core machine). Decoding stays next to the model, in threads
of the same process, as it does locally; a GPU node has the cores for it (`models.loader_threads`).

Faults: a worker process that dies mid-chunk is restarted by Ray (the model loaded again) and its chunk retried,
up to `max_retries` times; an exception inside a chunk is retried as often. A chunk that still fails fails the
stage with an error naming it, once the chunks in flight have been saved.

Ray is imported only when the pool is used: the local engine never needs it.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any, Callable, Sequence

from ..lib.store.chunks import ChunkStore, chunk_stats, plan_chunks


class WorkFailed(RuntimeError):
    """A chunk (or a unit of map_units) failed on every attempt; the message names it and the last error."""


class _ChunkWorker:
    """One Ray actor: a model loaded once, then chunks computed and saved one at a time."""

    def __init__(self, load: Callable[[], Any], attributes: Sequence[str]):
        started = time.perf_counter()
        self.model = load()
        self.load_seconds = time.perf_counter() - started
        self.attributes = attributes
        self.job_id, self.job = None, None

    def describe(self) -> dict:
        import ray

        return {"attributes": {name: getattr(self.model, name) for name in self.attributes
                               if hasattr(self.model, name)},
                "worker": self._where(ray), "load_seconds": self.load_seconds}

    @staticmethod
    def _where(ray) -> dict:
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()[:12],
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}

    def compute(self, store: ChunkStore, job_ref: list, i: int) -> dict:
        """Compute chunk i with this worker's model and save it into `store`. The job (which carries the rows
        reader, e.g. the kept table) is fetched once per worker, not shipped with every chunk; it comes wrapped
        in a list so Ray hands over the reference rather than the object."""
        import ray

        started = time.perf_counter()
        if self.job_id != job_ref[0].hex():
            self.job, self.job_id = ray.get(job_ref[0]), job_ref[0].hex()
        model_before = self.job.model_time.seconds
        start, stop = store.bounds(i)
        store.save(i, self.job(self.model, start, stop))
        return {"chunk": i, "seconds": time.perf_counter() - started,
                "model_seconds": self.job.model_time.seconds - model_before, **self._where(ray)}


class ModelPool:
    """Stands in for a loaded model on the driver and computes a stage's chunks on Ray actors, one per
    `gpus_per_worker` GPUs (or `cpus_per_worker` CPUs when that is 0), each holding the model `load()` returns.
    `gpus_per_worker` None takes what the cluster has: 1 where it has GPUs, else 0 (CPU workers); the stats say
    which (`gpus_per_worker_from`).

    `load` must be picklable and build the model where it runs (so the device is the worker's): a module-level
    function or a partial of one, never a loaded model. All workers start loading at once; the pool is ready as
    soon as the first has its model, and the others join the run as they become ready. The model's plain
    `attributes` (id, revision, device, dtype, ...) are read from the first worker and served here, so a stage
    reads them as from a local model; every worker must report the same ones (the same weights on the same kind
    of device), or the pool refuses to run, since the chunk key holds them."""

    def __init__(self, load: Callable[[], Any], *, workers: int = 0, chunks: int | None = None,
                 gpus_per_worker: float | None = None, cpus_per_worker: float = 1, max_retries: int = 3,
                 attributes: Sequence[str] = ("ref", "revision", "device", "dtype", "scaling_factor",
                                              "shift_factor"),
                 label: str = "", log: Callable[[str], None] = print):
        import ray

        self.label, self.log, self.max_retries = label, log, max_retries
        self.gpus_per_worker, self.gpus_per_worker_from = gpus_for_workers(gpus_per_worker, ray.cluster_resources())
        self.cpus_per_worker = cpus_per_worker
        if self.gpus_per_worker == 0 and cpus_per_worker == 0:
            raise RuntimeError(f"{label}: model workers of 0 GPU (from {self.gpus_per_worker_from}) and 0 CPU "
                               "(execution.cpus_per_worker): give CPU workers a CPU share (cpus_per_worker above 0)")
        n = workers or self._workers_the_cluster_holds(ray)
        n = max(1, min(n, chunks)) if chunks is not None else n  # no model loaded for a worker with nothing to do
        actor_class = ray.remote(num_gpus=self.gpus_per_worker, num_cpus=cpus_per_worker, max_restarts=max_retries,
                                 max_task_retries=max_retries)(_ChunkWorker)
        started = time.perf_counter()
        self.actors = [actor_class.remote(load, tuple(attributes)) for _ in range(n)]
        self._loading = {actor.describe.remote(): actor for actor in self.actors}
        self.ready: deque = deque()
        self.attributes: dict = {}
        self._wait_ready(block=True)
        self.startup_seconds = time.perf_counter() - started

    def _workers_the_cluster_holds(self, ray) -> int:
        resources = ray.cluster_resources()
        if self.gpus_per_worker:
            n = int(resources.get("GPU", 0) // self.gpus_per_worker)
            what = f"{resources.get('GPU', 0):g} GPUs for workers of {self.gpus_per_worker:g} GPU each"
        else:
            n = int(resources.get("CPU", 0) // self.cpus_per_worker) if self.cpus_per_worker else 0
            what = f"{resources.get('CPU', 0):g} CPUs for workers of {self.cpus_per_worker:g} CPU each"
        if n < 1:
            raise RuntimeError(
                f"{self.label}: the Ray cluster has {what}: no model worker fits. On a cluster without GPUs set "
                "execution.gpus_per_worker: 0 (CPU workers); on an autoscaling cluster that adds GPU nodes on "
                "demand set execution.num_workers to how many workers to ask for")
        return n

    def _wait_ready(self, block: bool, refs: Sequence = ()) -> list:
        """Move the workers that have loaded their model into `ready` (waiting for one if `block`); returns
        which of `refs` (chunk results) finished meanwhile."""
        import ray

        waiting = list(refs) + list(self._loading)
        if not waiting:
            return []
        done, _ = ray.wait(waiting, num_returns=1, timeout=None if block else 0)
        finished = [ref for ref in done if ref not in self._loading]
        for ref in done:
            if ref in self._loading:
                actor = self._loading.pop(ref)
                try:
                    info = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    raise RuntimeError(f"{self.label}: a Ray worker could not load its model: "
                                       f"{_last_error(exc)}") from None
                if self.attributes and info["attributes"] != self.attributes:
                    raise RuntimeError(
                        f"{self.label}: Ray workers loaded different models or devices ({info['attributes']} vs "
                        f"{self.attributes}): give every worker the same kind of GPU and the same weights")
                self.attributes = self.attributes or info["attributes"]
                self.ready.append(actor)
        return finished

    def wait_until_ready(self) -> "ModelPool":
        """Block until every worker has its model loaded. A run does not need this (workers join as they get
        ready); measurements do, to tell start-up from work."""
        started = time.perf_counter()
        while self._loading:
            self._wait_ready(block=True)
        self.startup_seconds += time.perf_counter() - started
        return self

    def __getattr__(self, name: str):
        attributes = self.__dict__.get("attributes", {})
        if name in attributes:
            return attributes[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r} (the workers' model does not have it, "
                             "or it is not among the pool's `attributes`)")

    def run_chunks(self, store: ChunkStore, job, log: Callable[[str], None], label: str) -> dict:
        """Compute every chunk missing from `store` with `job`, one chunk in flight per worker, handed out as
        workers free up (or finish loading)."""
        import ray

        started = time.perf_counter()
        todo, progress = plan_chunks(store, log, label)
        log(f"{label}: {len(todo)} chunks on {len(self.actors)} Ray workers "
            f"({self.gpus_per_worker:g} GPU, {self.cpus_per_worker:g} CPU each; {len(self.ready)} ready)")
        job_ref = [ray.put(job)]
        queue, running, results, failures, used = deque(todo), {}, [], [], set()
        while queue or running:
            while queue and self.ready and not failures:  # after a failure: the running chunks finish, no more start
                actor, i = self.ready.popleft(), queue.popleft()
                ref = actor.compute.options(retry_exceptions=True).remote(store, job_ref, i)
                running[ref] = (i, actor, time.perf_counter())
                used.add(actor)
            if not running and (failures or not self._loading):
                break
            for ref in self._wait_ready(True, list(running)):
                i, actor, submitted = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as exc:  # the worker is gone for good (restarts used up)
                    failures.append((i, _last_error(exc)))
                    continue
                except ray.exceptions.RayTaskError as exc:
                    failures.append((i, _last_error(exc)))
                    self.ready.append(actor)
                    continue
                if not store.done(i):
                    raise RuntimeError(
                        f"{label}: chunk {i} was saved by a worker on node {result['node']} but is not in "
                        f"{store.folder} as this process sees it: the chunk folder (under data_dir's .staging) must "
                        "be on storage every Ray node shares")
                # the round trip beyond the worker's own time: scheduling, the job's first fetch, the reply
                result["overhead"] = time.perf_counter() - submitted - result["seconds"]
                results.append(result)
                self.ready.append(actor)
                progress.advance(store.bounds(i)[1] - store.bounds(i)[0])
        if failures:
            raise WorkFailed(self._failure_message(store, failures, label))
        stats = chunk_stats(store, todo, started)
        stats.update(
            engine="ray", workers=len(self.actors), workers_used=len(used), gpus_per_worker=self.gpus_per_worker,
            gpus_per_worker_from=self.gpus_per_worker_from,
            gpus=self.gpus_per_worker * len(self.actors), model_seconds=sum(r["model_seconds"] for r in results),
            startup_seconds=round(self.startup_seconds, 3),
            overhead_per_chunk_s=round(sum(r["overhead"] for r in results) / len(results), 3) if results else None,
            worker_devices=sorted({r["cuda_visible_devices"] for r in results}),
            chunk_workers={r["chunk"]: r["pid"] for r in results})
        return stats

    def _failure_message(self, store: ChunkStore, failures: list[tuple[int, str]], label: str) -> str:
        lines = []
        for i, error in sorted(failures):
            start, stop = store.bounds(i)
            lines.append(f"chunk {i} (rows {start}-{stop - 1} of {store.n_rows}) failed after "
                         f"{self.max_retries + 1} attempts; last error: {error}")
        done = store.n_chunks - len(store.missing())
        return (f"{label}: " + "; ".join(lines) + f". The {done} finished chunks are kept in {store.folder}: fix "
                "the cause and materialise again to compute only the missing ones (execution.max_retries sets "
                "the attempts)")

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors, self._loading, self.ready = [], {}, deque()


def gpus_for_workers(requested: float | None, resources: dict) -> tuple[float, str]:
    """(GPUs per model worker, what chose it): an explicit value as it is; None, 1 on a cluster with a GPU and 0
    (CPU workers) on one without, so that trying Ray on a laptop needs no setting."""
    if requested is not None:
        return requested, "execution.gpus_per_worker"
    gpus = resources.get("GPU", 0)
    return (1 if gpus >= 1 else 0), f"the cluster's {gpus:g} GPUs (execution.gpus_per_worker unset)"


def _last_error(exc: Exception) -> str:
    """The error a chunk raised, without Ray's wrapping (its traceback is in the worker's log)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
