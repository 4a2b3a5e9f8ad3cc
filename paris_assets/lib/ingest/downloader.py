"""img2dataset as a child process: run over a URL table into a raw_images folder, its shards' progress logged,
its process group recorded so that a killed run's workers are stopped before the next run writes there."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd

from ..run.progress import Progress
from ..store.processes import same_process, start_stamp


# "<host> <process group> <its leader's create time>" of the img2dataset run filling a raw_images folder
DOWNLOADER = ".downloader"


def download_with_img2dataset(table: pd.DataFrame, out_dir: str, *, processes: int, threads: int,
                              samples_per_shard: int, timeout: float, retries: int, distributor: str,
                              user_agent_token: str | None, respect_opt_out: bool, log=print,
                              ray: dict | None = None) -> dict:
    """Run img2dataset over `table` (image_id, url) into out_dir; resumes shards a killed run finished.
    Progress (URLs done / total, rate, ETA) is logged as img2dataset finishes shards.

    img2dataset runs in a child process that leads its own process group, recorded in out_dir/.downloader:
    if this process is killed outright, its workers would go on writing into out_dir, so the next run over
    the same folder stops that group before it resumes.
    """
    os.makedirs(out_dir, exist_ok=True)
    _stop_leftover_download(out_dir, log)
    url_list = os.path.join(out_dir, "_input.parquet")
    if not os.path.exists(url_list):
        table[["url", "image_id"]].to_parquet(url_list + ".tmp", index=False)
        os.replace(url_list + ".tmp", url_list)
    options = {"url_list": url_list, "output_folder": out_dir, "processes_count": processes, "thread_count": threads,
               "number_sample_per_shard": samples_per_shard, "timeout": int(max(1, round(timeout))),
               "retries": retries, "distributor": distributor, "user_agent_token": user_agent_token,
               "disallowed_header_directives": None if respect_opt_out else [],
               "ray": ray or {"address": "", "object_store_mb": 256}}
    started = time.perf_counter()
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")  # importing albumentations would call PyPI
    with _shard_progress(out_dir, len(table), log):
        child = subprocess.Popen([sys.executable, "-m", "paris_assets.lib.ingest.downloader", json.dumps(options)],
                                 start_new_session=True, env=env)
        marker = Path(out_dir) / DOWNLOADER
        marker.write_text(f"{socket.gethostname()} {child.pid} {start_stamp(child.pid)}")
        try:
            code = child.wait()
        except BaseException:  # the run was terminated: take the workers down with it
            _kill_group(child.pid)
            child.wait()
            raise
        marker.unlink(missing_ok=True)
    if code != 0:
        raise RuntimeError(f"img2dataset exited with status {code} (its messages are in the log above); "
                           f"the shards it finished in {out_dir} are kept for the next run")
    return {"seconds": time.perf_counter() - started}


def _stop_leftover_download(out_dir: str, log) -> None:
    marker = Path(out_dir) / DOWNLOADER
    if not marker.exists():
        return
    host, group, started = (marker.read_text().split() + ["", "", ""])[:3]
    # the group is the download's if its leader is the recorded process, or gone: Linux does not reuse an id
    # while a group of that id exists. A live process of that id started at another time is someone else's.
    if host == socket.gethostname() and group.isdigit() and same_process(int(group), started) is not False \
            and _kill_group(int(group)):
        log(f"raw_images: stopped the img2dataset processes a killed run left writing into {out_dir} "
            f"(process group {group})")
    marker.unlink(missing_ok=True)


def _kill_group(group: int) -> bool:
    """SIGKILL every process of a process group; True if there was one. Waits until none is left running."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _group_running(group):
        time.sleep(0.1)
    return True


def _group_running(group: int) -> bool:
    import psutil

    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == group and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def _img2dataset_main(options: dict) -> None:
    """The child process: img2dataset in its main thread (it spawns workers and installs signal handlers). With
    the ray distributor, Ray is connected first as the engine's download options say (`ray`: address and local object
    store; an empty address starts a local Ray for the download), and img2dataset's shards become Ray tasks."""
    ray = options.pop("ray", None)
    if options["distributor"] != "ray":
        return _img2dataset(options)
    from ..run.ray_session import ray_session

    with ray_session(ray["address"], object_store_mb=ray["object_store_mb"]):
        _img2dataset(options)


def _img2dataset(options: dict) -> None:
    import img2dataset

    img2dataset.download(
        input_format="parquet",
        url_col="url",
        save_additional_columns=["image_id"],
        output_format="webdataset",
        disable_all_reencoding=True,  # keep the original bytes; filtered_images decodes them properly
        extract_exif=False,  # orientation is read from the bytes at decode time
        compute_hash="sha256",
        enable_wandb=False,
        incremental_mode="incremental",  # a raw_images folder is keyed by its input, so done shards are valid
        **options,
    )


@contextlib.contextmanager
def _shard_progress(out_dir: str, total: int, log, poll: float = 2.0):
    """While the block runs, watch img2dataset's per-shard `NNNNN_stats.json` files (written as each shard
    completes) and log URLs done / total; a last line when the block ends."""
    stop = threading.Event()
    seen: set[str] = set()

    def finished() -> int:
        count = 0
        for path in sorted(Path(out_dir).glob("*_stats.json")):
            if path.name not in seen:
                try:
                    count += int(json.loads(path.read_text())["count"])
                except Exception:  # being written (or not img2dataset's): the next poll
                    continue
                seen.add(path.name)
        return count

    progress = Progress("raw_images: downloaded", total, "URLs", log, done=finished())  # shards a killed run left

    def tally() -> None:
        count = finished()
        if count:
            progress.advance(count)

    def watch() -> None:
        while not stop.wait(poll):
            tally()

    thread = threading.Thread(target=watch, name="raw_images-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    tally()
    if progress.done < total:
        log(progress.message())


if __name__ == "__main__":
    _img2dataset_main(json.loads(sys.argv[1]))
