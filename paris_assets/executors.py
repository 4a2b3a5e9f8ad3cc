"""The executors the definitions use: Dagster's own in-process and multiprocess executors, each wrapped so a run
first records which process runs it and frees pool slots (the `gpu` pool) that dead runs still hold.

A run killed outright (SIGKILL, the OOM killer) never releases its slot, and without a daemon nothing marks it
failed: the next run would wait on "Step blocked by limit for pool gpu" for good. Each run records its host, pid
and process start time as run tags; the next run, on the same host, sees that the holder is gone, marks it
failed and frees its slots. A holder on another host is only reported, with what to do."""

from __future__ import annotations

from dagster import DagsterRunStatus, executor, in_process_executor, multiprocess_executor
from dagster._core.definitions.executor_definition import multiple_process_executor_requirements
from dagster._core.executor.base import Executor

from .lib.store.processes import is_running, this_process

TAG = "paris/process"  # host pid start-time of the process running the run
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def free_dead_slot_holders(instance, log, by: str = "") -> list[str]:
    """Free every pool slot (claimed or queued) held by a run that has finished or whose recorded process is gone;
    mark the dead ones failed. Returns the freed run ids."""
    storage = instance.event_log_storage
    holders = set()
    for pool in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(pool)
        holders |= {(pool, s.run_id) for s in info.claimed_slots} | {(pool, s.run_id) for s in info.pending_steps}
    freed = []
    for pool, run_id in sorted(holders):
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status not in FINISHED:
            recorded = (run.tags.get(TAG) or "").split()
            alive = is_running(*recorded) if len(recorded) == 3 else None
            if alive is None:
                log.warning(f"pool {pool}: run {run_id} holds a slot and ran on another host or recorded no process; "
                            f"if it is dead, free the slot in the UI: Runs, the run, Terminate, then Force termination")
                continue
            if alive:
                continue
            instance.report_run_failed(run, f"its process ({' '.join(recorded)}) is gone: killed before it could "
                                            f"finish. Marked failed, and its pool slots freed, by run {by}")
            log.warning(f"pool {pool}: run {run_id} was killed while holding a slot (process {recorded[1]} is gone); "
                        f"marked it failed and freed its slots")
        storage.free_concurrency_slots_for_run(run_id)
        freed.append(run_id)
    return freed


class _Reaping(Executor):
    def __init__(self, inner: Executor):
        self._inner = inner

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context, execution_plan):
        identity = this_process()
        plan_context.instance.add_run_tags(plan_context.run_id,
                                           {TAG: f"{identity['host']} {identity['pid']} {identity['started']}"})
        free_dead_slot_holders(plan_context.instance, plan_context.log, by=plan_context.run_id)
        yield from self._inner.execute(plan_context, execution_plan)


def _reaping(inner_def, requirements=None):
    @executor(name=inner_def.name, config_schema=inner_def.config_schema, requirements=requirements)
    def reaping_executor(init_context):
        return _Reaping(inner_def.executor_creation_fn(init_context))

    reaping_executor.__doc__ = inner_def.description
    return reaping_executor


reaping_in_process_executor = _reaping(in_process_executor)
reaping_multiprocess_executor = _reaping(multiprocess_executor, multiple_process_executor_requirements())
