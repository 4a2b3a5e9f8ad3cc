"""Chunked arrays: the writer, ChunkStore chunks linked in, and open_array reading chunked folders and plain .npy
files the same way on the local disk and on fsspec's memory:// (s3:// with counted requests: test_s3.py)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid

import fsspec
import numpy as np
import pytest

from paris_assets.lib.store.arrays import INDEX, ChunkedArrayWriter, chunk_file, link_chunk_store, open_array
from paris_assets.lib.store.chunks import ChunkStore

ARRAYS = {  # name -> the array; rows of several shapes and dtypes, ids as fixed-width text
    "f16_rows": np.arange(1000 * 12, dtype=np.float16).reshape(1000, 4, 3),
    "labels": np.random.default_rng(0).integers(0, 8, 1000),
    "ids": np.array([f"id{i:05d}" for i in range(1000)]),
}


@pytest.fixture
def memory_root():
    root = f"memory://arrays-{uuid.uuid4().hex[:8]}"
    yield root
    fs = fsspec.filesystem("memory")
    fs.rm(root, recursive=True) if fs.exists(root) else None


def write_chunked(folder, array, chunk_rows=128, batch=77):
    writer = ChunkedArrayWriter(folder, chunk_rows)
    for i in range(0, len(array), batch):  # batches that do not line up with chunks
        writer.append(array[i:i + batch])
    return writer.finish(n_rows=len(array))


def opened(tmp_path, memory_root, array, kind, where):
    """open_array over `array` stored as `kind` (chunked folder or plain .npy) on the local disk or memory://."""
    local = tmp_path / ("a" if kind == "chunked" else "a.npy")
    write_chunked(local, array) if kind == "chunked" else np.save(local, array)
    if where == "local":
        return open_array(str(local))
    fsspec.filesystem("memory").put(str(local), f"{memory_root}/{local.name}", recursive=kind == "chunked")
    return open_array(f"{memory_root}/{local.name}")


@pytest.mark.parametrize("where", ["local", "memory"])
@pytest.mark.parametrize("kind", ["chunked", "npy"])
@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_every_read_matches_numpy(tmp_path, memory_root, name, kind, where):
    array = ARRAYS[name]
    a = opened(tmp_path, memory_root, array, kind, where)
    assert (a.shape, a.dtype, len(a), a.ndim) == (array.shape, array.dtype, len(array), array.ndim)
    rng = np.random.default_rng(1)
    rows = rng.integers(-len(array), len(array), 300)  # any order, repeats, negatives
    keys = [0, -1, 517, slice(None), slice(5, 900), slice(127, 129), slice(10, 700, 7), slice(None, None, -3),
            slice(990, 2000), slice(600, 10), rows, rows.reshape(20, 15), np.array([], dtype=np.int64),
            rng.random(len(array)) < 0.1, [3, 3, 1]]
    for key in keys:
        np.testing.assert_array_equal(a[key], array[key], err_msg=str(key))
    np.testing.assert_array_equal(np.asarray(a), array)
    with pytest.raises(ValueError, match="without a copy"):
        np.array(a, copy=False)
    for max_bytes in (1, 1000, 10 ** 9):
        blocks = list(a.iter_blocks(max_bytes))
        bounds = [0] + [e for _, e, _ in blocks]
        assert [(s, e) for s, e, _ in blocks] == list(zip(bounds, bounds[1:])) and bounds[-1] == len(array)
        assert all(b.nbytes <= max(max_bytes, a.row_bytes) for _, _, b in blocks)
        np.testing.assert_array_equal(np.concatenate([b for _, _, b in blocks]), array)
    with pytest.raises(IndexError):
        a[len(array)]
    with pytest.raises(IndexError):
        a[np.array([0, len(array)])]


