"""The local process pool: work units on this machine's cores, results in the units' order.

The one runner both filters (lib/images/filtering, lib/video/filtering) fall back to and the local engine
(engines/local.py) maps units with. A unit's exception reaches the caller as the unit raised it; a process that
dies stops the run with concurrent.futures' BrokenProcessPool. Either way the units after it do not run.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator


def map_in_processes(fn: Callable[[Any], Any], units: Iterable, processes: int = 1) -> Iterator:
    """fn(unit) for every unit, yielded in the units' order: in up to `processes` spawned processes when there are
    more than one of each (fork is unsafe under Dagster's threads), else here, one unit after the other. `fn` and
    the units must pickle when processes run them (a module-level function, plain values)."""
    units = list(units)
    if processes > 1 and len(units) > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(processes, len(units)), mp_context=ctx) as pool:
            yield from pool.map(fn, units)
    else:
        yield from map(fn, units)
