"""Which weights, device and dtype made an output: resolved without the hub, and folded into the code version
and the resumable chunks' key; `make models` and the per-role smoke run."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from upath import UPath

from paris_assets.assets.common import code_version
from paris_assets.assets.embeddings import _store
from paris_assets.io_managers import AssetFolder
from paris_assets.lib.store import storage
from paris_assets.models.common import ModelRef, resolve_revision
from paris_assets.models.image_embedder import DINOV2_BASE
from paris_assets.models.profiles import PARIS, build_model, model_identity, model_ref
from paris_assets.models.tiny import TINY_VERSION
from paris_assets.settings import PROJECT_ROOT, parse_settings

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def settings_with(tmp_path, **models):
    return parse_settings({"data_dir": str(tmp_path / "data"), "models": models})


@pytest.mark.parametrize("asset", ["captions", "clip_embeddings", "dinov2_embeddings", "latents"])
def test_device_and_dtype_change_the_code_version(tmp_path, asset):
    versions = {code_version(settings_with(tmp_path, device=d, dtype=t), asset)
                for d, t in [("cpu", "float32"), ("cpu", "float16"), ("cuda", "float16"), ("cuda", "auto")]}
    assert len(versions) == 3  # cuda + auto is float16: the same outputs, the same version
    assert code_version(settings_with(tmp_path, device="cpu"), "cluster_labels") == \
        code_version(settings_with(tmp_path, device="cuda"), "cluster_labels")


@pytest.mark.parametrize("asset", ["clip_embeddings", "latents"])
def test_device_auto_gives_the_same_code_version_on_every_host(tmp_path, asset, monkeypatch):
    """The UI's code server on a CPU host and a GPU worker must agree, or the asset shows Unsynced for good."""
    settings = settings_with(tmp_path)  # device: auto, dtype: auto
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    on_cpu_host = code_version(settings, asset)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert code_version(settings, asset) == on_cpu_host
    assert code_version(settings_with(tmp_path, dtype="float16"), asset) != on_cpu_host  # the setting still counts


def test_paris_profile_is_pinned_to_commits_and_they_shape_the_code_version(tmp_path):
    assert all(len(ref.revision) == 40 for ref in PARIS.values())
    paris = settings_with(tmp_path, profile="paris", device="cpu")
    assert model_identity(paris, "latent_encoder") == {"model_id": "stabilityai/sd-vae-ft-mse", "device": "cpu",
                                                        "revision": PARIS["latent_encoder"].revision,
                                                        "dtype": "float32"}
    assert PARIS["latent_encoder"].revision[:10] in code_version(paris, "latents")
    other = settings_with(tmp_path, profile="paris", device="cpu", latent_encoder_revision="f" * 40)
    assert code_version(other, "latents") != code_version(paris, "latents")
    base = settings_with(tmp_path, profile="paris", image_embedder_id="facebook/dinov2-base")
    assert model_ref(base, "image_embedder") == DINOV2_BASE  # a known id named without revision gets its pin


def fake_cache(root, repo: str, commit: str, branch: str = "main"):
    """The Hugging Face cache layout a download leaves: refs/<branch> holds the commit of snapshots/<commit>/."""
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / branch).write_text(commit)
    (repo_dir / "snapshots" / commit).mkdir(parents=True)
    (repo_dir / "snapshots" / commit / "config.json").write_text("{}")
    return repo_dir / "snapshots" / commit


def test_a_branch_resolves_to_the_cached_commit(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # where this test's cache lives
    snapshot = fake_cache(tmp_path / "hub", "someone/some-vae", COMMIT)
    assert resolve_revision(ModelRef("someone/some-vae")) == COMMIT
    assert resolve_revision(ModelRef("someone/not-fetched")) == "main"  # said as it is, not guessed
    assert resolve_revision(ModelRef("someone/x", "b" * 40)) == "b" * 40
    assert resolve_revision(ModelRef(str(snapshot))) == COMMIT
    settings = settings_with(tmp_path, latent_encoder_id="someone/some-vae", device="cpu")
    assert model_identity(settings, "latent_encoder")["revision"] == COMMIT
    assert COMMIT[:10] in code_version(settings, "latents")


def test_local_folders_are_told_apart_by_their_files(tmp_path):
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    (tiny / "tiny.json").write_text(json.dumps({"version": TINY_VERSION, "seed": 7}))  # what ensure_tiny_models stamps
    assert resolve_revision(ModelRef(str(tiny))) == f"tiny-v{TINY_VERSION}-seed7"
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    first = resolve_revision(ModelRef(str(folder)))
    (folder / "config.json").write_text('{"changed": 1}')
    assert first.startswith("local-") and resolve_revision(ModelRef(str(folder))) != first


def test_resumable_chunks_are_not_shared_across_dtypes(tmp_path):
    upstream = tmp_path / "filtered_images"
    upstream.mkdir()
    (upstream / storage.MARKER).write_text(json.dumps({"run": 1}))
    folders = set()
    for dtype in ("float32", "float16"):
        settings = settings_with(tmp_path, device="cpu", dtype=dtype)
        model = build_model(settings, "text_encoder").load()
        folders.add(_store(settings, "clip_embeddings", AssetFolder(UPath(upstream)), model, 10).folder)
    assert len(folders) == 2


def run_module(module: str, *args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=600,
                          cwd=PROJECT_ROOT, env={**os.environ, "PARIS_CONFIG": os.devnull, **env})


def test_smoke_runs_one_image_and_one_prompt_per_role(tmp_path):
    done = run_module("paris_assets.models.smoke", "--profile", "tiny", "--data-dir", str(tmp_path),
                      "--device", "cpu", HF_HUB_OFFLINE="1")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert set(lines) == {"captioner", "text_encoder", "image_embedder", "latent_encoder"}
    assert "(1, 77, 32) float16, (1, 768) float16" in lines["text_encoder"]
    assert "(1, 4, 32, 32) float16" in lines["latent_encoder"] and "(1, 32) float32" in lines["image_embedder"]
    assert all(f"@ tiny-v{TINY_VERSION}-seed0  cpu float32" in line and " s, run " in line for line in lines.values())


def test_smoke_says_which_model_is_missing(tmp_path):
    done = run_module("paris_assets.models.smoke", "--profile", "paris", "--roles", "latent_encoder",
                      HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path))
    assert done.returncode == 1
    assert "stabilityai/sd-vae-ft-mse" in done.stderr and "make models" in done.stderr


def test_make_models_refuses_offline(tmp_path):
    done = run_module("paris_assets.models.fetch", HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path))
    assert done.returncode == 2 and "HF_HUB_OFFLINE" in done.stderr and "make models" in done.stderr


class NoSuchRevision(BaseHTTPRequestHandler):
    """A hub that knows no repository: what a wrong pin or a private mirror without the model answers."""

    def do_GET(self):
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Code", "RevisionNotFound")
        self.end_headers()
        self.wfile.write(b'{"error": "Invalid rev id"}')

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def test_make_models_stops_on_a_revision_the_hub_does_not_have(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), NoSuchRevision)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = run_module("paris_assets.models.fetch", "--no-smoke", HF_HUB_OFFLINE="0",
                          HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}", HF_HUB_CACHE=str(tmp_path))
    finally:
        server.shutdown()
    assert done.returncode == 1
    assert "cannot fetch Salesforce/blip2-opt-2.7b@59a1ef6c1e5117b3f65523d1c6066825bcf315e3" in done.stderr
    assert not list(tmp_path.glob("models--*/snapshots/*/*.safetensors"))