def test_index_describes_plain_npy_chunks(tmp_path):
    array = ARRAYS["f16_rows"]
    index = write_chunked(tmp_path / "a", array, chunk_rows=300)
    assert json.loads((tmp_path / "a" / INDEX).read_text()) == index
    assert (index["format"], index["version"], index["dtype"], index["shape"], index["chunk_rows"]) == \
        ("paris-chunked-array", 1, "<f2", [1000, 4, 3], 300)
    assert [(c["file"], c["start"], c["stop"]) for c in index["chunks"]] == \
        [(chunk_file(i), 300 * i, min(1000, 300 * (i + 1))) for i in range(4)]
    for c in index["chunks"]:  # numpy reads every chunk with no code of ours
        path = tmp_path / "a" / c["file"]
        assert c["bytes"] == path.stat().st_size
        np.testing.assert_array_equal(np.load(path), array[c["start"]:c["stop"]])
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted([INDEX] + [c["file"] for c in index["chunks"]])


def test_a_chunk_appears_whole_or_not_at_all(tmp_path):
    writer = ChunkedArrayWriter(tmp_path / "a", 4)
    writer.write_chunk(0, np.zeros((4, 2)))
    with pytest.raises(RuntimeError, match="killed"):
        with writer.chunk(1, 4, np.float64, (2,)) as out:
            out[:2] = 1
            raise RuntimeError("killed mid-chunk")
    assert writer.done(0) and not writer.done(1)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [chunk_file(0)]  # no temporary left
    with writer.chunk(1, 3, np.float64, (2,)) as out:  # filled in place, batch by batch
        out[:] = 2
    writer.finish(n_rows=7)
    np.testing.assert_array_equal(open_array(str(tmp_path / "a"))[:], np.r_[np.zeros((4, 2)), np.full((3, 2), 2.0)])


def test_finish_refuses_chunks_that_do_not_make_one_array(tmp_path):
    writer = ChunkedArrayWriter(tmp_path / "gap", 4)
    writer.write_chunk(0, np.zeros((4, 2)))
    writer.write_chunk(2, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="without a gap"):
        writer.finish()
    writer = ChunkedArrayWriter(tmp_path / "short", 4)
    writer.write_chunk(0, np.zeros((3, 2)))
    writer.write_chunk(1, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="every chunk but the last holds 4"):
        writer.finish()
    writer = ChunkedArrayWriter(tmp_path / "mixed", 4)
    writer.write_chunk(0, np.zeros((4, 2)))
    writer.write_chunk(1, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="chunk 0 holds"):
        writer.finish()
    with pytest.raises(ValueError, match="hold 8 rows, expected 9"):
        write_chunked(tmp_path / "count", np.zeros((8, 2)), chunk_rows=4)
        ChunkedArrayWriter(tmp_path / "count", 4).finish(n_rows=9)
    with pytest.raises(ValueError, match="no dtype"):
        ChunkedArrayWriter(tmp_path / "empty", 4).finish()
    ChunkedArrayWriter(tmp_path / "empty", 4).finish(dtype=np.float16, row_shape=(768,))
    empty = open_array(str(tmp_path / "empty"))
    assert empty.shape == (0, 768) and empty[:].shape == (0, 768) and list(empty.iter_blocks()) == []


def test_open_array_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(FileNotFoundError, match="no index.json"):
        open_array(str(tmp_path / "nothing"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / INDEX).write_text(json.dumps({"format": "zarr", "version": 3}))
    with pytest.raises(ValueError, match="this reader knows"):
        open_array(str(tmp_path / "other"))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects"):
        open_array(str(tmp_path / "objects.npy"))
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.zeros((3, 4))))
    with pytest.raises(ValueError, match="Fortran"):
        open_array(str(tmp_path / "fortran.npy"))


def test_a_changed_chunk_is_caught_on_object_storage(tmp_path, memory_root):
    write_chunked(tmp_path / "a", ARRAYS["f16_rows"])
    np.save(tmp_path / "a" / chunk_file(1), ARRAYS["f16_rows"][:100])  # rewritten after the index
    fsspec.filesystem("memory").put(str(tmp_path / "a"), f"{memory_root}/a", recursive=True)
    a = open_array(f"{memory_root}/a")
    np.testing.assert_array_equal(a[:10], ARRAYS["f16_rows"][:10])
    with pytest.raises(ValueError, match="changed after its index"):
        a[200]


