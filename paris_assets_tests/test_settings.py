"""Settings: defaults, validation messages that name the key, path resolution, code versions."""

import re

import pytest

from paris_assets.assets.common import CODE_VERSIONS, code_version
from paris_assets.settings import SettingsError, load_settings, parse_settings


def test_defaults_when_file_is_absent(tmp_path):
    settings = load_settings(tmp_path / "paris.yaml")
    assert settings.source.kind == "demo"
    assert settings.filter.image_size == 256
    assert settings.data_root == str(tmp_path / "data")


def test_relative_paths_resolve_against_the_file(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "paris.yaml").write_text("data_dir: ../out\nsource: {kind: url_list, path: urls.parquet}\n")
    settings = load_settings(tmp_path / "conf" / "paris.yaml")
    assert settings.data_root == str(tmp_path / "conf" / "../out")
    assert settings.resolved_source.path == str(tmp_path / "conf" / "urls.parquet")
    assert settings.resolve("s3://bucket/x") == "s3://bucket/x"


@pytest.mark.parametrize("raw,needle", [
    ({"filtr": {}}, "filtr: unknown key"),
    ({"filter": {"min_sid": 3}}, "filter.min_sid: unknown key"),
    ({"source": {"kind": "laion"}}, "source.kind: got 'laion'; allowed values: 'demo', 'url_list'"),
    ({"filter": {"resize_mode": "crop"}}, "filter.resize_mode: got 'crop'"),
    ({"filter": {"max_punsafe": 1.5}}, "filter.max_punsafe"),
    ({"filter": {"image_size": "big"}}, "filter.image_size"),
    ({"source": {"kind": "url_list"}}, "source.path is required when source.kind is 'url_list'"),
    ({"ingest": {"distributor": "dask"}}, "ingest.distributor: got 'dask'; allowed values: 'multiprocessing'"),
])
def test_bad_settings_name_the_key(raw, needle):
    with pytest.raises(SettingsError) as err:
        parse_settings(raw, origin="paris.yaml")
    assert needle in str(err.value)
    assert "paris.yaml" in str(err.value)


def test_bad_yaml_and_missing_config_file(tmp_path, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("filter: [1, 2\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(bad)
    monkeypatch.setenv("PARIS_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(SettingsError, match="no such file"):
        load_settings()


def test_code_version_follows_only_the_settings_that_shape_the_asset():
    base = parse_settings({})
    other_filter = parse_settings({"filter": {"min_side": 32}})
    more_workers = parse_settings({"filter": {"processes": 8}, "ingest": {"threads": 64}})
    other_source = parse_settings({"source": {"demo_size": 500}})
    assert code_version(base, "filtered_images") != code_version(other_filter, "filtered_images")
    assert code_version(base, "raw_images") == code_version(other_filter, "raw_images")
    assert code_version(base, "raw_images") == code_version(more_workers, "raw_images")
    assert code_version(base, "filtered_images") == code_version(more_workers, "filtered_images")
    assert code_version(base, "raw_images") != code_version(other_source, "raw_images")


@pytest.mark.parametrize("raw,needle", [
    ({"execution": {"engine": "dask"}}, "execution.engine: got 'dask'; allowed values: 'local' or 'ray'"),
    ({"execution": {"ray_address": "auto"}}, "execution.ray_address is 'auto' but execution.engine is 'local'"),
    ({"execution": {"engine": "ray", "ray_address": "headnode"}}, "execution.ray_address: Value error, got 'headnode'"),
    ({"execution": {"gpus_per_worker": 0, "cpus_per_worker": 0}}, "both 0"),
    ({"execution": {"max_retries": -1}}, "execution.max_retries"),
])
def test_bad_execution_settings_say_what_to_fix(raw, needle):
    with pytest.raises(SettingsError) as err:
        parse_settings(raw, origin="paris.yaml")
    assert needle in str(err.value)


def test_execution_settings_shape_no_asset():
    """The engines write the same bytes: switching to Ray marks nothing Unsynced."""
    base = parse_settings({})
    ray = parse_settings({"execution": {"engine": "ray", "ray_address": "ray://head:10001", "num_workers": 8}})
    assert ray.execution.engine == "ray" and base.execution.engine == "local"
    for asset in CODE_VERSIONS:  # the model stages and filtered_images' units run under both engines
        assert code_version(base, asset) == code_version(ray, asset)


@pytest.mark.parametrize("raw,needle", [
    ({"media": "video", "source": {"kind": "image_folder", "path": "x"}}, "use kind: video_folder"),
    ({"source": {"kind": "video_folder", "path": "x"}}, "set media: video"),
    ({"media": "video", "captions": {"source": "blip2"}}, "BLIP-2 captions images, not clips"),
    ({"media": "video", "video": {"num_frames": 16}}, "4k+1"),
    ({"media": "video", "shards": {"include_jpg": True}}, "set shards.include_mp4"),
    ({"shards": {"include_mp4": True}}, "is for media: video"),
    ({"media": "video", "filter": {"image_size": 100}}, "multiple of 8"),
    ({"media": "audio"}, "allowed values"),
])
def test_media_settings_that_do_not_fit_are_refused_with_the_fix(raw, needle):
    with pytest.raises(SettingsError, match=re.escape(needle)):
        parse_settings(raw)


def test_video_defaults_follow_the_media():
    video, image = parse_settings({"media": "video"}), parse_settings({})
    assert (video.captions.source, image.captions.source) == ("alt_text", "blip2")
    assert (video.heldout_max, image.heldout_max) == (2048, 10_000)
    assert parse_settings({"media": "video", "shards": {"heldout_max": 7}}).heldout_max == 7
