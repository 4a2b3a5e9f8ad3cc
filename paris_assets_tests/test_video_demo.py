"""The video demo: seeded, byte-deterministic clips in every theme, each planted bad input as its recipe says,
checked with PyAV directly and over a real loopback server."""

import hashlib
import re
import urllib.error
import urllib.request
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from paris_assets.lib.ingest.http_server import serve_directory
from paris_assets.lib.images.decode import image_phash
from paris_assets.lib.demo.video import (_CAPTIONS, KEPT, NEAR_COPY_RECIPES, SIDES, THEMES, TOO_SHORT_SECONDS,
                                         make_video_demo, video_folder_rows, video_url_table)

N = 16  # two clean clips per theme; every planted case still appears

# recipe -> (file name, expected fate): what each planted input is and what filtering owes it.
PLANTED = {
    "faststart_half": ("truncated_0.mp4", "truncated"),
    "moov_last_0.6": ("truncated_1.mp4", "truncated"),
    "zero_bytes": ("empty_0.mp4", "empty_file"),
    "html_as_video_mp4": ("page_0.mp4", "undecodable"),
    "http_404": ("", "download_failed"),
    "one_picture_2s": ("static_0.mp4", "static"),
    "spin_then_traffic": ("cut_0.mp4", "scene_cut"),
    "1_frame": ("one_frame_0.mp4", "one_frame"),
    "0.5s": ("short_0.mp4", "too_short"),
    "48x32": ("tiny_0.mp4", "too_small"),
    "mpeg4_avi": ("odd_mpeg4.avi", KEPT),
    "h264_yuv444p": ("odd_yuv444p.mp4", KEPT),
    "h264_yuv420p10le": ("odd_10bit.mp4", KEPT),
    "portrait_stored_landscape_rotate_-90": ("rotated_0.mp4", KEPT),
    "pts_gaps_33_33_66_100_33_50ms": ("vfr_0.mp4", KEPT),
    "no_caption": ("nocaption_0.mp4", "missing_caption"),
    "same_bytes": ("copy_00.mp4", "duplicate_exact"),
    **{r.name: (f"near_{r.name}_00.mp4", "duplicate_near") for r in NEAR_COPY_RECIPES},
}
UNOPENABLE = {"truncated_1.mp4", "empty_0.mp4", "page_0.mp4"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("video_demo")
    return folder, make_video_demo(folder, n=N, seed=0)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "files").iterdir())}


