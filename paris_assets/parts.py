"""Source parts from the command line: register them, see them, and backfill what is missing (README: Partitions).

    python -m paris_assets.parts register   # add the parts the source plan has beyond the registered ones
    python -m paris_assets.parts status     # each part: which per-image assets it has
    python -m paris_assets.parts backfill   # register, run every part missing an asset (a run each), then the fan-in

Runs go into the project's Dagster instance (DAGSTER_HOME), so the UI shows them as if launched there. A part
whose run fails is named at the end and the fan-in is not run; run `backfill` again once the cause is fixed:
it runs only the parts still missing something. Each part's record of its rows is kept in
<data_dir>/source_parts.json; `register` and `backfill` refuse a source whose registered rows moved.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from dagster import AssetKey, DagsterInstance

from .assets.common import PER_PART, demo_dir
from .definitions import FAN_IN, build_defs
from .lib.ingest.download import source_rows
from .lib.ingest.partitions import PARTS, RECORDS, check_parts, part_record, part_rows, plan_parts, sorted_parts
from .lib.store import storage
from .media import media_for
from .settings import Settings, SettingsError, load_settings


def register(settings: Settings, instance: DagsterInstance, log=print) -> list[str]:
    """Add the source plan's new parts to the instance; returns every registered part, in row order. Refuses
    (PartsMoved, a ValueError) a source whose registered rows moved, before adding anything."""
    plan = source_rows(settings.resolved_source, str(demo_dir(settings)), settings.seed, log,
                       demo=media_for(settings).demo)
    ids = plan["image_id"].tolist()
    registered = instance.get_dynamic_partitions(PARTS)
    new = plan_parts(len(ids), settings.partitions.size, registered)
    records = read_records(settings.data_root)
    unrecorded = check_parts(registered, ids, records, lambda row: f"item {ids[row]} ({plan['where'].iloc[row]})")
    parts = sorted_parts([*registered, *new])
    # written before the parts are added: a part the instance holds always has its record, unless it predates them
    write_records(settings.data_root, {**{k: records[k] for k in registered if k in records}, **unrecorded,
                                       **{k: part_record(ids[slice(*part_rows(k))]) for k in new}}, parts)
    if new:
        instance.add_dynamic_partitions(PARTS, new)
    log(f"source plan: {len(ids):,} rows; {len(registered)} parts registered before, {len(new)} added"
        + (f" ({new[0]} .. {new[-1]})" if new else "") + f"; rows of every part checked against {RECORDS}")
    if unrecorded:
        keys = sorted_parts(unrecorded)
        log(f"recorded the rows of {len(keys)} parts registered before parts kept a record ({keys[0]} .. {keys[-1]}): "
            "taken as the source holds them now, which could not be checked against the registration; from now on "
            "register and backfill refuse a source whose rows in them move")
    return parts


def read_records(root: str) -> dict[str, dict]:
    """Each registered part's record of its rows (lib/ingest/partitions.part_record); {} before any was kept."""
    path = storage.local_path(root) / RECORDS if storage.is_local(root) else storage.root_upath(root) / RECORDS
    return json.loads(path.read_text())["parts"] if path.exists() else {}


def write_records(root: str, records: dict[str, dict], parts: list[str]) -> None:
    if storage.is_local(root):
        storage.local_path(root).mkdir(parents=True, exist_ok=True)
    body = {"about": "each source part's rows: sha256 over their stable ids (16 hex digits each), newline-joined, "
                     "in row order; first and last id (paris_assets/lib/ingest/partitions.py)",
            "parts": {key: records[key] for key in parts}}
    storage.write_atomic(root, RECORDS, json.dumps(body, indent=1).encode())


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
    try:
        return run(args, settings, instance)
    except ValueError as exc:  # a source whose registered rows moved or shrank, parts edited by hand
        print(exc, file=sys.stderr)
        return 2


def run(args: argparse.Namespace, settings: Settings, instance: DagsterInstance) -> int:
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
