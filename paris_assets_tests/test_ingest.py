"""Ingest through img2dataset from a real HTTP server on 127.0.0.1, an image folder, and existing tars."""

import shutil

import pandas as pd
import pytest
import webdataset as wds

from paris_assets.engines import engine_for
from paris_assets.lib.ingest.http_server import refused_base_url, serve_directory
from paris_assets.lib.ingest.download import ingest, prepare_source_table
from paris_assets.lib.outputs.tars import TarShardWriter
from paris_assets.settings import parse_settings


def test_img2dataset_from_loopback_server(demo_files, tmp_path):
    folder, demo = demo_files
    settings = parse_settings({"source": {"kind": "demo", "demo_size": 64},
                               "ingest": {"processes": 1, "threads": 8, "samples_per_shard": 40, "timeout": 3}})
    demo_dir = tmp_path / "demo_source"
    shutil.copytree(folder, demo_dir / "")
    out = tmp_path / "raw"
    lines = []
    stats = ingest(settings.source, settings.ingest, str(out), demo_dir=str(demo_dir), seed=0, log=lines.append)
    samples = pd.read_parquet(out / "samples.parquet")
    failed = demo["expect"].eq("download_failed").sum()
    progress = [line for line in lines if line.startswith("raw_images: downloaded: ")]
    assert progress[-1].startswith(f"raw_images: downloaded: {stats['requested']:,}/{stats['requested']:,} URLs")
    assert stats["requested"] == len(demo) and stats["failed"] == failed
    assert stats["failed_by_reason"] == {"connection_refused": 3, "http_404": 3}
    assert samples["image_id"].is_unique
    ok = samples[samples["status"] == "success"]
    assert ok["shard"].notna().all() and ok["sha256"].str.len().eq(64).all()
    # the original bytes are kept, so every encoding reaches the filter untouched
    by_key = {s["__key__"]: s for s in wds.WebDataset(sorted(str(p) for p in out.glob("*.tar")), shardshuffle=False)}
    cmyk = ok[ok["url"].str.endswith("/cmyk.jpg")].iloc[0]
    assert by_key[cmyk["key"]]["jpg"] == (folder / "files" / "cmyk.jpg").read_bytes()
    assert not (out / "_tmp").exists() and not (out / "_input.parquet").exists()


def test_image_folder_source(tmp_path, demo_files):
    folder, _ = demo_files
    images = tmp_path / "images"
    images.mkdir()
    for name in ["sunset_00000.jpg", "ocean_00001.jpg", "gray16.png"]:
        shutil.copy(folder / "files" / name, images / name)
    (images / "sunset_00000.txt").write_text("a sunset from a sidecar")
    settings = parse_settings({"source": {"kind": "image_folder", "path": str(images)},
                               "ingest": {"processes": 1, "threads": 2}})
    out = tmp_path / "raw"
    stats = ingest(settings.source, settings.ingest, str(out), seed=0, log=lambda m: None)
    samples = pd.read_parquet(out / "samples.parquet").set_index("url")
    assert stats["downloaded"] == 3
    sunset = samples[samples.index.str.endswith("sunset_00000.jpg")].iloc[0]
    assert sunset["alt_text"] == "a sunset from a sidecar"
    assert samples[samples.index.str.endswith("gray16.png")].iloc[0]["caption_problem"] == "missing_caption"


def test_webdataset_source_is_indexed_in_place(tmp_path, demo_files):
    folder, _ = demo_files
    tar = tmp_path / "existing-000.tar"
    with open(tar, "wb") as fh, TarShardWriter(fh) as writer:
        writer.write("a1", {"jpg": (folder / "files" / "forest_00002.jpg").read_bytes(), "txt": b"trees",
                            "json": b'{"url": "http://x/a1.jpg", "punsafe": 0.1}'})
        writer.write("a2", {"txt": b"no image here"})
    settings = parse_settings({"source": {"kind": "webdataset", "path": str(tmp_path / "*.tar")}})
    out = tmp_path / "raw"
    stats = ingest(settings.source, settings.ingest, str(out), seed=0, log=lambda m: None)
    samples = pd.read_parquet(out / "samples.parquet").set_index("key")
    assert stats["requested"] == 2 and stats["downloaded"] == 1
    assert samples.loc["a1", "shard"] == str(tar) and samples.loc["a1", "alt_text"] == "trees"
    assert samples.loc["a1", "url"] == "http://x/a1.jpg" and samples.loc["a1", "punsafe"] == 0.1
    assert samples.loc["a2", "status"] != "success"


def test_loopback_server_serves_and_refuses(tmp_path):
    import urllib.error
    import urllib.request

    (tmp_path / "x.jpg").write_bytes(b"abc")
    with serve_directory(str(tmp_path)) as base:
        assert urllib.request.urlopen(base + "/x.jpg").read() == b"abc"
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(base + "/missing.jpg")
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(refused_base_url() + "/y.jpg", timeout=3)