def decode(path: Path) -> tuple[list[np.ndarray], list[float], list[int], dict]:
    """Every frame (RGB), its time, its display rotation, and what the container declares of the stream (frames,
    width, height, codec, pix_fmt, seconds), read while the container is open: PyAV 18.1 refuses a closed one."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, times, rotations = [], [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time))
            rotations.append(frame.rotation)
        codec = stream.codec_context
        declared = {"frames": stream.frames, "width": codec.width, "height": codec.height, "codec": codec.name,
                    "pix_fmt": codec.pix_fmt, "seconds": float(stream.duration * stream.time_base)}
    return frames, times, rotations, declared


def row(table: pd.DataFrame, name: str) -> pd.Series:
    return table.set_index("name").loc[name]


def test_same_seed_gives_the_same_bytes(demo, tmp_path):
    """Files (clips and caption sidecars) and rows are identical for the same seed; another seed draws others."""
    folder, table = demo
    again = make_video_demo(tmp_path / "again", n=N, seed=0)
    pd.testing.assert_frame_equal(table, again)
    assert _digests(folder) == _digests(tmp_path / "again")
    other = make_video_demo(tmp_path / "other", n=len(THEMES), seed=1)
    first = _digests(tmp_path / "other")
    assert all(first.get(name) != digest for name, digest in _digests(folder).items()
               if re.match(r"^[a-z]+_\d{4}\.mp4$", name))
    assert set(other["theme"]) == set(THEMES)


def test_every_theme_is_present_with_its_own_captions(demo):
    _, table = demo
    clean = table[table["name"].str.match(r"^[a-z]+_\d{4}\.mp4$")]
    assert len(clean) == N and (clean["expected"] == KEPT).all()
    assert clean["theme"].value_counts().to_dict() == {t: N // len(THEMES) for t in THEMES}
    for theme, caption in zip(clean["theme"], clean["caption"]):
        patterns = [re.escape(t).replace(re.escape("{a}"), r"\w+") for t in _CAPTIONS[theme]]
        assert any(re.fullmatch(p, caption) for p in patterns), (theme, caption)
    # Clean clips stay within the advertised shapes and move (the static threshold sits between 0 and these).
    assert clean["width"].between(*SIDES).all() and clean["height"].between(*SIDES).all()
    assert clean["seconds"].between(2.0, 3.0).all() and clean["fps"].between(12, 30).all()
    assert clean["motion"].min() > 0.5


def test_every_planted_case_is_present_with_its_fate(demo):
    _, table = demo
    planted = table[table["recipe"] != ""].set_index("recipe")
    assert not planted.index.duplicated().any()
    assert {r: (planted.loc[r, "name"], planted.loc[r, "expected"]) for r in planted.index} == PLANTED
    near = table[table["expected"] == "duplicate_near"]
    assert (near["duplicate_of"].isin(table.loc[table["expected"] == KEPT, "name"])).all()
    assert (near[["width", "height"]].min(axis=1) >= SIDES[0]).all()  # a copy is a duplicate, not too small


@pytest.mark.parametrize("name", [n for n, _ in PLANTED.values() if n] + ["shapes_0000.mp4", "zoom_0002.mp4"])
def test_each_file_decodes_as_planned(demo, name):
    """PyAV opens and decodes each file the way its row says: every encoded frame, at its size, codec and pixel
    format; the truncated faststart file declares more frames than it holds; the rest do not open at all."""
    folder, table = demo
    expect, path = row(table, name), folder / "files" / name
    if name in UNOPENABLE:
        with pytest.raises(av.error.FFmpegError):
            decode(path)
        return
    if name == "truncated_0.mp4":
        frames = 0
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.frames == expect["frames"]  # the moov up front still promises them all
            try:
                for _ in container.decode(stream):
                    frames += 1
            except av.error.FFmpegError:
                pass  # the data ends mid-packet; what decoded before is what counts
        assert 0 < frames < expect["frames"]
        return
    frames, _, _, declared = decode(path)
    assert len(frames) == declared["frames"] == expect["frames"]
    assert (declared["width"], declared["height"]) == (expect["width"], expect["height"])
    assert (declared["codec"], declared["pix_fmt"]) == (expect["codec"], expect["pix_fmt"])
    if expect["expected"] in (KEPT, "duplicate_near", "duplicate_exact", "missing_caption"):
        assert expect["seconds"] >= 2.0 and min(expect["width"], expect["height"]) >= SIDES[0]


def test_odd_container_and_pixel_formats(demo):
    folder, table = demo
    with av.open(str(folder / "files" / "odd_mpeg4.avi")) as container:
        assert container.format.name == "avi" and container.streams.video[0].codec_context.name == "mpeg4"
    for name, depth in (("odd_yuv444p.mp4", "yuv444p"), ("odd_10bit.mp4", "yuv420p10le")):
        frames, *_ = decode(folder / "files" / name)
        assert frames[0].dtype == np.uint8 and frames[0].mean() > 5  # converted, not black
        assert row(table, name)["pix_fmt"] == depth


def test_rotation_metadata_turns_the_stored_landscape_upright(demo):
    """The portrait clip is stored 256x144 with a -90 degree display matrix; rotating by it puts the bright band
    drawn along the portrait's top back at the top."""
    folder, table = demo
    frames, _, rotations, declared = decode(folder / "files" / "rotated_0.mp4")
    assert (declared["width"], declared["height"]) == (256, 144)
    assert set(rotations) == {row(table, "rotated_0.mp4")["rotation"]} == {-90}
    upright = np.rot90(frames[0], k=rotations[0] // 90)  # PyAV's angle is counter-clockwise, as np.rot90's k
    assert upright.shape[:2] == (256, 144)
    assert upright[:24].mean() > 200 > upright[40:].mean()


def test_variable_frame_rate_keeps_its_uneven_times(demo):
    folder, table = demo
    _, times, _, _ = decode(folder / "files" / "vfr_0.mp4")
    gaps = np.round(np.diff(times) * 1000).astype(int)
    assert len(times) == row(table, "vfr_0.mp4")["frames"] == 60
    assert gaps[:6].tolist() == [33, 33, 66, 100, 33, 50]


def _mean_diffs(frames: list[np.ndarray]) -> np.ndarray:
    stack = np.stack(frames).astype(np.int16)
    return np.abs(np.diff(stack, axis=0)).mean(axis=(1, 2, 3))


def test_still_cut_short_and_small_clips_decode_as_their_fate_says(demo):
    """Measured on the decoded frames, as the filter will: the still has no motion, the cut one jump at
    `cut_at`, the short clips are under TOO_SHORT_SECONDS."""
    folder, table = demo
    files = folder / "files"
    still, *_ = decode(files / "static_0.mp4")
    assert _mean_diffs(still).mean() < 0.3 and _mean_diffs(still).max() < 1.5  # x264's noise on identical frames
    clean = table[table["name"].str.match(r"^[a-z]+_\d{4}\.mp4$")]
    assert min(_mean_diffs(decode(files / name)[0]).mean() for name in clean["name"]) > 0.8
    cut, times, _, _ = decode(files / "cut_0.mp4")
    jumps = _mean_diffs(cut)
    at = int(np.argmax(jumps)) + 1
    assert times[at] == pytest.approx(row(table, "cut_0.mp4")["cut_at"], abs=0.02)
    assert jumps[at - 1] > 5 * np.median(jumps)
    # A strobe jumps as far in mean difference as a cut does; what tells them apart is that its picture stays.

    def bits(a: np.ndarray, b: np.ndarray) -> int:
        return (image_phash(Image.fromarray(a)) ^ image_phash(Image.fromarray(b))).bit_count()

    assert bits(cut[at - 1], cut[at]) > 16
    strobe, *_ = decode(files / "flicker_0003.mp4")
    flash = int(np.argmax(_mean_diffs(strobe))) + 1
    assert _mean_diffs(strobe)[flash - 1] > 10 and bits(strobe[flash - 1], strobe[flash]) <= 8
    for name in ("one_frame_0.mp4", "short_0.mp4"):
        assert decode(files / name)[3]["seconds"] <= TOO_SHORT_SECONDS
    assert len(decode(files / "one_frame_0.mp4")[0]) == 1
    assert decode(files / "tiny_0.mp4")[0][0].shape == (32, 48, 3)


def test_near_copies_are_close_to_their_source_and_far_from_others(demo):
    folder, table = demo
    files = folder / "files"
    copy = table.set_index("name").loc["near_crf_40_00.mp4"]
    near, *_ = decode(files / copy.name)
    source, *_ = decode(files / copy["duplicate_of"])
    assert np.abs(np.stack(near).astype(int) - np.stack(source)).mean() < 6
    other = table[(table["theme"] == copy["theme"]) & (table["name"] != copy["duplicate_of"])
                  & (table["expected"] == KEPT) & (table["width"] == copy["width"])]
    assert (files / "copy_00.mp4").read_bytes() == (files / row(table, "copy_00.mp4")["duplicate_of"]).read_bytes()
    assert other.empty or np.abs(decode(files / other.iloc[0]["name"])[0][0].astype(int) - source[0]).mean() > 6


def test_served_over_loopback_with_the_types_a_downloader_sees(demo):
    """A real server on 127.0.0.1: clips come back as video/mp4 (the .avi as video/x-msvideo) with their bytes,
    the HTML page with the same misleading video/mp4 type, the missing clip as 404."""
    folder, table = demo
    files = folder / "files"
    with serve_directory(str(files.parent)) as base:
        urls = video_url_table(table, base)
        assert list(urls.columns) == ["url", "caption", "demo_id"] and urls["url"].str.startswith(base).all()
        by_name = dict(zip(table["name"], urls["url"]))
        for name, kind in (("shapes_0000.mp4", "video/mp4"), ("page_0.mp4", "video/mp4"),
                           ("odd_mpeg4.avi", "video/x-msvideo")):
            with urllib.request.urlopen(by_name[name], timeout=10) as response:
                assert response.headers["Content-Type"] == kind
                assert response.read() == (files / name).read_bytes()
        assert (files / "page_0.mp4").read_bytes().startswith(b"<!doctype html>")
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(urls.loc[table["expected"] == "download_failed", "url"].iloc[0], timeout=10)


def test_folder_layout_has_a_sidecar_caption_per_captioned_clip(demo):
    folder, table = demo
    rows = video_folder_rows(table)
    assert len(rows) == len(table) - 1 and (rows["name"] != "").all()
    for name, caption in zip(rows["name"], rows["caption"]):
        sidecar = (folder / "files" / name).with_suffix(".txt")
        assert (folder / "files" / name).exists()
        assert sidecar.read_text() == caption if caption is not None else not sidecar.exists()
    videos = {p.name for p in (folder / "files").iterdir() if p.suffix != ".txt"}
    assert videos == set(rows["name"])


def test_too_few_clips_for_the_planted_copies_is_refused(tmp_path):
    with pytest.raises(ValueError, match="n >= 6"):
        make_video_demo(tmp_path, n=3)
    assert not (tmp_path / "files").exists()


def test_clean_clips_are_faststart_h264_with_b_frames(demo):
    """As web video: the index (moov) before the data, and B-frames, so packets arrive out of display order."""
    folder, _ = demo
    path = folder / "files" / "traffic_0007.mp4"
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")
    tail_indexed = (folder / "files" / "truncated_1.mp4").read_bytes()  # written without faststart, then cut
    assert b"mdat" in tail_indexed and b"moov" not in tail_indexed
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(video=0) if p.pts is not None]
    assert any(p.pts != p.dts for p in packets) and packets[0].is_keyframe
