"""Resumable chunks: a failure half-way, then a re-run that computes only what is missing."""

import numpy as np
import pytest

from paris_assets.lib.store.arrays import link_chunk_store, open_array
from paris_assets.lib.store.chunks import ChunkStore, ordered_map, run_chunks, work_key

from .arrays_on_disk import read_with_numpy


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
    link_chunk_store(store, "x", tmp_path / "x")
    uninterrupted = ChunkStore(tmp_path / "clean", 50, 10)
    run_chunks(uninterrupted, compute, log=lambda m: None)
    link_chunk_store(uninterrupted, "x", tmp_path / "x_clean")
    assert np.array_equal(read_with_numpy(tmp_path / "x"), read_with_numpy(tmp_path / "x_clean"))
    assert open_array(str(tmp_path / "x")).shape == (50, 2)


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


def _save_then_die(folder, die_after_replaces):
    """A writer (a worker process) SIGKILLed after `die_after_replaces` of its renames into place."""
    import os
    import signal

    from paris_assets.lib.store import chunks

    real, count = os.replace, [0]

    def replace(src, dst):
        if count[0] == die_after_replaces:
            os.kill(os.getpid(), signal.SIGKILL)
        count[0] += 1
        real(src, dst)

    chunks.os.replace = replace
    ChunkStore(folder, 20, 10).save(1, compute(10, 20))


@pytest.mark.parametrize("die_after", [0, 1, 2])  # before any array, between the arrays, before the marker
def test_a_writer_killed_mid_save_leaves_the_chunk_to_compute_again(tmp_path, die_after):
    import multiprocessing

    store = ChunkStore(tmp_path, 20, 10)
    store.save(0, compute(0, 10))
    child = multiprocessing.get_context("fork").Process(target=_save_then_die, args=(tmp_path, die_after))
    child.start()
    child.join()
    assert child.exitcode == -9
    assert store.missing() == [1]  # not done: whatever the dead writer placed is not trusted
    with pytest.raises(ValueError, match="chunk 1 of 'x' is not finished"):
        link_chunk_store(store, "x", tmp_path / "x")
    store.save(1, compute(10, 20))  # the retry
    link_chunk_store(store, "y", tmp_path / "y")
    assert read_with_numpy(tmp_path / "y").tolist() == list(range(20))  # every row once, in order


def test_two_writers_of_one_chunk_never_share_a_file(tmp_path):
    """A retry racing a worker presumed dead: each writes its own temporary files, the renames are atomic, and
    the chunk ends whole, with the (identical) rows once."""
    store = ChunkStore(tmp_path, 40_000, 20_000)
    arrays = compute(0, 20_000)
    list(ordered_map(lambda _: store.save(0, arrays), range(8), threads=8, ahead=8))
    assert store.missing() == [1] and np.array_equal(store.load(0, "x"), arrays["x"])
    assert not list(tmp_path.glob("*.tmp"))  # every writer's temporary files were renamed into place
