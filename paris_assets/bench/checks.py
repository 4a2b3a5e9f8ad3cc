"""Peak memory and time of the array checks at 11M rows, simulated with memory-mapped arrays (sparse files: the
disk holds almost nothing, the check reads every byte). Each check runs in its own subprocess, which reports its
peak RSS (memory-mapped pages included).

    python -m paris_assets.bench.checks [--rows 11000000] [--token-rows 500000] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# (array name, row shape, dtype, unit norm) per check, as the assets write them (dinov2-large, CLIP ViT-L/14, SD VAE)
CHECKS = {
    "dinov2_embeddings_valid": [("embeddings", (1024,), np.float32, True)],
    "clip_embeddings_valid": [("tokens", (77, 768), np.float16, False), ("pooled", (768,), np.float16, False)],
    "latents_valid (arrays; the VAE sample decodes 8 rows)": [("latents", (4, 32, 32), np.float16, False)],
    "router_pairs_aligned": [("latents", (4, 32, 32), np.float16, False), ("cluster_labels", (), np.int32, False),
                             ("dinov2_embeddings", (1024,), np.float32, False),
                             ("clip_text_embeddings", (768,), np.float16, False)],
}

TOKEN_CHECK = "clip_embeddings_valid"  # runs at --token-rows

CHILD = """
import json, sys, time
import numpy as np, pyarrow.parquet as pq
from paris_assets.lib.store.processes import peak_rss_mb
from paris_assets.lib.outputs.validation import check_arrays
folder, spec = sys.argv[1], json.loads(sys.argv[2])
started = time.perf_counter()
kept = pq.read_table(f"{folder}/kept.parquet", columns=["image_id"])["image_id"]
rows = int(sys.argv[3])
arrays = {name: np.load(f"{folder}/{name}_{rows}.npy", mmap_mode="r") for name, _unit in spec}
ids = np.load(f"{folder}/image_ids_{rows}.npy", mmap_mode="r")
passed, facts = check_arrays(arrays, ids, kept.slice(0, len(ids)), {}, unit_norm=tuple(n for n, u in spec if u))
print(json.dumps({"passed": passed, "seconds": time.perf_counter() - started, "problems": facts["problems"],
                  "peak_rss_mb": peak_rss_mb()}))
"""


def make_inputs(folder: Path, rows: int, token_rows: int) -> None:
    ids = np.char.mod("%016x", np.arange(rows, dtype=np.int64)).astype("<U16")
    pq.write_table(pa.table({"image_id": ids}), folder / "kept.parquet", row_group_size=1 << 20)
    for n in {rows, token_rows}:
        np.save(folder / f"image_ids_{n}.npy", ids[:n])
    for check, spec in CHECKS.items():
        n = token_rows if check == TOKEN_CHECK else rows
        for name, shape, dtype, unit in spec:
            if (folder / f"{name}_{n}.npy").exists():
                continue
            array = np.lib.format.open_memmap(folder / f"{name}_{n}.npy", mode="w+", dtype=dtype, shape=(n, *shape))
            if unit:  # unit vectors, or the norm check fails: one non-zero coordinate per row (a sparse file's
                array[:, 0] = 1.0  # other pages stay holes)
            array.flush()
            del array


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=11_000_000)
    parser.add_argument("--token-rows", type=int, default=500_000, help="CLIP tokens are 118 KB a row: 1.3 TB at 11M")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        make_inputs(folder, args.rows, args.token_rows)
        print(f"inputs: {args.rows:,} rows ({args.token_rows:,} for CLIP tokens), {time.perf_counter() - started:.0f} s")
        print("| check | arrays | rows | GB read | seconds | peak RSS |\n|---|---|---:|---:|---:|---:|")
        for check, spec in CHECKS.items():
            n = args.token_rows if check == TOKEN_CHECK else args.rows
            arrays = [np.load(folder / f"{name}_{n}.npy", mmap_mode="r") for name, *_ in spec]
            gb = sum(a.nbytes for a in arrays) / 1e9
            done = subprocess.run([sys.executable, "-c", CHILD, str(folder),
                                   json.dumps([(name, u) for name, _s, _d, u in spec]), str(n)],
                                  capture_output=True, text=True)
            if done.returncode:
                print(f"| {check} | failed: {done.stderr[-500:]} |")
                continue
            out = json.loads(done.stdout.splitlines()[-1])
            names = ", ".join(f"{n} {tuple(a.shape)} {a.dtype}" for (n, *_), a in zip(spec, arrays))
            print(f"| {check} | {names} | {len(arrays[0]):,} | {gb:,.1f} | {out['seconds']:,.0f} | "
                  f"{out['peak_rss_mb']:,.0f} MB |" + ("" if out["passed"] else f" problems: {out['problems']}"))


if __name__ == "__main__":
    main()
