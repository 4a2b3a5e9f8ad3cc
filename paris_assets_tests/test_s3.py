"""Storage and arrays against a real S3 API: moto's server on 127.0.0.1, reached through s3fs exactly as an
`s3://` data_dir would be (endpoint and dummy credentials from the environment).

Ranged reads are counted at the S3 client (every request s3fs makes passes `_call_s3`); commits are killed with
SIGKILL before each of their writes in turn, and every time the asset still opens to one complete output."""

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
import s3fs

import torch

from paris_assets.lib.store import storage
from paris_assets.lib.outputs.shard_index import CropLookup, build_index, read_image, shard_health
from paris_assets.loaders import expert_dataset, router_dataset
from paris_assets.lib.store.arrays import HEAD_BYTES, ChunkedArrayWriter, open_array

BUCKET = "paris-test"
READS = {"get_object", "head_object", "list_objects_v2", "list_objects", "head_bucket", "get_bucket_location",
         "list_object_versions"}


@pytest.fixture(scope="session")
def s3():
    """A moto S3 server on 127.0.0.1 with one bucket; the environment points boto and s3fs at it (restored
    after the session). Yields a function giving a fresh s3:// root."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = pytest.MonkeyPatch()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        env.setenv(key, value)
    env.delenv("AWS_PROFILE", raising=False)
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    try:
        yield lambda: f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}"
    finally:
        env.undo()
        server.stop()


@pytest.fixture
def s3_requests(monkeypatch):
    """Every S3 request this process makes: (method, its keyword arguments)."""
    made = []
    plain = s3fs.S3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):
        made.append((method, kwargs))
        return await plain(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counted)
    return made


def fs() -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(skip_instance_cache=True)


def ranged_bytes(made) -> tuple[int, int]:
    """(GET requests, bytes they asked for): a GET without a Range is counted at the object's full size."""
    total = 0
    gets = [kw for method, kw in made if method == "get_object"]
    for kw in gets:
        if "Range" in kw:
            first, last = kw["Range"].removeprefix("bytes=").split("-")
            total += int(last) - int(first) + 1
        else:
            total += fs().size(f"{kw['Bucket']}/{kw['Key']}")
    return len(gets), total


def test_a_few_rows_of_a_large_array_fetch_a_few_ranges(s3, tmp_path, s3_requests):
    rows, width, chunk_rows = 24_000, 1024, 1000  # 47 MB of float16 in 24 chunks
    array = np.random.default_rng(0).standard_normal((rows, width)).astype(np.float16)
    writer = ChunkedArrayWriter(tmp_path / "emb", chunk_rows)
    for i in range(0, rows, chunk_rows):
        writer.write_chunk(i // chunk_rows, array[i:i + chunk_rows])
    writer.finish(n_rows=rows)
    np.save(tmp_path / "emb.npy", array)
    root = s3()
    fs().put(str(tmp_path / "emb"), f"{root}/emb".removeprefix("s3://"), recursive=True)
    fs().put(str(tmp_path / "emb.npy"), f"{root}/emb.npy".removeprefix("s3://"))

    picked = np.array([23_999, 5, 6, 7, 12_345, 5, 8_000])  # three neighbours, a repeat, out of order
    for url, most_gets in ((f"{root}/emb", 1 + 4 + 4), (f"{root}/emb.npy", 1 + 4)):
        s3_requests.clear()
        a = open_array(url)
        np.testing.assert_array_equal(a[picked], array[picked])
        gets, fetched = ranged_bytes(s3_requests)
        # the index (or the .npy header), each touched chunk's header once, one range per run of rows
        assert gets <= most_gets and not [m for m, _ in s3_requests if m not in READS], s3_requests
        assert fetched < 64 * 1024, f"{fetched:,} bytes fetched for 6 distinct rows of a {array.nbytes:,}-byte array"
        print(f"{url.rsplit('/', 1)[1]}: 6 rows of {array.nbytes / 1e6:.0f} MB: {gets} GETs, {fetched:,} bytes")

        s3_requests.clear()
        np.testing.assert_array_equal(a[100:110], array[100:110])  # chunk 0: its header was read
        assert ranged_bytes(s3_requests) == (1, 10 * width * 2)  # header known: one range, exactly the rows

        s3_requests.clear()
        total = 0
        for start, stop, block in a.iter_blocks(max_bytes=8 << 20):
            np.testing.assert_array_equal(block, array[start:stop])
            total += stop - start
        gets, fetched = ranged_bytes(s3_requests)
        assert total == rows and fetched <= array.nbytes + 24 * HEAD_BYTES  # the rows, and unread headers once
        print(f"  a pass in 8 MB blocks: {gets} GETs, {fetched:,} bytes")


KILL_POINTS = 14  # more than the writes of one commit of NEW: the last commits run to the end
OLD = {"a.bin": b"old a" * 100, "sub/b.bin": b"old b", "gone.bin": b"only in the old output"}
NEW = {"a.bin": b"new a" * 120, "sub/b.bin": b"new b", "sub/c.bin": b"only in the new output"}

COMMITS = """
import json, os, signal, sys
import s3fs
import torch

from paris_assets.lib.store import storage
from paris_assets.lib.outputs.shard_index import CropLookup, build_index, read_image, shard_health
from paris_assets.loaders import expert_dataset, router_dataset

READS = {reads!r}
plain = s3fs.S3FileSystem._call_s3


def commit(root, staged, kill_at):
    writes = 0

    async def call(self, method, *args, **kwargs):
        nonlocal writes
        if method not in READS:
            writes += 1
            if writes == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # no finally, no except: as a killed worker dies
        return await plain(self, method, *args, **kwargs)

    s3fs.S3FileSystem._call_s3 = call
    storage.commit_folder(staged, root, "asset")
    print("writes", writes, flush=True)


for root, staged, kill_at in json.loads(sys.argv[1]):
    pid = os.fork()  # imports paid once; each commit runs, and dies, in a process of its own
    if pid == 0:
        commit(root, __import__("pathlib").Path(staged), kill_at)
        os._exit(0)
    print("exit", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


def stage(folder: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def commits_in_children(jobs: list[tuple[str, Path, int]]) -> list[tuple[int | None, int]]:
    """Run each (root, staged folder, kill_at) commit in a child process of its own, killed with SIGKILL right
    before its kill_at-th write request; (write requests made, or None when killed; exit code) for each."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(COMMITS).format(reads=sorted(READS)),
                          json.dumps([(root, str(staged), kill_at) for root, staged, kill_at in jobs])],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    results, writes = [], None
    for what, number in zip(*[iter(out.stdout.split())] * 2):
        if what == "writes":
            writes = int(number)
        else:
            results.append((writes, int(number)))
            writes = None
    return results


