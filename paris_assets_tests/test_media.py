"""The media seam: each media object gives what the Media Protocol promises, and nothing outside paris_assets/media
branches on the media."""

import re
from pathlib import Path

import numpy as np
import pytest

from paris_assets.assets.common import CODE_VERSIONS, SHAPED_BY
from paris_assets.lib.ingest.download import Demo
from paris_assets.media import Media, media_for
from paris_assets.models.profiles import ASSET_ROLES, PARIS, PARIS_VIDEO, model_ref
from paris_assets.settings import parse_settings

PACKAGE = Path(__file__).resolve().parents[1] / "paris_assets"
MODEL_ASSETS = ("clip_embeddings", "dinov2_embeddings", "latents", "clip_image_embeddings")
ROLES = {*PARIS, *PARIS_VIDEO, "clip_image_encoder"}


def settings_of(media: str):
    return parse_settings({"media": media, "models": {"profile": "tiny"}, "captions": {"source": "alt_text"}})


def protocol_members() -> set[str]:
    """Every attribute and method the Protocol declares."""
    names = set(getattr(Media, "__annotations__", {}))
    names |= {n for n, v in vars(Media).items() if not n.startswith("_") and (callable(v) or isinstance(v, property))}
    return names


@pytest.mark.parametrize("name", ["image", "video"])
def test_each_media_gives_every_member_of_the_protocol(name):
    media = media_for(settings_of(name))
    assert media.name == name
    missing = {m for m in protocol_members() if not hasattr(media, m)}
    assert not missing, f"{type(media).__name__} lacks {sorted(missing)}"
    assert isinstance(media.make_args, str) and isinstance(media.shown_columns, tuple)
    assert isinstance(media.text_check_note, str) and media.latent_check_note
    demo = media.demo
    assert isinstance(demo, Demo) and callable(demo.make) and callable(demo.url_table) and demo.size >= 16
    for asset in CODE_VERSIONS:
        assert isinstance(media.code_version(asset), str)
        base = SHAPED_BY[asset]
        shaped = media.shaped_by(asset, base)
        assert set(base) <= set(shaped), f"{asset}: the media drops settings its output depends on"
        assert media.kinds({"numpy"}) >= {"numpy"}
        description = media.description(asset)
        assert description is None or description.strip()
        assert set(media.roles(asset)) <= ROLES
    for asset in MODEL_ASSETS:
        arrays = media.arrays(asset)
        assert arrays and all(isinstance(n, str) and isinstance(k, str) and np.dtype(d) for n, k, d in arrays)
    assert media.roles("latents") == (media.latent_role,)
    assert set(media.manifest_roles) <= ROLES
    for role in media.manifest_roles:
        assert model_ref(media.settings, role).model_id
    assert media.frames in (None, "first", "keyframes")


def test_image_and_video_differ_where_clips_do():
    image, video = media_for(settings_of("image")), media_for(settings_of("video"))
    assert image.kinds({"numpy"}) == {"numpy"} and video.kinds({"numpy"}) == {"numpy", "video"}
    assert image.description("latents") is None and "HunyuanVideo" in video.description("latents")
    assert image.code_version("latents") == "" and video.code_version("latents") == "v1"
    assert image.shaped_by("latents", SHAPED_BY["latents"]) == SHAPED_BY["latents"]
    assert video.shaped_by("latents", SHAPED_BY["latents"])[0] == "media"
    assert image.roles("clip_embeddings") == (ASSET_ROLES["clip_embeddings"],)
    assert video.roles("clip_embeddings") == ("text_encoder", "t5_encoder")
    assert [n for n, _, _ in video.arrays("clip_embeddings")] == ["tokens", "pooled", "t5_tokens", "t5_mask"]
    assert (image.frames, video.frames) == (None, "first")
    assert (image.clips, video.clips) == (False, True)
    assert (image.demo.size, video.demo.size) == (2000, 200) and video.demo.stamp == {"media": "video"}
    assert (image.make_args, video.make_args) == ("", " MEDIA=video")
    shapes = {"t5_tokens": (226, 8), "t5_mask": (226,), "dinov2": (32,)}
    assert image.shard_members(shapes) == {}
    assert set(video.shard_members(shapes)) == {"t5_tokens.npy", "t5_mask.npy", "dinov2.npy"}


def test_the_clip_grid_shows_each_clip_above_its_reconstruction():
    video = media_for(settings_of("video"))
    clips = np.zeros((2, 5, 16, 16, 3), np.uint8)
    png, caption = video.reconstruction_grid(clips, clips)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and "frames left to right" in caption


# a comparison with a media name, or a media field compared with anything
BRANCH = re.compile(r'(==|!=) *"(video|image)"|media *(==|!=)|is_video')


def outside_the_seam() -> list[Path]:
    """Every module but the media package and settings.py (which validates the media's name)."""
    return [p for p in sorted(PACKAGE.rglob("*.py"))
            if p.relative_to(PACKAGE).parts[0] != "media" and p.relative_to(PACKAGE) != Path("settings.py")]


def test_no_module_outside_the_media_package_branches_on_the_media():
    hits = [f"{p.relative_to(PACKAGE)}:{i}: {line.strip()}" for p in outside_the_seam()
            for i, line in enumerate(p.read_text().splitlines(), 1) if BRANCH.search(line)]
    assert not hits, "branch on the media object's members instead (paris_assets/media):\n" + "\n".join(hits)


def test_only_the_media_package_reads_settings_media():
    hits = [f"{p.relative_to(PACKAGE)}:{i}" for p in outside_the_seam()
            for i, line in enumerate(p.read_text().splitlines(), 1) if "settings.media" in line]
    assert not hits, "ask media_for(settings) instead:\n" + "\n".join(hits)


def test_lib_does_not_import_the_media_package():
    hits = [str(p.relative_to(PACKAGE)) for p in sorted((PACKAGE / "lib").rglob("*.py"))
            if re.search(r"^\s*(from|import) +(paris_assets\.media|\.+media)\b", p.read_text(), re.M)]
    assert not hits
