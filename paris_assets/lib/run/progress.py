"""Progress lines for the run log: done / total, rate and ETA, at most one line every `every` seconds (and one
at the end), so a run over 11M images logs a few hundred lines rather than one per batch."""

from __future__ import annotations

import time
from typing import Callable


class Progress:
    def __init__(self, label: str, total: int, unit: str = "images", log: Callable[[str], None] = print,
                 every: float = 10.0, clock: Callable[[], float] = time.monotonic, done: int = 0):
        self.label, self.total, self.unit, self.log, self.every, self.clock = label, total, unit, log, every, clock
        self.done = self.already = done  # `done` at the start (resumed work) counts toward the total, not the rate
        self.started = self.last = clock()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if self.done >= self.total or now - self.last >= self.every:
            self.last = now
            self.log(self.message(now))

    def message(self, now: float | None = None) -> str:
        elapsed = max((self.clock() if now is None else now) - self.started, 1e-9)
        rate = (self.done - self.already) / elapsed
        left = max(self.total - self.done, 0)
        eta = "done" if left == 0 else ("unknown" if rate == 0 else _duration(left / rate))
        share = 100 * self.done / self.total if self.total else 100.0
        return (f"{self.label}: {self.done:,}/{self.total:,} {self.unit} ({share:.0f}%), "
                f"{rate:,.1f} {self.unit}/s, ETA {eta}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
