"""filtered_images' per-image work as Ray tasks (execution.engine: ray): the same units, the same bytes out."""

import io
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import AssetKey
from PIL import Image

from paris_assets.bench.main import write_raw_shards
from paris_assets.engines import ray as ray_engine
from paris_assets.lib.images.filtering import FilterParams, filter_images
from paris_assets.lib.outputs.tars import iter_samples


def photographs() -> list[Image.Image]:
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    return [Image.open(folder / name).convert("RGB") for name in ("china.jpg", "flower.jpg")]


def blobs() -> list[bytes]:
    """Windows of two real photographs at web sizes and qualities, plus a copy, a cut file and an HTML page."""
    rng = np.random.default_rng(3)
    out = []
    for i in range(60):
        photo = photographs()[i % 2]
        w, h = (int(s * f) for s, f in zip(photo.size, rng.uniform(0.5, 1.0, 2)))
        left, top = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
        scale = rng.uniform(0.6, 1.8)
        window = photo.resize((round(w * scale), round(h * scale)), Image.LANCZOS, box=(left, top, left + w, top + h))
        buf = io.BytesIO()
        window.save(buf, "JPEG", quality=int(rng.integers(70, 96)))
        out.append(buf.getvalue())
    return out + [out[0], out[1][: len(out[1]) // 2], b"<!doctype html><html>not found</html>"]


def outputs(folder: Path) -> dict:
    crops = {}
    for shard in sorted((folder / "crops").glob("*.tar")):
        with open(shard, "rb") as fh:
            crops[shard.name] = list(iter_samples(fh))
    return {"kept": pd.read_parquet(folder / "kept.parquet"), "rejected": pd.read_parquet(folder / "rejected.parquet"),
            "crops": crops}


def test_filtering_on_ray_writes_what_local_processes_write(tmp_path, ray_cluster):
    (tmp_path / "raw").mkdir()
    samples = write_raw_shards(tmp_path / "raw", blobs(), per_shard=20)
    local = filter_images(samples, str(tmp_path / "local"), FilterParams(), processes=2, chunk_size=8,
                          log=lambda m: None)

    def on_ray(fn, units):
        return ray_engine.map_units(fn, units, label="filtered_images")

    remote = filter_images(samples, str(tmp_path / "ray"), FilterParams(), chunk_size=8, log=lambda m: None,
                           map_units=on_ray)
    a, b = outputs(tmp_path / "local"), outputs(tmp_path / "ray")
    pd.testing.assert_frame_equal(a["kept"], b["kept"])
    pd.testing.assert_frame_equal(a["rejected"], b["rejected"])
    assert a["crops"] == b["crops"] and len(a["crops"]) == 10  # raw shards of 20, 20, 20, 3 in units of 8
    assert local["dropped"] == remote["dropped"]
    assert {"duplicate_exact", "truncated", "undecodable"} <= set(local["dropped"])
    assert local["kept"] == remote["kept"] > 40


def test_the_asset_runs_its_units_on_ray_when_the_settings_say_so(trained, tmp_path, ray_cluster):
    """raw_images + filtered_images of the trained fixture's demo, with execution.engine: ray: the same kept and
    rejected tables as the local run, and the metadata says where the units ran."""
    from dagster import DagsterInstance

    from paris_assets.definitions import build_defs
    from paris_assets.settings import parse_settings

    local_settings, _run, _instance, local_data = trained
    config = local_settings().as_dict()
    config.update(data_dir=str(tmp_path / "data"), execution={"engine": "ray"})
    settings = parse_settings(config, base_dir=tmp_path)
    result = build_defs(settings).resolve_implicit_global_asset_job_def().execute_in_process(
        instance=DagsterInstance.ephemeral(), asset_selection=[AssetKey("raw_images"), AssetKey("filtered_images")])
    assert result.success
    [materialization] = [m for m in result.asset_materializations_for_node("filtered_images")]
    assert materialization.metadata["engine"].value.startswith("ray: this process's Ray")
    for table in ("kept.parquet", "rejected.parquet"):  # each run served the demo on its own port: urls differ
        ours, theirs = (pd.read_parquet(d / "filtered_images" / table) for d in (tmp_path / "data", local_data))
        same = [c for c in ours.columns if c not in ("url", "detail")]
        pd.testing.assert_frame_equal(ours[same], theirs[same])
        assert len(ours) > 5