def test_a_killed_url_list_download_resumes(demo_files, tmp_path):
    """raw_images from a URL list downloads into a folder keyed by the list, so the run after a kill fetches only
    the shards img2dataset had not finished."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from dagster import DagsterInstance, materialize

    from paris_assets.assets.common import code_version
    from paris_assets.assets.raw_images import build_raw_images
    from paris_assets.io_managers import ShardsIOManager
    from paris_assets.lib.store import storage
    from paris_assets.lib.store.chunks import work_key
    from paris_assets.lib.ingest.download import _download, source_identity, source_table

    folder, _ = demo_files
    requests = []

    class Counting(SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Counting, directory=str(folder / "files")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        names = sorted(p.name for p in (folder / "files").glob("*_000*.jpg"))[:40]
        base = f"http://127.0.0.1:{server.server_address[1]}"
        pd.DataFrame({"url": [f"{base}/{n}" for n in names], "caption": names}).to_parquet(tmp_path / "urls.parquet")
        settings = parse_settings({"data_dir": "data", "source": {"kind": "url_list", "path": "urls.parquet"},
                                   "ingest": {"processes": 1, "threads": 4, "samples_per_shard": 10}},
                                  base_dir=tmp_path)
        keyed = storage.staging_dir(settings.data_root, "raw_images", key=work_key(
            source_identity(settings.resolved_source), code_version(settings, "raw_images")))
        table, _refused = prepare_source_table(source_table(settings.resolved_source, None, 0)[0])
        _download(table, keyed, settings.ingest, log=lambda m: None)  # the run that got killed...
        for leftover in keyed.glob("00003*"):  # ...before its fourth shard was finished
            leftover.unlink()
        requests.clear()
        result = materialize([build_raw_images(settings)], instance=DagsterInstance.ephemeral(),
                             resources={"shards_io": ShardsIOManager(root=settings.data_root)})
        assert result.success
        assert len(requests) == 10  # the unfinished shard only, not all 40
        metadata = result.asset_materializations_for_node("raw_images")[0].metadata
        assert metadata["row_groups_read"].value == metadata["row_groups_total"].value == 1
        assert metadata["bytes_read"].value > 0 and "(none)" in metadata["refused_by_reason"].value
        samples = pd.read_parquet(tmp_path / "data" / "raw_images" / "samples.parquet")
        assert len(samples) == 40 and samples["status"].eq("success").all()
        assert not keyed.exists()  # committed: the resumable folder became the asset
    finally:
        server.shutdown()
        server.server_close()


def test_a_killed_download_leaves_no_workers_writing(demo_files, tmp_path):
    """The step process killed outright (SIGKILL) mid-download: img2dataset's workers outlive it, so the next
    run over the same folder stops them before it resumes, and the result is whole."""
    import functools
    import json
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from paris_assets.lib.ingest.download import DOWNLOADER, _group_running, download_with_img2dataset

    folder, _ = demo_files

    class Slow(SimpleHTTPRequestHandler):
        def do_GET(self):
            time.sleep(0.3)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Slow, directory=str(folder / "files")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    group = None
    try:
        names = sorted(p.name for p in (folder / "files").glob("*_000*.jpg"))[:60]
        base = f"http://127.0.0.1:{server.server_address[1]}"
        table = pd.DataFrame({"url": [f"{base}/{n}" for n in names], "image_id": [f"{i:016x}" for i in range(60)]})
        table.to_parquet(tmp_path / "table.parquet")
        out = tmp_path / "raw"
        options = {"processes": 2, "threads": 2, "samples_per_shard": 10, "timeout": 5, "retries": 0,
                   "distributor": "multiprocessing", "user_agent_token": None, "respect_opt_out": True}
        script = ("import json, sys, pandas as pd\nfrom paris_assets.lib.ingest.download import download_with_img2dataset\n"
                  "download_with_img2dataset(pd.read_parquet(sys.argv[1]), sys.argv[2], log=lambda m: None, "
                  "**json.loads(sys.argv[3]))\n")
        step = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "table.parquet"), str(out),
                                 json.dumps(options)])
        deadline = time.monotonic() + 120
        while not list(out.glob("0000*.tar")) and time.monotonic() < deadline:  # workers are writing
            time.sleep(0.2)
        group = int((out / DOWNLOADER).read_text().split()[1])
        step.send_signal(signal.SIGKILL)
        step.wait()
        assert _group_running(group)  # img2dataset's processes live on without the step

        lines = []
        download_with_img2dataset(table, str(out), log=lines.append, **options)
        assert not _group_running(group)
        assert any("stopped the img2dataset processes" in line for line in lines)
        counts = [json.loads(p.read_text())["count"] for p in out.glob("*_stats.json")]
        assert sum(counts) == 60 and not (out / DOWNLOADER).exists()
    finally:
        server.shutdown()
        server.server_close()
        if group is not None:  # nothing of this test left behind, whatever happened
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_url_list_refuses_unsafe_urls_before_download(demo_files, tmp_path):
    """A URL list's non-http(s) URLs never reach img2dataset: refused.parquet and the stats count them by reason,
    beside the repeated URL. (Link-local and metadata addresses are refused by the same check; test_urls proves
    that without sending traffic to them.)"""
    folder, _ = demo_files
    names = sorted(p.name for p in (folder / "files").glob("*_000*.jpg"))[:5]
    with serve_directory(str(folder / "files")) as base:
        urls = [f"{base}/{n}" for n in names] + [f"{base}/{names[0]}", (folder / "files" / names[1]).as_uri(),
                                                 f"ftp://127.0.0.1:1/{names[2]}"]
        pd.DataFrame({"url": urls, "caption": "x"}).to_parquet(tmp_path / "urls.parquet", row_group_size=3)
        settings = parse_settings({"source": {"kind": "url_list", "path": str(tmp_path / "urls.parquet")},
                                   "ingest": {"processes": 1, "threads": 2}})
        out = tmp_path / "raw"
        stats = ingest(settings.source, settings.ingest, str(out), seed=0, log=lambda m: None)
    samples = pd.read_parquet(out / "samples.parquet")
    refused = pd.read_parquet(out / "refused.parquet")
    assert stats["requested"] == stats["downloaded"] == 5 and samples["url"].str.startswith(base).all()
    assert stats["refused_by_reason"] == {"duplicate_url": 1, "unsupported_scheme": 2}
    assert sorted(refused["url"].str.split(":").str[0]) == ["file", "ftp", "http"]
    assert (stats["row_groups_read"], stats["row_groups_total"]) == (3, 3) and stats["bytes_read"] > 0


def test_a_recorded_group_now_owned_by_another_process_is_left_alone(tmp_path):
    """The download's record names a process group whose id now belongs to another process (another create
    time): that process is not killed. The same id with the recorded create time is the download's: killed."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    import psutil

    from paris_assets.lib.ingest.download import DOWNLOADER, _stop_leftover_download

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        started = psutil.Process(other.pid).create_time()
        marker = tmp_path / DOWNLOADER
        lines = []
        marker.write_text(f"{socket.gethostname()} {other.pid} {started - 50.0!r}")
        _stop_leftover_download(str(tmp_path), lines.append)
        assert other.poll() is None and not lines and not marker.exists()
        marker.write_text(f"{socket.gethostname()} {other.pid}")  # a record without a create time: left alone
        _stop_leftover_download(str(tmp_path), lines.append)
        assert other.poll() is None and not lines
        marker.write_text(f"{socket.gethostname()} {other.pid} {started!r}")
        _stop_leftover_download(str(tmp_path), lines.append)
        assert other.wait(timeout=30) == -signal.SIGKILL and "stopped the img2dataset processes" in lines[0]
    finally:
        if other.poll() is None:
            os.kill(other.pid, signal.SIGKILL)
            other.wait()


