"""Verifiable expert data: the Merkle root against RFC 6962's own test vectors and a tree hashed by hand, then
python -m paris_assets.verify on shards written by the library (a data_dir and an export's layout): one flipped
byte caught and named, a missing and an extra shard named, the exit codes from a subprocess."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from paris_assets import verify
from paris_assets.lib.outputs.merkle import merkle_root, shards_root, split_roots
from paris_assets.lib.outputs.shards import ShardSource, manifest_entries, write_expert_shards, write_shards
from paris_assets.lib.outputs.stats import FORMAT, verification
from paris_assets.settings import PROJECT_ROOT

# RFC 6962's reference leaves and roots (certificate-transparency's merkle_tree_test.cc), trees of 1 to 8 leaves
CT_LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43", bytes(range(0x50, 0x58)),
             bytes(range(0x60, 0x70))]
CT_ROOTS = ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]
K, N = 3, 40


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@pytest.mark.parametrize("n", range(1, 9))
def test_root_matches_rfc6962_test_vectors(n):
    assert merkle_root(CT_LEAVES[:n]).hex() == CT_ROOTS[n - 1]


def test_root_of_a_small_tree_hashed_by_hand():
    """Three shards: the third is promoted past the first level, then joined to the node over the first two."""
    d = [sha(b"shard a"), sha(b"shard b"), sha(b"shard c")]
    leaf = [sha(b"\x00" + x) for x in d]
    assert merkle_root(d) == sha(b"\x01" + sha(b"\x01" + leaf[0] + leaf[1]) + leaf[2])
    assert merkle_root(d[:1]) == leaf[0] and merkle_root([]) == sha(b"")
    # ordered by file name, wherever the shards sit: the same root in a data_dir and an export
    entries = [{"path": f"x/cluster_0/shard-00000{i}.tar", "sha256": x.hex()} for i, x in enumerate(d)]
    assert shards_root(entries[::-1]) == merkle_root(d).hex()
    assert shards_root([{**e, "path": "data/train/cluster_0/" + Path(e["path"]).name} for e in entries]) == \
        shards_root(entries)


def test_any_rfc6962_tree_size(n=23):
    """Odd-node promotion gives RFC 6962's tree (split at the largest power of two below n) for every size."""
    def mth(leaves):
        if len(leaves) == 1:
            return sha(b"\x00" + leaves[0])
        k = 1 << (len(leaves) - 1).bit_length() - 1
        return sha(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))

    digests = [sha(bytes([i])) for i in range(n)]
    for size in range(1, n + 1):
        assert merkle_root(digests[:size]) == mth(digests[:size])


