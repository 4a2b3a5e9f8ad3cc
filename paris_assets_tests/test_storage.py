"""IO managers: write, then read back, on the local disk and on fsspec's memory://; swaps leave nothing stale."""

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import build_input_context, build_output_context, AssetKey

from paris_assets.io_managers import NpyIOManager, ParquetIOManager, ShardsIOManager
from paris_assets.lib.store import storage
from paris_assets.lib.outputs.tars import TarShardWriter


def roots(tmp_path):
    return [str(tmp_path / "data"), f"memory://paris-{uuid.uuid4().hex[:8]}"]


def roundtrip(manager, name, value):
    manager.handle_output(build_output_context(asset_key=AssetKey(name), run_id="r1"), value)
    upstream = build_output_context(asset_key=AssetKey(name))
    return manager.load_input(build_input_context(upstream_output=upstream, asset_key=AssetKey(name)))


@pytest.mark.parametrize("where", [0, 1])
def test_tables_and_arrays_roundtrip(tmp_path, where):
    root = roots(tmp_path)[where]
    frame = pd.DataFrame({"image_id": ["a", "b"], "score": [1.5, 2.5]})
    folder = roundtrip(ParquetIOManager(root=root), "filtered_images", {"kept": frame})
    pd.testing.assert_frame_equal(folder.table("kept"), frame)
    arr = np.arange(12, dtype=np.float16).reshape(3, 4)
    folder = roundtrip(NpyIOManager(root=root), "latents", {"latents": arr})
    np.testing.assert_array_equal(folder.array("latents"), arr)
    assert set(folder.files()) == {"latents.npy"}


@pytest.mark.parametrize("where", [0, 1])
def test_shards_folder_swap_leaves_nothing_stale(tmp_path, where):
    root = roots(tmp_path)[where]
    manager = ShardsIOManager(root=root)

    def staged(n):
        folder = storage.staging_dir(root, "expert_shards")
        for k in range(n):
            (folder / f"cluster_{k}").mkdir()
            with open(folder / f"cluster_{k}" / "shard-000000.tar", "wb") as fh, TarShardWriter(fh) as w:
                w.write(f"id{k}", {"txt": b"hello"})
        return folder

    first = roundtrip(manager, "expert_shards", staged(8))
    assert len(first.shards()) == 8
    second = roundtrip(manager, "expert_shards", staged(5))
    assert len(second.shards()) == 5
    from upath import UPath

    on_disk = sorted(str(p.relative_to(second.path)) if isinstance(p, Path) else p.path
                     for p in UPath(second.path).rglob("*.tar"))
    assert len(on_disk) == 5  # nothing from the K=8 run survives


def test_reading_an_incomplete_folder_fails_clearly(tmp_path):
    (tmp_path / "data" / "raw_images").mkdir(parents=True)
    (tmp_path / "data" / "raw_images" / "00000.tar").write_bytes(b"partial")
    with pytest.raises(storage.IncompleteOutput, match="materialise raw_images first"):
        storage.open_folder(str(tmp_path / "data"), "raw_images")


def test_failed_write_keeps_the_old_output(tmp_path):
    root = str(tmp_path / "data")
    manager = ParquetIOManager(root=root)
    roundtrip(manager, "captions", {"captions": pd.DataFrame({"x": [1]})})
    with pytest.raises(TypeError, match="cannot store"):
        manager.handle_output(build_output_context(asset_key=AssetKey("captions")), ["not a table"])
    assert storage.open_folder(root, "captions")
    assert pd.read_parquet(tmp_path / "data" / "captions" / "captions.parquet")["x"].tolist() == [1]


def test_staging_left_by_a_dead_process_is_swept(tmp_path):
    import subprocess
    import sys

    root = str(tmp_path / "data")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = storage.staging_dir(root, "latents")
    (abandoned / "latents.npy").write_bytes(b"half")
    (abandoned / storage.OWNER).write_text(f"{__import__('socket').gethostname()} {dead.stdout.strip()}")
    mine = storage.staging_dir(root, "latents")
    assert not abandoned.exists() and mine.exists()
    assert storage.staging_dir(root, "latents").exists() and mine.exists()  # a live owner's folder stays
    resumable = storage.staging_dir(root, "latents-chunks", key="abc")
    assert storage.staging_dir(root, "latents-chunks", key="abc") == resumable


def test_resumable_work_for_changed_inputs_is_swept(tmp_path):
    root = str(tmp_path / "data")
    old = storage.staging_dir(root, "latents-chunks", key="0123456789abcdef")
    (old / "chunk-000000.latents.npy").write_bytes(b"from inputs that have since changed")
    other_asset = storage.staging_dir(root, "captions-chunks", key="0123456789abcdef")
    building = storage.staging_dir(root, "latents")  # an unkeyed staging folder of a live run
    new = storage.staging_dir(root, "latents-chunks", key="fedcba9876543210")
    assert new.exists() and not old.exists()
    assert other_asset.exists() and building.exists()


