"""Source parts: how a data set grows without being redone.

A part is a run of consecutive rows of the source plan (the table raw_images downloads, in its order), named by
its row range: `rows-000000000-000100000` holds rows [0, 100000). Parts are registered once and never re-cut:
rows appended to the source become new parts after the last registered one, so a part's name always means the
same rows and its outputs stay valid. The per-image assets are computed per part; the global steps read every
part one after the other in the order of their names (which is row order), so what they decide depends on the
set of parts, never on the order the parts were computed in.

Each registered part keeps a record of its rows (`part_record`: a sha256 over their stable ids, in order), so a
source whose registered rows moved (a file that sorts first added to a folder, a reordered URL list) is refused
instead of silently giving an old part's name to other images (`check_parts`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence

PARTS = "source_parts"  # the Dagster dynamic partitions' name
RECORDS = "source_parts.json"  # beside the data: each registered part's record; Dagster keeps no partition metadata
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


class PartsMoved(ValueError):
    """Rows of registered parts are no longer where they were in the source plan; the message says which and what
    to do."""


def part_record(ids: Sequence[str]) -> dict:
    """What a part remembers of its rows: sha256 over their stable ids in order (newline-joined), the first and the
    last id (so a refusal can say what moved)."""
    return {"sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(), "first": ids[0], "last": ids[-1]}


def check_parts(registered: list[str], ids: Sequence[str], records: dict[str, dict],
                where: Callable[[int], str]) -> dict[str, dict]:
    """Each registered part's record against the rows `ids` the source plan holds now (it holds them all:
    `plan_parts` refuses a shorter plan). Returns the records of the parts that had none (registered before
    records were kept), taken from the rows as they are now. Raises PartsMoved naming the first part whose rows
    moved, the first row found moved (`where(row)` names an item: its URL, path or demo id) and what to do."""
    unrecorded = {}
    for key in sorted_parts(registered):
        start, stop = part_rows(key)
        now = part_record(ids[start:stop])
        if key not in records:
            unrecorded[key] = now
        elif now["sha256"] != records[key]["sha256"]:
            raise PartsMoved(
                f"source part {key} no longer holds the rows it was registered with: "
                f"{_what_moved(key, records[key], ids, where)}. "
                "Rows the parts were cut from moved (a file that sorts before the registered ones was added to the "
                "folder, or the URL list was reordered or edited), so this part's name, and every later one's, "
                "would now mean other images than its outputs hold. Either restore the source's order (name new "
                "files so that they sort after every registered one; append new URLs at the end of the list) and "
                "register again, or start afresh for the changed source: a new data_dir and a new Dagster instance "
                "(DAGSTER_HOME), then register")
    return unrecorded


def _what_moved(key: str, was: dict, ids: Sequence[str], where: Callable[[int], str]) -> str:
    start, stop = part_rows(key)
    for row, old in ((start, was["first"]), (stop - 1, was["last"])):
        if ids[row] != old:
            now_at = next((i for i, item in enumerate(ids) if item == old), None)
            return (f"row {row:,} held item {old} when it was registered and holds {where(row)} now; "
                    + (f"{where(now_at)} is at row {now_at:,} now" if now_at is not None
                       else f"item {old} is no longer in the source"))
    return (f"its first and last rows (items {was['first']} and {was['last']}) are where they were, but rows between "
            "them moved or changed")
