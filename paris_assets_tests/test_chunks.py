"""Resumable chunks: a failure half-way, then a re-run that computes only what is missing."""

import numpy as np
import pytest

from paris_assets.lib.chunks import ChunkStore, ordered_map, run_chunks, work_key


def compute(start, stop, advance=None):
    rows = np.arange(start, stop)
    return {"x": np.stack([rows, rows * 2], axis=1).astype(np.float32), "y": rows.astype(np.int64)}


def test_resume_after_a_failure_gives_the_same_result(tmp_path):
    calls = []

    def flaky(start, stop, advance):
        calls.append(start)
        if start == 40 and len(calls) == 5:  # only the first run dies
            raise RuntimeError("killed at 80%")
        return compute(start, stop)

    store = ChunkStore(tmp_path / "work", n_rows=50, chunk_size=10)
    with pytest.raises(RuntimeError, match="killed"):
        run_chunks(store, flaky, log=lambda m: None)
    assert calls == [0, 10, 20, 30, 40]
    calls.clear()
    stats = run_chunks(ChunkStore(tmp_path / "work", 50, 10), flaky, log=lambda m: None)
    assert calls == [40] and stats["chunks_reused"] == 4 and stats["chunks_computed"] == 1
    store.assemble("x", tmp_path / "x.npy")
    uninterrupted = ChunkStore(tmp_path / "clean", 50, 10)
    run_chunks(uninterrupted, compute, log=lambda m: None)
    uninterrupted.assemble("x", tmp_path / "x_clean.npy")
    assert np.array_equal(np.load(tmp_path / "x.npy"), np.load(tmp_path / "x_clean.npy"))
    assert np.load(tmp_path / "x.npy", mmap_mode="r").shape == (50, 2)


def test_progress_within_chunks(tmp_path):
    lines = []

    def batched(start, stop, advance):
        for _ in range(start, stop, 4):
            advance(4)  # batches of 4 in chunks of 10: the last batch over-reports and is clipped to the chunk
        return compute(start, stop)

    run_chunks(ChunkStore(tmp_path, 20, 10), batched, log=lines.append, label="latents", every=0)
    assert [line.split(" rows")[0] for line in lines] == [
        f"latents: {n}/20" for n in (4, 8, 10, 14, 18, 20)]


def test_half_written_chunk_is_not_trusted(tmp_path):
    store = ChunkStore(tmp_path, n_rows=20, chunk_size=10)
    store.save(0, compute(0, 10))
    (tmp_path / "chunk-000001.x.npy").write_bytes(b"partial")  # a crash before the .done marker
    assert store.done(0) and not store.done(1)


def test_wrong_row_count_is_refused(tmp_path):
    with pytest.raises(ValueError, match="expected 10"):
        ChunkStore(tmp_path, 20, 10).save(0, {"x": np.zeros(9)})


def test_ordered_map_keeps_order():
    import time

    out = list(ordered_map(lambda i: (time.sleep(0.01 * (5 - i % 5)), i)[1], range(20), threads=3, ahead=4))
    assert out == list(range(20))


def test_work_key_changes_with_any_part():
    assert work_key("a", 1) == work_key("a", 1) != work_key("a", 2)