def test_chunk_store_chunks_become_an_array_without_a_copy(tmp_path):
    store = ChunkStore(tmp_path / "work", n_rows=10, chunk_size=4)
    tokens = np.arange(10 * 6, dtype=np.float16).reshape(10, 2, 3)
    for i in range(store.n_chunks):
        start, stop = store.bounds(i)
        store.save(i, {"tokens": tokens[start:stop], "pooled": tokens[start:stop, 0]})
    index = link_chunk_store(store, "tokens", tmp_path / "out" / "tokens")
    assert index["shape"] == [10, 2, 3] and len(index["chunks"]) == 3
    for i in range(3):  # the same file, linked: not a byte copied
        assert os.stat(tmp_path / "out" / "tokens" / chunk_file(i)).st_ino == \
            os.stat(tmp_path / "work" / f"chunk-{i:06d}.tokens.npy").st_ino
    store.remove()  # the work folder goes; the array keeps its links
    np.testing.assert_array_equal(open_array(str(tmp_path / "out" / "tokens"))[[9, 0, 4]], tokens[[9, 0, 4]])

    unfinished = ChunkStore(tmp_path / "half", n_rows=10, chunk_size=4)
    unfinished.save(0, {"tokens": tokens[:4]})
    with pytest.raises(ValueError, match="chunk 1 of 'tokens' is not finished"):
        link_chunk_store(unfinished, "tokens", tmp_path / "out" / "half")


SPARSE = """
import json, sys, time
import numpy as np
from paris_assets.lib.store.arrays import ChunkedArrayWriter, open_array
from paris_assets.lib.store.processes import peak_rss_mb

folder, rows, width, chunk_rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
writer = ChunkedArrayWriter(folder, chunk_rows)
for i in range(-(-rows // chunk_rows)):  # sparse: open_memmap sizes each file without writing its bytes
    with writer.chunk(i, min(chunk_rows, rows - i * chunk_rows), np.float16, (width,)):
        pass
writer.finish(n_rows=rows)
baseline = peak_rss_mb()
a = open_array(folder)
started = time.perf_counter()
picked = a[np.random.default_rng(0).integers(0, rows, 4096)]
random_s = time.perf_counter() - started
started, streamed = time.perf_counter(), 0
for start, stop, block in a.iter_blocks(max_bytes=16 << 20, start=rows // 2, stop=rows // 2 + 2 ** 17):
    streamed += block.nbytes
print(json.dumps([a.shape, a.nbytes, picked.shape, streamed, baseline, peak_rss_mb(), random_s,
                  time.perf_counter() - started]))
"""


def test_an_11m_row_array_is_read_in_bounded_memory(tmp_path):
    """11M x 1024 float16 (22.5 GB) as sparse local chunks: 4,096 random rows and 256 MB of blocks read with a
    peak RSS of tens of MB above the interpreter's own."""
    rows, width = 11_000_000, 1024
    try:
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(SPARSE), str(tmp_path / "big"), str(rows),
                              str(width), "8192"], capture_output=True, text=True, timeout=120)
    finally:  # 22.5 GB of files (sparse here): never left in pytest's kept temporary folders
        shutil.rmtree(tmp_path / "big", ignore_errors=True)
    assert out.returncode == 0, out.stderr
    shape, nbytes, picked, streamed, baseline, peak, random_s, stream_s = json.loads(out.stdout)
    assert shape == [rows, width] and nbytes == rows * width * 2 and picked == [4096, width] and streamed == 2 ** 28
    assert peak - baseline < 80, f"peak RSS {peak:.0f} MB, {baseline:.0f} MB before reading"
    print(f"11M x 1024 f16: 4096 random rows in {random_s:.2f}s, 256 MB in blocks in {stream_s:.2f}s, "
          f"peak RSS {peak:.0f} MB ({baseline:.0f} MB before reading)")
