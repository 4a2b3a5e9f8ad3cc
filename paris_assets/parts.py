"""Source parts from the command line: register them, see them, and backfill what is missing (README: Partitions).

    python -m paris_assets.parts register   # add the parts the source plan has beyond the registered ones
    python -m paris_assets.parts status     # each part: which per-image assets it has
    python -m paris_assets.parts backfill   # register, run every part missing an asset (a run each), then the fan-in

Runs go into the project's Dagster instance (DAGSTER_HOME), so the UI shows them as if launched there. A part
whose run fails is named at the end and the fan-in is not run; run `backfill` again once the cause is fixed:
it runs only the parts still missing something.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from dagster import AssetKey, DagsterInstance

from .assets.common import PER_PART, demo_dir
from .definitions import FAN_IN, build_defs
from .lib.ingest.download import count_source_rows
from .lib.ingest.partitions import PARTS, plan_parts, sorted_parts
from .media import media_for
from .settings import Settings, SettingsError, load_settings


def register(settings: Settings, instance: DagsterInstance, log=print) -> list[str]:
    """Add the source plan's new parts to the instance; returns every registered part, in row order."""
    rows = count_source_rows(settings.resolved_source, str(demo_dir(settings)), settings.seed, log,
                             demo=media_for(settings).demo)
    registered = instance.get_dynamic_partitions(PARTS)
    new = plan_parts(rows, settings.partitions.size, registered)
    if new:
        instance.add_dynamic_partitions(PARTS, new)
    log(f"source plan: {rows:,} rows; {len(registered)} parts registered before, {len(new)} added"
        + (f" ({new[0]} .. {new[-1]})" if new else ""))
    return sorted_parts([*registered, *new])


def missing(instance: DagsterInstance, parts: list[str]) -> dict[str, list[str]]:
    """For each part, the per-image assets it has never materialised (parts missing nothing are left out)."""
    done = {name: instance.get_materialized_partitions(AssetKey(name)) for name in PER_PART}
    return {part: [name for name in PER_PART if part not in done[name]] for part in parts
            if any(part not in done[name] for name in PER_PART)}


def backfill(settings: Settings, instance: DagsterInstance, every: bool = False, log=print) -> int:
    parts = register(settings, instance, log)
    defs = build_defs(settings)
    todo = parts if every else list(missing(instance, parts))
    log(f"{len(todo)} of {len(parts)} parts to run" + ("" if every else " (the others have every per-image asset)"))
    failed = []
    for i, part in enumerate(todo, 1):
        started = time.perf_counter()
        result = defs.resolve_job_def("one_part").execute_in_process(
            instance=instance, partition_key=part, raise_on_error=False, tags={"paris/backfill": "parts"})
        log(f"  [{i}/{len(todo)}] {part}: {'ok' if result.success else 'FAILED'} in {time.perf_counter() - started:.0f} s "
            f"(run {result.run_id})")
        if not result.success:
            failed.append((part, result.run_id))
    if failed:
        log(f"{len(failed)} parts failed: " + ", ".join(f"{p} (run {r})" for p, r in failed)
            + ". Read the failed step's log in the UI (Runs), fix the cause, then run backfill again: it runs only "
            "the parts still missing something. The fan-in waits for every part.")
        return 1
    started = time.perf_counter()
    result = defs.resolve_job_def("fan_in").execute_in_process(instance=instance, raise_on_error=False,
                                                               tags={"paris/backfill": "fan_in"})
    log(f"fan-in over {len(parts)} parts ({', '.join(FAN_IN)}): {'ok' if result.success else 'FAILED'} in "
        f"{time.perf_counter() - started:.0f} s (run {result.run_id})")
    return 0 if result.success else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m paris_assets.parts", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("register", "status", "backfill"))
    p.add_argument("--config", help="the settings file (default: PARIS_CONFIG or paris.yaml)")
    p.add_argument("--all", action="store_true", help="backfill: run every part again, not only the missing ones")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not settings.partitions.size:
        print("partitions.size is 0 in the settings: there are no parts; set it (e.g. 100000) to partition the "
              "per-image assets, or run everything at once with `make demo` / the UI", file=sys.stderr)
        return 2
    instance = DagsterInstance.get()
    if args.command == "register":
        register(settings, instance)
    elif args.command == "status":
        parts = sorted_parts(instance.get_dynamic_partitions(PARTS))
        gaps = missing(instance, parts)
        for part in parts:
            print(f"{part}  {'complete' if part not in gaps else 'missing ' + ', '.join(gaps[part])}")
        print(f"{len(parts)} parts, {len(parts) - len(gaps)} complete")
    else:
        return backfill(settings, instance, every=args.all)
    return 0


if __name__ == "__main__":
    sys.exit(main())
