"""Array checks at real width: blocks bounded by bytes, native dtype, memory-mapped pages released as they go."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from paris_assets.lib.outputs.validation import BLOCK_BYTES, check_arrays, non_finite_rows, rows_per_block


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_non_finite_rows_in_the_native_dtype(dtype):
    info = np.finfo(dtype)
    rows = np.zeros((7, 3, 5), dtype)
    rows[1, 2, 4] = np.nan
    rows[2, 0, 0] = np.inf
    rows[3, 1, 1] = -np.inf
    rows[4] = info.max          # the largest finite value is finite
    rows[5] = -info.max
    rows[6] = info.smallest_subnormal
    assert non_finite_rows(rows).tolist() == [False, True, True, True, False, False, False]


def test_integer_arrays_are_always_finite():
    assert not non_finite_rows(np.arange(12, dtype=np.int32).reshape(4, 3)).any()


@pytest.mark.parametrize("shape,dtype", [((77, 768), np.float16), ((1024,), np.float32), ((4, 32, 32), np.float16)])
def test_blocks_are_bounded_by_bytes(shape, dtype):
    array = np.empty((1, *shape), dtype)
    assert rows_per_block(array) * array[0].nbytes <= BLOCK_BYTES


def test_unit_norm_and_ids_are_checked_blockwise():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(50, 8)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    ids = np.array([f"{i:016x}" for i in range(50)])
    assert check_arrays({"e": rows}, ids, ids.tolist(), {"e": (8,)}, unit_norm=("e",))[0]
    rows[7] *= 1.01
    other = ids.copy()
    other[31] = "f" * 16
    passed, facts = check_arrays({"e": rows}, ids, other, {"e": (8,)}, unit_norm=("e",))
    assert not passed
    assert any("first difference at row 31" in p for p in facts["problems"])
    assert any("L2 norm off by up to 0.01" in p for p in facts["problems"])


CHILD = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))  # old float32 blocks (15 GB) die here, not the machine
    from paris_assets.lib.store.arrays import open_named
    from paris_assets.lib.store.processes import peak_rss_mb
    from paris_assets.lib.outputs.validation import check_arrays
    tokens = open_named(sys.argv[1], "tokens")  # as AssetFolder.array opens it: a chunked folder or tokens.npy
    ids = np.load(sys.argv[1] + "/image_ids.npy", mmap_mode="r")
    passed, facts = check_arrays({"tokens": tokens}, ids, ids, {"tokens": (77, 768)})
    facts["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(facts))
""")


def write_sparse_tokens(folder, n: int, layout: str, bad: dict[int, tuple[int, int, float]]) -> None:
    """(n, 77, 768) float16 zeros, sparse on disk, but for the `bad` rows: row -> (token, channel, value); as
    the model stages write it (a chunked folder, 1,024 rows a chunk) or as one memory-mappable tokens.npy."""
    from paris_assets.lib.store.arrays import ChunkedArrayWriter

    if layout == "npy":
        tokens = np.lib.format.open_memmap(folder / "tokens.npy", mode="w+", dtype=np.float16, shape=(n, 77, 768))
        for row, (token, channel, value) in bad.items():
            tokens[row, token, channel] = value
        tokens.flush()
        del tokens
        return
    writer, rows = ChunkedArrayWriter(folder / "tokens", 1024), 1024
    for i, first in enumerate(range(0, n, rows)):
        with writer.chunk(i, min(rows, n - first), np.float16, (77, 768)) as chunk:
            for row, (token, channel, value) in bad.items():
                if first <= row < first + rows:
                    chunk[row - first, token, channel] = value
    writer.finish(n_rows=n)


@pytest.mark.parametrize("layout", ["chunked", "npy"])
def test_clip_tokens_at_real_width_stay_under_a_gigabyte(tmp_path, layout):
    """(70,001, 77, 768) float16, 8.3 GB on disk (sparse), in chunks or one memory-mapped file, checked in a
    subprocess whose peak RSS (file pages included) stays under 1 GB; the two planted non-finite rows are found."""
    n = 70_001
    write_sparse_tokens(tmp_path, n, layout, {3: (5, 7, np.nan), n - 1: (76, 767, -np.inf)})
    np.save(tmp_path / "image_ids.npy", np.array([f"{i:016x}" for i in range(n)]))
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    facts = json.loads(done.stdout.splitlines()[-1])
    assert facts["tokens_non_finite_rows"] == 2 and facts["problems"] == ["tokens: 2 rows with NaN or inf"]
    assert facts["peak_rss_mb"] < 1024, facts