def readable_output(root: str) -> str:
    """Which complete output `<root>/asset` opens to, 'old' or 'new', read through storage as a consumer
    would; fails if what it opens is neither whole."""
    folder = storage.open_folder(root, "asset")
    listed = storage.folder_files(folder)
    content = {rel: (folder / rel).read_bytes() for rel in listed}
    for name, files in (("old", OLD), ("new", NEW)):
        if content == files:
            assert listed == {rel: len(data) for rel, data in files.items()}
            return name
    raise AssertionError(f"{folder} opens to neither output whole: {sorted(content)}")


def plain_output(root: str) -> dict[str, bytes]:
    """The files under `<root>/asset/` by their plain paths, as a reader that ignores the marker sees them."""
    prefix = root.removeprefix("s3://") + "/asset/"
    return {p.removeprefix(prefix): fs().cat_file(p) for p in fs().find(prefix) if not p.endswith(storage.MARKER)}


def test_a_commit_killed_at_any_write_leaves_a_complete_output(s3, tmp_path):
    """SIGKILL before each write request of a commit in turn (upload, pointer, settle, marker, removals): the
    asset always opens to the old output or the new one, whole; the next commit succeeds and leaves nothing
    behind. The old protocol (remove the old folder, then move the new one in) fails this with IncompleteOutput
    once killed after its removal began (and, on S3, failed every commit: s3fs's recursive mv of the upload)."""
    roots = [s3() for _ in range(KILL_POINTS)]
    for n, root in enumerate(roots):
        storage.commit_folder(stage(tmp_path / f"old-{n}", OLD), root, "asset")
    results = commits_in_children([(root, stage(tmp_path / f"new-{n}", NEW), n + 1) for n, root in enumerate(roots)])
    writes = sum(code == -9 for _w, code in results)  # killed before write 1..writes; later kill points never came
    assert 5 < writes < KILL_POINTS and results == [(None, -9)] * writes + [(writes, 0)] * (KILL_POINTS - writes)
    seen = [readable_output(root) for root in roots]
    assert seen[0] == "old" and seen[-1] == "new" and seen == sorted(seen, key=["old", "new"].index), seen
    roots = roots[:writes]

    # readers of plain paths (the loaders, the integrity check, the shard browser) are refused while they may mix
    refused, mixed = 0, 0
    for root in roots:
        plain = plain_output(root)
        try:
            storage.require_settled(root, "asset")
        except storage.IncompleteOutput:
            refused += 1
            mixed += plain not in (OLD, NEW)
            continue
        assert plain in (OLD, NEW), plain
    assert refused and mixed  # the settle window exists, and the plain paths do mix inside it

    for n, root in enumerate(roots):  # the next commit succeeds and cleans up after the killed one
        newest = {"a.bin": b"newest"}
        storage.commit_folder(stage(tmp_path / f"newest-{n}", newest), root, "asset")
        assert storage.folder_files(storage.open_folder(root, "asset")) == {"a.bin": 6}
        left = sorted(p.removeprefix(root.removeprefix("s3://") + "/") for p in fs().find(root))
        assert left == ["asset/_SUCCESS.json", "asset/a.bin"], (n, left)
        assert (storage.root_upath(root) / "asset" / "a.bin").read_bytes() == b"newest"  # plain paths agree
    print(f"killed before each of {writes} writes: {seen[:writes].count('old')} times the old output, "
          f"{seen[:writes].count('new')} times the new one, never neither")


