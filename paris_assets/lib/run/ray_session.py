"""Ray connected for the duration of a piece of work: a running cluster by address, or a local Ray on 127.0.0.1
started for it and stopped after. Used by the Ray engine (engines/ray.py) and by img2dataset's `ray` distributor
in the download's child process (lib/ingest/downloader.py). Ray is imported only when a session opens."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from typing import Callable, Iterator

# Environment the workers need when they are not children of this process (a remote cluster): model caches
# and offline mode. Only these names are passed; credentials belong in the cluster's own configuration.
WORKER_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "TRANSFORMERS_OFFLINE", "PARIS_STAGING_DIR",
              "NO_ALBUMENTATIONS_UPDATE")


@contextmanager
def ray_session(address: str = "", *, num_cpus: int | None = None, num_gpus: int | None = None,
                object_store_mb: int = 256, log: Callable[[str], None] = print) -> Iterator[str]:
    """Ray, connected for the duration: a Ray already initialised in this process is used as it is; `address`
    ("auto", "ray://head:10001", "head:6379") connects to a running cluster; empty starts a local Ray on
    127.0.0.1 for the run (logical `num_gpus` on a machine without GPUs, for tests) and stops it at the end.
    Yields a description of the cluster for the logs and metadata."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not address:
        _loopback_only()
    import ray

    if ray.is_initialized():
        yield _describe_cluster(ray, "this process's Ray")
        return
    env = {name: os.environ[name] for name in WORKER_ENV if name in os.environ}
    started, temp = time.perf_counter(), None
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True)
        where = f"the Ray cluster at {address}"
    else:
        temp = tempfile.mkdtemp(prefix="paris-ray-")  # short: Ray's socket paths must stay under 108 bytes
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                 object_store_memory=object_store_mb * 2**20, _temp_dir=temp, runtime_env={"env_vars": env})
        where = "a local Ray on 127.0.0.1"
    description = _describe_cluster(ray, where)
    log(f"connected to {description} in {time.perf_counter() - started:.1f} s")
    try:
        yield description
    finally:
        ray.shutdown()
        if temp:
            shutil.rmtree(temp, ignore_errors=True)  # the session's logs and sockets; the errors were reported


def _loopback_only() -> None:
    """Keep a local Ray on 127.0.0.1: on Linux Ray otherwise binds the host's outward address (it maps
    127.0.0.1 to it), which a laptop on a café network has no reason to open. The switch is read at import, so
    it is set in the environment (the raylet and workers inherit it) and, if Ray is already imported, on the
    module too. It stays set for the process: a process that later joins a remote cluster by `host:port` (not
    `ray://`) must not have started a local one first."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import sys

    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
        constants.ENABLE_RAY_CLUSTER = False


def _describe_cluster(ray, where: str) -> str:
    resources = ray.cluster_resources()
    return f"{where} ({int(resources.get('CPU', 0))} CPUs, {int(resources.get('GPU', 0))} GPUs)"
