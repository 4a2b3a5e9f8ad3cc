"""Quality signals per image, carried from the source or computed by LAION's heads, and what they drop.

Each signal has three stable columns: `<signal>` (the value every later step uses: filters, the shards' json,
the shard browser), `<signal>_source` ("carried": the source's own column; "computed": the head's), and
`<signal>_computed` (the head's value, always there, so it sits beside the source's own score). Where the source
carries a value, it is used unless quality.prefer is "computed" (a source whose scores are missing or zeroed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SIGNALS = ("aesthetic", "punsafe")


def scores_table(kept: pd.DataFrame, computed: dict[str, np.ndarray], prefer: str = "carried") -> pd.DataFrame:
    """image_id, and for each signal its used value, source and computed value, row-aligned with `kept`."""
    table = pd.DataFrame({"image_id": kept["image_id"].to_numpy()})
    for signal in SIGNALS:
        mine = np.asarray(computed[signal], dtype=np.float32)
        carried = pd.to_numeric(kept[signal], errors="coerce").to_numpy(np.float64) if signal in kept else \
            np.full(len(kept), np.nan)
        use_carried = ~np.isnan(carried) if prefer == "carried" else np.zeros(len(kept), bool)
        table[signal] = np.where(use_carried, carried, mine).astype(np.float32)
        table[f"{signal}_source"] = np.where(use_carried, "carried", "computed")
        table[f"{signal}_computed"] = mine
    return table


def quality_drops(scores: pd.DataFrame, min_aesthetic: float | None, max_punsafe: float) -> pd.DataFrame:
    """The rows (positions in `scores`) the quality settings drop, with reason and detail: `low_aesthetic` below
    quality.min_aesthetic; `punsafe` above filter.max_punsafe where the value is computed (carried values were
    already judged by filtered_images, before any model ran)."""
    aesthetic = scores["aesthetic"].to_numpy(np.float32)
    punsafe = scores["punsafe"].to_numpy(np.float32)
    low = aesthetic < min_aesthetic if min_aesthetic is not None else np.zeros(len(scores), bool)
    unsafe = (punsafe > max_punsafe) & (scores["punsafe_source"].to_numpy() == "computed") & ~low
    rows = np.concatenate([np.flatnonzero(low), np.flatnonzero(unsafe)])
    details = [f"aesthetic {a:.2f} ({s}) < {min_aesthetic}" for a, s in
               zip(aesthetic[low], scores["aesthetic_source"].to_numpy()[low])]
    details += [f"computed punsafe {p:.3f} > {max_punsafe}" for p in punsafe[unsafe]]
    reasons = ["low_aesthetic"] * int(low.sum()) + ["punsafe"] * int(unsafe.sum())
    order = np.argsort(rows, kind="stable")
    return pd.DataFrame({"row": rows[order].astype(np.int64), "reason": np.asarray(reasons, dtype=object)[order],
                         "detail": np.asarray(details, dtype=object)[order]})


def histogram(values: np.ndarray, edges: np.ndarray) -> list[tuple[float, float, int]]:
    """(low, high, count) per bin; values outside the edges land in the end bins."""
    values = np.clip(np.asarray(values, dtype=np.float64), edges[0], edges[-1])
    counts, _ = np.histogram(values[~np.isnan(values)], bins=edges)
    return [(float(lo), float(hi), int(n)) for lo, hi, n in zip(edges[:-1], edges[1:], counts)]


AESTHETIC_BINS = np.arange(0.0, 10.5, 0.5)  # LAION's predictor scores about 1-10; LAION-Aesthetics cut at 5, 6, 6.5
PUNSAFE_BINS = np.array([0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0])