def test_plain_paths_hold_the_output_once_a_commit_is_done(s3, tmp_path):
    """Readers of `<data_dir>/<asset>/<file>` (the on-disk contract, the loaders, the integrity checks) find the
    committed files there on S3, and a re-commit removes files the new output lacks."""
    root = s3()
    storage.commit_folder(stage(tmp_path / "one", OLD), root, "asset")
    storage.commit_folder(stage(tmp_path / "two", NEW), root, "asset")
    plain = storage.root_upath(root) / "asset"
    assert {rel: (plain / rel).read_bytes() for rel in NEW} == NEW
    assert not (plain / "gone.bin").exists()
    marker = json.loads((plain / storage.MARKER).read_text())
    assert storage.LOCATION not in marker and marker["files"] == {rel: len(d) for rel, d in NEW.items()}
    assert storage.open_folder(root, "asset").path == plain.path


def test_whole_graph_on_s3(s3, tmp_path, monkeypatch):
    """Every asset materialised with data_dir on S3, committed through the pointer protocol, and the training
    outputs verified there through plain paths (the integrity check's reader)."""
    import shutil

    import pandas as pd
    from dagster import DagsterInstance

    from paris_assets.definitions import build_defs
    from paris_assets.lib.outputs.validation import verify_training_outputs
    from paris_assets.settings import PROJECT_ROOT, parse_settings

    monkeypatch.setenv("PARIS_STAGING_DIR", str(tmp_path / "staging"))
    (tmp_path / "home").mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "home" / "dagster.yaml")
    root = s3()
    settings = parse_settings({
        "data_dir": root, "source": {"kind": "demo", "demo_size": 64}, "ingest": {"processes": 1, "threads": 8},
        "filter": {"processes": 1}, "captions": {"source": "alt_text"}, "clustering": {"k": 3},
        "report": {"balance_severity": "WARN"}}, base_dir=tmp_path)
    result = build_defs(settings).resolve_implicit_global_asset_job_def().execute_in_process(
        instance=DagsterInstance.local_temp(str(tmp_path / "home")))
    assert result.success
    with (storage.open_folder(root, "filtered_images") / "kept.parquet").open("rb") as fh:
        kept = pd.read_parquet(fh)["image_id"].tolist()
    held = open_array(f"{root}/heldout/image_ids.npy")[:].tolist()
    ok, facts = verify_training_outputs(root, kept, held, {"latent.npy": ((4, 32, 32), "float16")})
    assert ok and facts["samples"] == len(kept), facts["problems"]
    left = [p for p in fs().find(root) if "/.staging/" in p]
    assert not left, left  # every upload retired
    # the big arrays are chunked folders at their plain paths, committed whole (nested files and all)
    bucket = root.removeprefix("s3://")
    for folder, name in (("clip_embeddings", "tokens"), ("clip_embeddings", "pooled"), ("latents", "latents"),
                         ("dinov2_embeddings", "embeddings"), ("router_pairs", "latents"),
                         ("router_pairs", "clip_text_embeddings"), ("router_pairs", "dinov2_embeddings"),
                         ("heldout", "latents")):
        index = json.loads(fs().cat_file(f"{bucket}/{folder}/{name}/index.json"))
        assert [c["file"] for c in index["chunks"]] == sorted(
            p.rsplit("/", 1)[1] for p in fs().find(f"{bucket}/{folder}/{name}") if p.endswith(".npy"))
        assert not fs().exists(f"{bucket}/{folder}/{name}.npy")
        listed = storage.folder_files(storage.open_folder(root, folder))
        assert {f"{name}/{c['file']}" for c in index["chunks"]} | {f"{name}/index.json"} <= set(listed)

    # training code streams from s3:// as from a folder: the same items as a local copy of the outputs
    copy = tmp_path / "copy"
    for name in ("router_pairs", "expert_shards"):
        fs().get(f"{root.removeprefix('s3://')}/{name}", str(copy / name), recursive=True)
    (copy / "pipeline_manifest.json").write_bytes(fs().cat_file(f"{root.removeprefix('s3://')}/pipeline_manifest.json"))
    remote, local = (list(router_dataset(where, seed=0, with_dinov2=True)) for where in (root, copy))
    assert len(remote) == len(local) == len(kept) - len(held)
    for a, b in zip(remote, local):
        assert a["cluster"] == b["cluster"] and all(torch.equal(a[k], b[k]) for k in ("x_t", "t", "clip", "dinov2"))
    remote, local = (list(expert_dataset(where, 0, seed=0, with_key=True)) for where in (root, copy))
    assert len(remote) == len(local) > 0
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2:] == b[2:] for a, b in zip(remote, local))

    # and the shard browser indexes the shards where they lie, every one healthy
    index = build_index(root, cache_dir=tmp_path / "index-cache")
    assert sorted(index.samples["image_id"]) == sorted(kept)  # the expert shards and the held-out ones
    assert shard_health(index) == []
    image = read_image(index, kept[0], CropLookup(index.root))
    assert image[:2] == b"\xff\xd8"
