"""A run killed outright (SIGKILL, what the OOM killer does to GPU jobs) must not block the next one: the next
command-line run frees the `gpu` pool slot the dead run holds, marks that run failed, and reuses its chunks."""

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

from paris_assets.executors import TAG, free_dead_slot_holders
from paris_assets.lib.store.processes import start_stamp
from paris_assets.settings import PROJECT_ROOT


def dagster_cli(instance, config: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, DAGSTER_HOME=instance.root_directory, PARIS_CONFIG=str(config))
    return subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m",
                             "paris_assets.definitions", "--select", "latents"], cwd=PROJECT_ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def test_a_killed_run_does_not_block_the_next(trained, tmp_path):
    settings, _run, instance, data = trained
    raw = settings().as_dict()
    raw["models"].update(chunk_size=8, latent_batch_size=4)  # many small chunks: killed half-way for sure
    config = tmp_path / "paris.yaml"
    config.write_text(yaml.safe_dump(raw))
    chunks = str(data / ".staging" / "latents-chunks-*" / "chunk-*.done")
    before = set(glob.glob(chunks))

    first = dagster_cli(instance, config, tmp_path / "first.log")
    deadline = time.time() + 300
    while len(set(glob.glob(chunks)) - before) < 2 and first.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    finished = set(glob.glob(chunks)) - before
    assert len(finished) >= 2, (tmp_path / "first.log").read_text()[-3000:]
    dead = next(r for r in instance.get_runs() if r.status == DagsterRunStatus.STARTED)
    claimed = instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
    assert [s.run_id for s in claimed] == [dead.run_id]  # the dead run still holds the only slot

    second = dagster_cli(instance, config, tmp_path / "second.log")
    try:
        second.wait(timeout=240)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    log = (tmp_path / "second.log").read_text()
    assert second.returncode == 0, log[-3000:]
    assert f"run {dead.run_id} was killed while holding a slot" in log
    assert f"latents: reusing {len(finished)}/" in log  # the dead run's finished chunks were kept
    assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
    assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots


class _Log:
    def __init__(self):
        self.lines = []

    def warning(self, message):
        self.lines.append(message)


def test_a_live_holder_or_one_on_another_host_is_left_alone(tmp_path):
    instance = DagsterInstance.local_temp(str(tmp_path))
    here = os.uname().nodename
    started = start_stamp(os.getpid())
    ticks, _, boot = started.partition("@")
    runs = {"alive": f"{here} {os.getpid()} {started}",
            "elsewhere": "other-host-xyz 1 0.0",
            # our pid, but started one tick earlier: a process that had this pid before us, now dead
            "reused_pid": f"{here} {os.getpid()} {int(ticks) - 1}@{boot}"}
    instance.event_log_storage.set_concurrency_slots("gpu", len(runs))
    ids = {}
    for i, (name, tag) in enumerate(runs.items()):
        run = instance.add_run(DagsterRun(job_name="__ASSET_JOB", run_id=f"00000000-0000-0000-0000-{i:012d}",
                                          status=DagsterRunStatus.STARTED, tags={TAG: tag}))
        ids[name] = run.run_id
        assert instance.event_log_storage.claim_concurrency_slot("gpu", run.run_id, "latents").is_claimed
    log = _Log()
    assert free_dead_slot_holders(instance, log, by="test") == [ids["reused_pid"]]
    assert instance.get_run_by_id(ids["reused_pid"]).status == DagsterRunStatus.FAILURE
    assert any(ids["elsewhere"] in line and "another host" in line for line in log.lines)
    holders = {s.run_id for s in instance.event_log_storage.get_concurrency_info("gpu").claimed_slots}
    assert holders == {ids["alive"], ids["elsewhere"]}