def write_data_dir(root: Path) -> dict:
    """A data_dir as expert_shards writes it, at toy size: K clusters of 3-sample shards, a held-out set and
    pipeline_manifest.json with its Merkle roots, all by the library's own functions."""
    rng = np.random.default_rng(0)
    ids = np.array([f"{i:016x}" for i in range(N)])
    kept = pd.DataFrame({"image_id": ids, "url": [f"http://example.com/{i}.jpg" for i in ids], "alt_text": "a",
                         "original_width": 64, "original_height": 64, "phash": "0" * 16})
    src = ShardSource(kept=kept, captions=[f"caption {i}" for i in range(N)],
                      labels=rng.integers(0, K, N).astype(np.int32), distances=np.zeros(N, np.float32),
                      latents=rng.standard_normal((N, 4, 4, 4)).astype(np.float16),
                      pooled=rng.standard_normal((N, 8)).astype(np.float16), tokens=None)
    held = np.zeros(N, bool)
    held[::8] = True
    rows = [np.flatnonzero((src.labels == c) & ~held) for c in range(K)]
    stats = write_expert_shards(src, rows, root / "expert_shards", 3, 1 << 30, seed=0, log=lambda m: None)
    held_shards = write_shards(src, np.flatnonzero(held), root / "heldout" / "shards", 3, 1 << 30)
    clusters = {c: manifest_entries(s, "expert_shards") for c, s in stats["clusters"].items()}
    heldout = manifest_entries(held_shards, "heldout")
    manifest = {"k": K, "clusters": clusters, "heldout": heldout, "merkle_roots": split_roots(clusters, heldout)}
    (root / "pipeline_manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def export_layout(data: Path, out: Path) -> None:
    """The shards as python -m paris_assets.export lays them out, with stats.json's `verification`."""
    manifest = json.loads((data / "pipeline_manifest.json").read_text())
    files = []
    for split, entries in [*manifest["clusters"].items(), ("heldout", manifest["heldout"])]:
        for e in entries:
            dest = f"data/{'heldout' if split == 'heldout' else f'train/cluster_{split}'}/{Path(e['path']).name}"
            (out / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(data / e["path"], out / dest)
            files.append((split, dest, None, e))
    (out / "stats.json").write_text(json.dumps({"format": FORMAT, "verification": verification(files, K)}))


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("verify") / "data"
    write_data_dir(root)
    return root


@pytest.fixture
def data(written, tmp_path) -> Path:
    return Path(shutil.copytree(written, tmp_path / "data"))


@pytest.fixture
def exported(written, tmp_path) -> Path:
    export_layout(written, tmp_path / "export")
    return tmp_path / "export"


def flip_byte(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))


def test_the_manifest_records_a_root_per_expert(written):
    manifest = json.loads((written / "pipeline_manifest.json").read_text())
    roots = manifest["merkle_roots"]
    assert sorted(roots["clusters"]) == [str(c) for c in range(K)] and len(roots["heldout"]) == 64
    for c, shards in manifest["clusters"].items():
        assert len(shards) > 1  # a tree, not one leaf
        digests = [hashlib.sha256((written / s["path"]).read_bytes()).digest() for s in shards]
        assert roots["clusters"][c] == merkle_root(digests).hex()  # from the bytes on disk
    assert "RFC 6962" in roots["scheme"]


@pytest.mark.parametrize("layout", ["data", "exported"])
def test_an_untouched_copy_verifies(layout, request):
    findings, summary = verify.verify(request.getfixturevalue(layout))
    assert findings == [] and summary["kind"] == {"data": "data_dir", "exported": "export"}[layout]
    assert all(r["found"] == r["recorded"] for r in summary["roots"].values()) and len(summary["roots"]) == K + 1


@pytest.mark.parametrize("layout", ["data", "exported"])
def test_one_flipped_byte_is_caught_and_named(layout, request):
    root = request.getfixturevalue(layout)
    before = verify.verify(root)[1]["roots"]
    shard = sorted(root.rglob("cluster_1/*.tar"))[1]
    flip_byte(shard, shard.stat().st_size // 3)  # inside a member's bytes, the size unchanged
    findings, summary = verify.verify(root)
    rel = shard.relative_to(root).as_posix()
    assert [(f.kind, f.path, f.split) for f in findings] == [("changed", rel, "1")]
    assert summary["roots"]["1"]["found"] != summary["roots"]["1"]["recorded"] == before["1"]["recorded"]
    assert all(summary["roots"][s]["found"] == before[s]["found"] for s in before if s != "1")


def test_missing_and_extra_shards_are_named(data):
    gone = data / "expert_shards" / "cluster_2" / "shard-000000.tar"
    gone.unlink()
    extra = data / "heldout" / "shards" / "shard-000099.tar"
    shutil.copy(data / "heldout" / "shards" / "shard-000000.tar", extra)
    findings, summary = verify.verify(data)
    assert sorted((f.kind, f.path, f.split) for f in findings) == [
        ("extra", "heldout/shards/shard-000099.tar", "heldout"),
        ("missing", "expert_shards/cluster_2/shard-000000.tar", "2")]
    assert {s for s, r in summary["roots"].items() if r["found"] != r["recorded"]} == {"2", "heldout"}


def test_an_edited_manifest_is_caught_by_its_root(data):
    """Swapping a shard and its listed sha256 together leaves the files and the list agreeing: the root does not."""
    manifest = json.loads((data / "pipeline_manifest.json").read_text())
    entry = manifest["clusters"]["0"][0]
    flip_byte(data / entry["path"], 700)
    entry["sha256"] = hashlib.sha256((data / entry["path"]).read_bytes()).hexdigest()
    (data / "pipeline_manifest.json").write_text(json.dumps(manifest))
    findings, _ = verify.verify(data)
    assert [(f.kind, f.split) for f in findings] == [("root", "0")]


def run_cli(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "paris_assets.verify", str(path)], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)


def test_the_command_line_exit_codes(data, exported, tmp_path):
    for root in (data, exported):
        ok = run_cli(root)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.count("matches") == K + 1 and "ok:" in ok.stdout
    shard = exported / "data" / "train" / "cluster_0" / "shard-000001.tar"
    flip_byte(shard, 2000)
    (exported / "data" / "heldout" / "shard-000000.tar").unlink()
    bad = run_cli(exported)
    print(bad.stdout)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    lines = [line for line in bad.stdout.splitlines() if line.startswith(("changed", "missing", "extra"))]
    assert len(lines) == 2
    assert lines[0].startswith("changed  data/train/cluster_0/shard-000001.tar  (cluster 0): sha256 ")
    assert lines[1] == "missing  data/heldout/shard-000000.tar  (held-out set)"
    assert "FAILED: 1 changed, 1 missing, 0 extra" in bad.stdout
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "stats.json").write_text('{"format": "something else"}')
    for root in (tmp_path / "empty", tmp_path / "other", tmp_path / "nowhere"):
        refused = run_cli(root)
        assert refused.returncode == 2 and "not an output" in refused.stderr, refused.stderr
