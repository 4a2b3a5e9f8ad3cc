"""The whole graph with data_dir on object storage (fsspec's memory://, as s3:// or gs:// would be): every
asset commits through the upload-then-marker path, and the training outputs verify there."""

import shutil
import uuid

import fsspec
import numpy as np
import pandas as pd
import torch
from dagster import DagsterInstance

from paris_assets.definitions import build_defs
from paris_assets.loaders import router_dataset
from paris_assets.lib.storage import MARKER
from paris_assets.lib.validation import verify_training_outputs
from paris_assets.settings import PROJECT_ROOT, parse_settings

ASSETS = ["raw_images", "filtered_images", "captions", "clip_embeddings", "dinov2_embeddings", "latents",
          "cluster_labels", "cluster_report", "expert_shards", "router_pairs"]


def test_whole_graph_on_object_storage(tmp_path, monkeypatch):
    monkeypatch.setenv("PARIS_STAGING_DIR", str(tmp_path / "staging"))
    (tmp_path / "home").mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "home" / "dagster.yaml")
    root = f"memory://graph-{uuid.uuid4().hex[:8]}"
    settings = parse_settings({
        "data_dir": root, "source": {"kind": "demo", "demo_size": 64}, "ingest": {"processes": 1, "threads": 8},
        "filter": {"processes": 1}, "captions": {"source": "alt_text"}, "clustering": {"k": 3},
        "report": {"balance_severity": "WARN"}}, base_dir=tmp_path)
    fs = fsspec.filesystem("memory")
    try:
        result = build_defs(settings).resolve_implicit_global_asset_job_def().execute_in_process(
            instance=DagsterInstance.local_temp(str(tmp_path / "home")))
        assert result.success
        for asset in ASSETS:
            assert fs.exists(f"{root}/{asset}/{MARKER}"), asset  # committed, marker last
        with fs.open(f"{root}/filtered_images/kept.parquet", "rb") as fh:
            kept = pd.read_parquet(fh)["image_id"].tolist()
        with fs.open(f"{root}/heldout/image_ids.npy", "rb") as fh:
            held = np.load(fh).tolist()
        ok, facts = verify_training_outputs(root, kept, held, {"latent.npy": ((4, 32, 32), "float16")})
        assert ok and facts["samples"] == len(kept), facts["problems"]
        assert not list((tmp_path / "staging").rglob("*.npy"))  # nothing left in local staging

        # the router loader reads its rows where they lie (ranged reads), and yields what a local copy yields
        fs.get(f"{root}/router_pairs", str(tmp_path / "copy" / "router_pairs"), recursive=True)
        remote = list(router_dataset(root, seed=0, with_dinov2=True))
        local = list(router_dataset(tmp_path / "copy", seed=0, with_dinov2=True))
        assert len(remote) == len(local) == len(kept) - len(held)
        for a, b in zip(remote, local):
            assert a["cluster"] == b["cluster"] and all(torch.equal(a[k], b[k]) for k in ("x_t", "t", "clip", "dinov2"))
    finally:
        fs.rm(root, recursive=True)
