"""`make demo`: materialise every asset on the built-in demo data into the project's Dagster instance."""

from __future__ import annotations

import os
import sys
import time

from dagster import DagsterInstance

from .definitions import build_defs
from .media import media_for
from .settings import load_settings


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = load_settings()
    defs = build_defs(settings)
    started = time.perf_counter()
    instance = DagsterInstance.get()  # DAGSTER_HOME: the project's instance, the one `make ui` shows
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
    seconds = time.perf_counter() - started
    print()
    print(f"demo run {'succeeded' if result.success else 'FAILED'} in {seconds:.0f} s (run {result.run_id})")
    took = step_seconds(instance, result.run_id)
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        meta = {k: v.value for k, v in mat.metadata.items() if isinstance(v.value, (int, float, str))}
        picked = {k: meta[k] for k in ("requested", "downloaded", "failed", "kept", "rejected", "kept_fraction",
                                       "rows", "images_per_s", "model_time_share", "k", "silhouette", "largest_fraction",
                                       "dropped", "samples", "heldout_samples", "shards") if k in meta}
        picked = {k: round(v, 3) if isinstance(v, float) else v for k, v in picked.items()}
        name = mat.asset_key.to_user_string()
        print(f"  {name:<22} {took.get(name, 0):6.1f} s  {picked}")
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            check = event.event_specific_data
            step = f"{check.asset_key.to_user_string()}_{check.check_name}"
            print(f"  check {check.check_name:<34} {took.get(step, 0):5.1f} s  {'passed' if check.passed else 'FAILED'}")
    media = media_for(settings).make_args
    print(f"\ndata under {settings.data_root}; open the UI with `make ui{media}`, then http://127.0.0.1:3000;"
          f" browse the shards with `make browse{media}`, then http://127.0.0.1:8765")
    return 0 if result.success else 1


def step_seconds(instance: DagsterInstance, run_id: str) -> dict[str, float]:
    """Wall-clock seconds per step of a run (an asset's step key is its name), from the run's event log."""
    started, took = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not entry.step_key:
            continue
        if event.event_type_value == "STEP_START":
            started[entry.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and entry.step_key in started:
            took[entry.step_key] = entry.timestamp - started[entry.step_key]
    return took


if __name__ == "__main__":
    sys.exit(main())