def test_leftovers_of_killed_commits_are_swept(tmp_path):
    import time

    import fsspec

    local = str(tmp_path / "data")
    left = tmp_path / "data" / ".trash" / "latents-0123456789ab"  # killed between the two renames
    left.mkdir(parents=True)
    (left / "latents.npy").write_bytes(b"old")
    staged = storage.staging_dir(local, "latents")
    (staged / "latents.npy").write_bytes(b"new")
    storage.commit_folder(staged, local, "latents")
    assert not left.exists()

    root = f"memory://sweep-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    stale, fresh = f"{root}/.staging/latents-aaaaaaaaaaaa", f"{root}/.staging/latents-bbbbbbbbbbbb"
    fs.pipe(f"{stale}/{storage.STARTED}", str(time.time() - 3 * 86400).encode())
    fs.pipe(f"{stale}/latents.npy", b"half an upload, three days old")
    fs.pipe(f"{fresh}/{storage.STARTED}", str(time.time()).encode())  # another run uploading right now
    staged = storage.staging_dir(root, "latents")
    (staged / "latents.npy").write_bytes(b"new")
    storage.commit_folder(staged, root, "latents")
    assert not fs.exists(stale) and fs.exists(f"{fresh}/{storage.STARTED}")
    assert sorted(p.rsplit("/", 1)[1] for p in fs.find(f"{root}/latents")) == [storage.MARKER, "latents.npy"]
    fs.rm(root, recursive=True)


def test_a_commit_syncs_files_and_folders_before_the_rename_that_publishes_them(tmp_path, monkeypatch):
    import os

    root = str(tmp_path / "data")
    staged = storage.staging_dir(root, "latents")
    (staged / "sub").mkdir()
    (staged / "latents.npy").write_bytes(b"new")
    (staged / "sub" / "part.bin").write_bytes(b"part")
    events = []
    plain_fsync, plain_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        plain_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        plain_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = storage.commit_folder(staged, root, "latents")
    publish = events.index(("replace", str(staged), str(target)))
    synced_before = {e[1] for e in events[:publish] if e[0] == "fsync"}
    every_file_and_folder = {str(staged)} | {str(staged / n) for n in ("latents.npy", "sub", "sub/part.bin", storage.MARKER)}
    assert every_file_and_folder <= synced_before
    assert ("fsync", str(tmp_path / "data")) in events[publish:]  # the rename made durable

    events.clear()
    storage.write_atomic(root, "pipeline_manifest.json", b"{}")
    (replace_event,) = [e for e in events if e[0] == "replace"]
    assert events[0] == ("fsync", replace_event[1]) and events[-1] == ("fsync", str(tmp_path / "data"))
    assert (tmp_path / "data" / "pipeline_manifest.json").read_bytes() == b"{}"


def test_uploads_of_dead_processes_are_swept_and_the_pointed_one_is_kept(tmp_path):
    """On an object store a commit removes the uploads a killed process of this host left, however young; it
    keeps a live process' upload, one from another machine under the same host name (its boot differs), and
    the upload a killed commit's marker still points at until its own pointer has moved on."""
    import json
    import subprocess
    import sys
    import time

    import fsspec

    from paris_assets.lib.store.processes import this_process

    root = f"memory://uploads-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    staged = storage.staging_dir(root, "latents")
    (staged / "latents.npy").write_bytes(b"old")
    storage.commit_folder(staged, root, "latents")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    me = this_process()
    uploads = {  # name -> who began it
        "dead": {**me, "pid": dead.stdout.strip()},
        "live": me,
        "elsewhere": {**me, "pid": dead.stdout.strip(), "started": "1@another-boot"},
        "pointed": {**me, "pid": dead.stdout.strip()},
    }
    for name, who in uploads.items():
        record = {"time": time.time(), "pidns": storage._pid_namespace(), **who}
        fs.pipe(f"{root}/.staging/latents-{name}/{storage.STARTED}", json.dumps(record).encode())
        fs.pipe(f"{root}/.staging/latents-{name}/latents.npy", b"half" if name != "pointed" else b"whole")
    marker = json.loads(fs.cat(f"{root}/latents/{storage.MARKER}"))
    fs.pipe(f"{root}/.staging/latents-pointed/{storage.MARKER}", json.dumps(marker).encode())
    fs.pipe(f"{root}/latents/{storage.MARKER}", json.dumps({**marker, storage.LOCATION: ".staging/latents-pointed"}).encode())
    assert (storage.open_folder(root, "latents") / "latents.npy").read_bytes() == b"whole"  # a killed settle

    staged = storage.staging_dir(root, "latents")
    (staged / "latents.npy").write_bytes(b"new")
    storage.commit_folder(staged, root, "latents")
    left = sorted(p.rsplit("/", 1)[1].removeprefix("latents-") for p in fs.ls(f"{root}/.staging", detail=False))
    assert left == ["elsewhere", "live"]
    assert (storage.open_folder(root, "latents") / "latents.npy").read_bytes() == b"new"
    fs.rm(root, recursive=True)


def test_an_upload_is_judged_dead_only_from_inside_its_own_pid_namespace():
    """A STARTED record whose process has ended on this host is abandoned; the same record written from another
    PID namespace (a container on this kernel under the same host name) is not: only its age can tell."""
    import json
    import subprocess
    import sys
    import time

    from paris_assets.lib.store import storage
    from paris_assets.lib.store.processes import this_process

    child = subprocess.run([sys.executable, "-c", "import json; from paris_assets.lib.store.processes import this_process; "
                            "print(json.dumps(this_process()))"], capture_output=True, text=True, check=True)
    dead = {"time": time.time(), "pidns": storage._pid_namespace(), **json.loads(child.stdout)}
    assert storage._abandoned(dead)
    assert not storage._abandoned({**dead, "pidns": "pid:[4026531836]" if dead["pidns"] != "pid:[4026531836]"
                                   else "pid:[1]"})
    assert not storage._abandoned({"time": time.time(), "pidns": storage._pid_namespace(), **this_process()})
    assert storage._abandoned({**dead, "pidns": "elsewhere", "time": time.time() - 49 * 3600})  # age still decides
