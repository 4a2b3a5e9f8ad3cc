"""What a part costs beyond its work: the per-image assets on the demo computed whole, then in parts, same data,
same machine, same engine; the difference divided by the parts is Dagster's (and Ray's) overhead per part.

    python -m paris_assets.bench.parts [--demo-size 192] [--parts 4] [--engine local|ray]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from dagster import AssetKey, DagsterInstance

from ..assets.common import PER_PART
from ..definitions import build_defs
from ..lib.ingest.download import source_rows
from ..parts import register
from ..settings import PROJECT_ROOT, parse_settings


def settings_for(root: Path, demo_size: int, part_size: int, engine: str):
    return parse_settings({
        "data_dir": str(root / "data"), "executor": "in_process", "source": {"kind": "demo", "demo_size": demo_size},
        "ingest": {"processes": 1, "threads": 8}, "filter": {"processes": 2}, "captions": {"source": "alt_text"},
        # two CPU model workers on Ray (this machine has no GPU), as bench/ray.py runs them; the local engine
        # reads neither key
        "execution": {"engine": engine, "gpus_per_worker": 0, "num_workers": 2},
        "partitions": {"size": part_size}}, base_dir=root)


def instance_in(folder: Path) -> DagsterInstance:
    (folder / "home").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "dagster.yaml", folder / "home" / "dagster.yaml")
    return DagsterInstance.local_temp(str(folder / "home"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m paris_assets.bench.parts", description=__doc__.splitlines()[0])
    p.add_argument("--demo-size", type=int, default=192)
    p.add_argument("--parts", type=int, default=4)
    p.add_argument("--engine", choices=("local", "ray"), default="local")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        whole_root, parts_root = Path(tmp, "whole"), Path(tmp, "parts")
        whole = settings_for(whole_root, args.demo_size, 0, args.engine)
        instance = instance_in(whole_root)
        started = time.perf_counter()
        result = build_defs(whole).resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[AssetKey(name) for name in PER_PART])
        whole_s = time.perf_counter() - started
        assert result.success, "the unpartitioned run failed"
        rows = sum(1 for _ in (whole_root / "data" / "demo_source" / "files").iterdir())
        instance = instance_in(parts_root)
        n_rows = len(source_rows(whole.resolved_source, str(parts_root / "data" / "demo_source"), whole.seed,
                                 log=lambda _m: None))  # the same seeded demo as the whole run's
        split = settings_for(parts_root, args.demo_size, -(-n_rows // args.parts), args.engine)
        keys = register(split, instance, log=lambda _m: None)
        job = build_defs(split).resolve_job_def("one_part")
        seconds = []
        for key in keys:
            t = time.perf_counter()
            assert job.execute_in_process(instance=instance, partition_key=key).success, key
            seconds.append(time.perf_counter() - t)
    parts_s = sum(seconds)
    print(f"demo of {n_rows} source rows ({rows} files), engine {args.engine}, per-image assets "
          f"({', '.join(PER_PART)})")
    print(f"  whole, one run:           {whole_s:7.1f} s")
    print(f"  in {len(keys)} parts, a run each: {parts_s:7.1f} s  (" + ", ".join(f"{s:.1f}" for s in seconds) + ")")
    print(f"  overhead per part:        {(parts_s - whole_s) / len(keys):7.1f} s  "
          f"(ratio parts/whole {parts_s / whole_s:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
