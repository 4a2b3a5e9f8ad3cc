"""Progress lines: done / total, rate and ETA, throttled to one line per interval plus the last."""

from paris_assets.lib.run.progress import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_throttled_and_the_last_always_comes():
    clock, lines = Clock(), []
    progress = Progress("latents", 1000, "rows", lines.append, every=10, clock=clock)
    for _ in range(99):  # 99 batches of 10 rows, one per second
        clock.now += 1
        progress.advance(10)
    assert len(lines) == 9  # at 10 s, 20 s, ... 90 s
    assert lines[0] == "latents: 100/1,000 rows (10%), 10.0 rows/s, ETA 1:30"
    clock.now = 95  # 5 s after the last line: only the end forces this one
    progress.advance(10)
    assert len(lines) == 10 and lines[-1] == "latents: 1,000/1,000 rows (100%), 10.5 rows/s, ETA done"


def test_long_etas_read_as_hours():
    clock, lines = Clock(), []
    progress = Progress("captions", 11_000_000, "images", lines.append, every=60, clock=clock)
    clock.now = 60
    progress.advance(6_000)
    assert lines == ["captions: 6,000/11,000,000 images (0%), 100.0 images/s, ETA 30:32:20"]


def test_work_done_before_the_start_counts_toward_the_total_not_the_rate():
    clock, lines = Clock(), []
    progress = Progress("raw_images: downloaded", 1000, "URLs", lines.append, every=10, clock=clock, done=600)
    clock.now = 10
    progress.advance(100)
    assert lines == ["raw_images: downloaded: 700/1,000 URLs (70%), 10.0 URLs/s, ETA 0:30"]
