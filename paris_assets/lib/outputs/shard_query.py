"""Filtered, sorted pages of the shard index's samples: what the shard browser's sample grid asks for."""

from __future__ import annotations

import numpy as np
import pandas as pd

FILTER_COLUMNS = ("cluster", "split", "aesthetic_min", "aesthetic_max", "aesthetic_source", "punsafe_max",
                  "distance_min", "distance_max", "has_url", "has_caption", "text", "sort")
SORTS = {"shard": ("order", True), "aesthetic": ("aesthetic", True), "-aesthetic": ("aesthetic", False),
         "distance": ("centroid_distance", True), "-distance": ("centroid_distance", False)}


def query(samples: pd.DataFrame, filters: dict, page: int = 1, per_page: int = 48) -> tuple[int, pd.DataFrame]:
    """Samples matching `filters` (keys of FILTER_COLUMNS, values as a URL query gives them; empty means
    any), as (total matching, one page of rows). Raises ValueError naming a bad filter value."""
    unknown = set(filters) - set(FILTER_COLUMNS)
    if unknown:
        raise ValueError(f"unknown filter(s) {sorted(unknown)}; use {list(FILTER_COLUMNS)}")
    f = {k: v for k, v in filters.items() if v not in (None, "") and not (k != "text" and v == "any")}
    mask = np.ones(len(samples), bool)
    if "cluster" in f:
        mask &= samples["cluster"].isin([_int("cluster", c) for c in str(f["cluster"]).split(",")]).to_numpy()
    if "split" in f:
        if f["split"] not in ("experts", "heldout"):
            raise ValueError(f"split must be experts, heldout or any, not {f['split']!r}")
        mask &= ((samples["split"] == "heldout") == (f["split"] == "heldout")).to_numpy()
    if "aesthetic_source" in f:
        if f["aesthetic_source"] not in ("carried", "computed"):
            raise ValueError(f"aesthetic_source must be carried, computed or any, not {f['aesthetic_source']!r}")
        mask &= (samples["aesthetic_source"] == f["aesthetic_source"]).to_numpy()
    for key, col, op in (("aesthetic_min", "aesthetic", np.greater_equal), ("aesthetic_max", "aesthetic", np.less_equal),
                         ("punsafe_max", "punsafe", np.less_equal),
                         ("distance_min", "centroid_distance", np.greater_equal),
                         ("distance_max", "centroid_distance", np.less_equal)):
        if key in f:
            values = pd.to_numeric(samples[col], errors="coerce").to_numpy(float)
            mask &= op(values, _float(key, f[key]))  # NaN scores never match a bound
    for key, col in (("has_url", "url"), ("has_caption", "caption")):
        if key in f:
            want = _yes_no(key, f[key])
            present = samples[col].fillna("").astype(str).str.strip().ne("").to_numpy()
            mask &= present == want
    if "text" in f:
        needle = str(f["text"]).lower()
        mask &= np.logical_or.reduce([samples[col].fillna("").astype(str).str.lower().str.contains(needle, regex=False)
                                      .to_numpy() for col in ("caption", "alt_text")])
    hits = samples[mask]
    sort = f.get("sort", "shard")
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {list(SORTS)}, not {sort!r}")
    col, ascending = SORTS[sort]
    hits = hits.sort_values([col, "order"], ascending=[ascending, True], na_position="last", kind="stable")
    page = served_page(page, len(hits), per_page)
    return len(hits), hits.iloc[(page - 1) * per_page: page * per_page]


def served_page(page: int, total: int, per_page: int) -> int:
    """The page asked for, within 1..last (a page past the end, e.g. after a rescan shrank it, is the last)."""
    return min(max(1, int(page)), max(1, -(-total // per_page)))


def _int(key: str, value) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{key} must be whole numbers separated by commas, not {value!r}") from None


def _float(key: str, value) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not np.isfinite(number):
        raise ValueError(f"{key} must be a number, not {value!r}")
    return number


def _yes_no(key: str, value) -> bool:
    if str(value).lower() not in ("yes", "no", "true", "false"):
        raise ValueError(f"{key} must be yes, no or any, not {value!r}")
    return str(value).lower() in ("yes", "true")
