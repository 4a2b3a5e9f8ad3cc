"""Source parts: how a data set grows without being redone.

A part is a run of consecutive rows of the source plan (the table raw_images downloads, in its order), named by
its row range: `rows-000000000-000100000` holds rows [0, 100000). Parts are registered once and never re-cut:
rows appended to the source become new parts after the last registered one, so a part's name always means the
same rows and its outputs stay valid. The per-image assets are computed per part; the global steps read every
part one after the other in the order of their names (which is row order), so what they decide depends on the
set of parts, never on the order the parts were computed in.
"""

from __future__ import annotations

import re

PARTS = "source_parts"  # the Dagster dynamic partitions' name
_KEY = re.compile(r"^rows-(\d{9})-(\d{9})$")


def part_key(start: int, stop: int) -> str:
    return f"rows-{start:09d}-{stop:09d}"


def part_rows(key: str) -> tuple[int, int]:
    """(first row, last row + 1) of a part's name."""
    match = _KEY.match(key)
    if not match or int(match[1]) >= int(match[2]):
        raise ValueError(f"{key!r} is not a source part name (rows-<first row, 9 digits>-<end row, 9 digits>)")
    return int(match[1]), int(match[2])


def sorted_parts(keys) -> list[str]:
    """Part names in row order (their names sort that way; checked, so a foreign key cannot slip in)."""
    return sorted(keys, key=part_rows)


def plan_parts(n_rows: int, size: int, registered: list[str]) -> list[str]:
    """The parts to add for a source of `n_rows` rows: `size` rows each, from the end of the last registered part.
    Registered parts must tile rows [0, end) with no gap or overlap, and the source must still hold them."""
    if size < 1:
        raise ValueError(f"partitions.size is {size}: set it to the rows per part (e.g. 100000) to use parts")
    end = 0
    for key in sorted_parts(registered):
        start, stop = part_rows(key)
        if start != end:
            raise ValueError(f"registered part {key} starts at row {start}, but the parts before it end at row {end}: "
                             "the parts were edited by hand; delete the odd ones in the UI (Partitions) and register again")
        end = stop
    if n_rows < end:
        raise ValueError(f"the source plan has {n_rows:,} rows but parts up to row {end:,} are registered: rows were "
                         "removed or reordered, so registered parts no longer mean the same images. Use a new data_dir "
                         "(and a new Dagster instance) for the changed source, or restore the removed rows")
    return [part_key(start, min(start + size, n_rows)) for start in range(end, n_rows, size)]