def test_under_the_ray_engine_img2dataset_downloads_with_its_ray_distributor(demo_files, tmp_path, capfd):
    """execution.engine: ray makes img2dataset spread its shards as Ray tasks (a local Ray started for the
    download here); every URL meets the same fate and every image arrives with the same bytes as with
    multiprocessing."""
    folder, demo = demo_files
    results = {}
    for engine in ("local", "ray"):
        settings = parse_settings({"source": {"kind": "demo", "demo_size": 64}, "execution": {"engine": engine},
                                   "ingest": {"processes": 1, "threads": 8, "samples_per_shard": 40, "timeout": 3}})
        demo_dir = tmp_path / engine / "demo_source"
        shutil.copytree(folder, demo_dir / "")
        out = tmp_path / engine / "raw"
        stats = ingest(settings.source, settings.ingest, str(out), demo_dir=str(demo_dir), seed=0,
                       log=lambda _m: None, download_options=engine_for(settings.execution).download_options())
        samples = pd.read_parquet(out / "samples.parquet").set_index("image_id").sort_index()
        by_key = {s["__key__"]: s["jpg"] for s in wds.WebDataset(sorted(str(p) for p in out.glob("*.tar")),
                                                                 shardshuffle=False)}
        images = {i: by_key[k] for i, k in samples.loc[samples["status"] == "success", "key"].items()}
        results[engine] = (stats, samples, images, capfd.readouterr().out)
    (local, local_samples, local_images, local_out), (ray, ray_samples, ray_images, ray_out) = \
        results["local"], results["ray"]
    # the download's child process said where its Ray is (its stdout); the local engine started none
    assert "connected to a local Ray on 127.0.0.1" in ray_out and "connected to" not in local_out
    assert (ray["requested"], ray["downloaded"], ray["failed"]) == (local["requested"], local["downloaded"],
                                                                   local["failed"])
    assert ray["failed_by_reason"] == local["failed_by_reason"] == {"connection_refused": 3, "http_404": 3}
    assert ray_samples["status"].equals(local_samples["status"])
    assert ray_images == local_images and len(ray_images) == local["downloaded"]
