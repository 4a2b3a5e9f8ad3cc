"""The images cluster_labels drops after the model stages, before clustering, each with a reason: what remains
is what the experts train on. Every drop is recorded (image_id, reason, detail) in cluster_labels/dropped.parquet.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class Pruning:
    """The rows still in (positions in every part's kept rows, one after the other) and the drops so far."""

    def __init__(self, image_ids: np.ndarray, rows: np.ndarray | None = None):
        self.image_ids = np.asarray(image_ids)
        self.rows = np.arange(len(self.image_ids), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        self._drops: list[pd.DataFrame] = []

    def drop(self, positions: np.ndarray, reason: str, details) -> int:
        """Drop `positions` (indices into the current rows) for `reason`, one detail each; returns how many."""
        positions = np.asarray(positions, dtype=np.int64)
        if not len(positions):
            return 0
        if len(np.unique(positions)) != len(positions):
            raise ValueError(f"{reason}: a row dropped twice")
        self._drops.append(pd.DataFrame({"image_id": self.image_ids[self.rows[positions]].astype(str),
                                         "reason": reason, "detail": list(details)}))
        self.rows = np.delete(self.rows, positions)
        return len(positions)

    def record(self, table: pd.DataFrame) -> None:
        """Drops made before the rows were known (fan_in_duplicates: image_id, reason, detail)."""
        if len(table):
            self._drops.append(table[["image_id", "reason", "detail"]].astype({"image_id": str}))

    def dropped(self) -> pd.DataFrame:
        if not self._drops:
            return pd.DataFrame({"image_id": pd.Series([], dtype=str), "reason": pd.Series([], dtype=str),
                                 "detail": pd.Series([], dtype=str)})
        return pd.concat(self._drops, ignore_index=True)

    def counts(self) -> dict[str, int]:
        return self.dropped()["reason"].value_counts().to_dict()


def nearest_per_row(rows: np.ndarray, partners: np.ndarray, values: np.ndarray, best: str = "max"):
    """One (row, partner, value) per distinct row: its best match (largest value, or smallest with best="min"),
    rows ascending."""
    rows, partners, values = (np.asarray(a) for a in (rows, partners, values))
    if not len(rows):
        return rows.astype(np.int64), partners.astype(np.int64), values
    order = np.lexsort((-values if best == "max" else values, rows))
    first = np.r_[True, rows[order][1:] != rows[order][:-1]]
    pick = order[first]
    return rows[pick].astype(np.int64), partners[pick].astype(np.int64), values[pick]
