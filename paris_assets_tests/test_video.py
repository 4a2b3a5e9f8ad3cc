"""lib/video/decode and lib/video/checks on clips encoded here from fixed recipes, and on real videos where present."""

from __future__ import annotations

import io
import pathlib
import tempfile
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from paris_assets.lib.video import checks as video_checks
from paris_assets.lib.images.decode import Rejected
from paris_assets.lib.video.decode import VideoParams, decode_clip, encode_clip, probe_and_decode, process_video, psnr
from paris_assets.lib.video.checks import (find_cuts, frame_difference, near_duplicate_groups,
                                           near_duplicate_groups_bruteforce)

OPENCV_DATA = pathlib.Path.home() / ".cache/paris-assets/photos/opencv-doc/usr/share/doc/opencv-doc/examples/data"
PARAMS = VideoParams(image_size=64, fps=8.0, num_frames=17, min_seconds=2.0, min_side=32, max_seconds=12.0)


def _scene(i: int, w: int, h: int, seed: int = 0, speed: int = 3) -> np.ndarray:
    """Frame i of a moving-shape recipe: a textured background (per seed) and a square sliding right."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)  # smooth colour blobs: 4:2:0 loses little of them
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    span = max(1, w - h // 3)
    x = abs((i * speed) % (2 * span) - span)  # bounces: a wrap-around would be a real cut
    img[h // 3:2 * h // 3, x:x + h // 3] = (255, 255, 255)
    return img


def encode(frames, fps=25, pix_fmt="yuv420p", crf=20, rotation=0, times=None, fmt="mp4", codec="libx264",
           sar=None, faststart=False) -> bytes:
    """frames: (H, W, 3) RGB arrays; times (seconds) give a variable frame rate."""
    if faststart:  # the muxer rereads its output to move moov first: a real file
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / f"clip.{fmt}"
            _encode_to(str(path), frames, fps, pix_fmt, crf, rotation, times, fmt, codec, sar, {"movflags": "+faststart"})
            return path.read_bytes()
    buf = io.BytesIO()
    _encode_to(buf, frames, fps, pix_fmt, crf, rotation, times, fmt, codec, sar, {})
    return buf.getvalue()


def _encode_to(target, frames, fps, pix_fmt, crf, rotation, times, fmt, codec, sar, options) -> None:
    with av.open(target, "w", format=fmt, options=options) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
        if codec == "libx264":
            stream.options = {"crf": str(crf)}
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        if sar:
            stream.codec_context.sample_aspect_ratio = sar
        for k, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=pix_fmt)
            if times is not None:
                frame.pts, frame.time_base = round(times[k] * 1000), Fraction(1, 1000)
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)


def moving(n=75, w=96, h=72, seed=0, size=None, **kw) -> bytes:
    frames = [_scene(i, w, h, seed) for i in range(n)]
    return encode([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames] if size else frames, **kw)


def cut(n=75, at=40, w=96, h=72) -> bytes:
    return encode([_scene(i, w, h, 0 if i < at else 1) for i in range(n)])


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p", "yuvj420p", "yuv420p10le"])
def test_pixel_formats_decode_to_the_same_picture(pix_fmt):
    facts, clip = probe_and_decode(moving(pix_fmt=pix_fmt), PARAMS)
    _, reference = probe_and_decode(moving(), PARAMS)
    assert clip.shape == (17, 64, 64, 3) and clip.dtype == np.uint8
    assert facts["pix_fmt"] == pix_fmt and facts["codec"] == "h264"
    assert psnr(clip, reference) > 30


def test_rgb24_source():
    frames = [_scene(i, 96, 72) for i in range(60)]
    facts, clip = probe_and_decode(encode(frames, pix_fmt="rgb24", codec="libx264rgb", fmt="matroska"), PARAMS)
    _, reference = probe_and_decode(encode(frames, pix_fmt="yuv444p", crf=0), PARAMS)
    assert facts["pix_fmt"] in ("rgb24", "bgr24", "gbrp") and psnr(clip, reference) > 35


def test_facts_and_resampling():
    facts, clip = probe_and_decode(moving(n=75, fps=25), PARAMS)
    assert facts["fps"] == 25 and facts["width"] == 96 and facts["height"] == 72 and facts["rotation"] == 0
    assert abs(facts["duration"] - 3.0) < 0.05 and facts["window_start"] == 0 and facts["window_end"] == 2.0
    assert facts["phashes"].dtype == np.uint64 and facts["phashes"].shape == (3,)
    assert facts["frames_decoded"] < 75  # stopped after the window and its cut context
    later = probe_and_decode(moving(n=100, fps=25), VideoParams(**{**PARAMS.__dict__, "start_seconds": 1.0}))[1]
    assert psnr(later[0], clip[8]) > 40  # 1 s later = 8 samples later


@pytest.mark.parametrize("rotation,turn", [(-90, 1), (90, -1), (180, 2)])
def test_rotation_tag_comes_out_upright(rotation, turn):
    """Stored on its side with a display matrix (FFmpeg's degrees counter-clockwise; a phone held upright
    writes -90, 'turn 90 clockwise'): the clip must match the same scene encoded upright."""
    portrait = [_scene(i, 72, 96) for i in range(60)]
    stored = [np.ascontiguousarray(np.rot90(f, k=turn)) for f in portrait]
    facts, clip = probe_and_decode(encode(stored, rotation=rotation), PARAMS)
    upright = probe_and_decode(encode(portrait), PARAMS)[1]
    assert facts["rotation"] == rotation % 360 and (facts["width"], facts["height"]) == (72, 96)
    assert psnr(clip, upright) > 27  # 4:2:0 chroma sits differently once turned
    assert psnr(probe_and_decode(encode(stored), PARAMS)[1], upright) < 20  # without the tag it is not upright


def test_pixel_aspect_ratio_is_displayed_width():
    """Anamorphic storage (72x72 pixels shown 4:3 wide) comes out as the 96x72 picture."""
    frames = [cv2.resize(_scene(i, 96, 72), (72, 72), interpolation=cv2.INTER_AREA) for i in range(60)]
    facts, clip = probe_and_decode(encode(frames, sar=Fraction(4, 3)), PARAMS)
    _, square = probe_and_decode(moving(n=60), PARAMS)
    assert (facts["width"], facts["height"]) == (96, 72) and psnr(clip, square) > 25


def test_variable_frame_rate_samples_by_time():
    """Frames at irregular times: the frame on screen at each sample time is the one whose content says so."""
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.choice([0.02, 0.05, 0.1], size=80))
    frames = [_scene(int(t * 25), 96, 72) for t in times]  # content follows time, not index
    _, vfr = probe_and_decode(encode(frames, times=times), PARAMS)
    _, cfr = probe_and_decode(encode([_scene(i, 96, 72) for i in range(int(times[-1] * 25))]), PARAMS)
    assert np.mean([psnr(a, b) for a, b in zip(vfr, cfr)]) > 25


@pytest.mark.parametrize("make,reason,detail", [
    (lambda: b"", "empty_file", "0 bytes"),
    (lambda: b"<!DOCTYPE html><html><body>Not found</body></html>" * 20, "undecodable", "HTML"),
    (lambda: moving()[: len(moving()) // 2], "truncated", "box 'mdat'"),  # moov at the end: gone
    (lambda: moving(faststart=True)[: len(moving(faststart=True)) // 2], "truncated", "box 'mdat'"),
    (lambda: moving(fmt="matroska")[: len(moving(fmt="matroska")) // 3], "truncated", "frames end"),
    (lambda: cv2.imencode(".jpg", _scene(0, 96, 72))[1].tobytes(), "one_frame", ""),  # a photo served as video
    (lambda: moving(n=1), "one_frame", ""),
    (lambda: moving(n=30), "too_short", "min_seconds"),
    (lambda: moving(w=40, h=24), "too_small", "shorter side"),
    (lambda: encode([_scene(0, 96, 72)] * 75), "static", "frame difference"),
    (lambda: encode([np.full((72, 96, 3), 200, np.uint8)] * 75), "static", "frame difference"),
])
def test_rejections(make, reason, detail):
    with pytest.raises(Rejected) as err:
        probe_and_decode(make(), PARAMS)
    assert err.value.reason == reason and detail in err.value.detail


def test_scene_cut_split_moves_the_window_and_reject_refuses():
    facts, clip = probe_and_decode(cut(n=150, at=20), PARAMS)  # cut at 0.8 s: window moves after it
    assert facts["cuts"] == [0.8] and facts["window_start"] >= 0.8
    assert psnr(clip[0], probe_and_decode(moving(n=150, seed=1), PARAMS)[1][0]) < 20  # the second shot's texture
    assert facts["window_start"] == 2.375  # samples 0.875-5.875 s show the second shot: 17 of them centred
    with pytest.raises(Rejected) as err:
        probe_and_decode(cut(n=150, at=20), VideoParams(**{**PARAMS.__dict__, "scene_cuts": "reject"}))
    assert err.value.reason == "scene_cut"
    with pytest.raises(Rejected) as err:  # two shots of 1.6 s each: no cut-free 2 s window
        probe_and_decode(cut(n=80, at=40), PARAMS)
    assert err.value.reason == "scene_cut"
    facts, _ = probe_and_decode(cut(n=100, at=70), PARAMS)  # cut after the window: nothing to do
    assert facts["cuts"] == [] and facts["window_start"] == 0


def test_too_large_refused_from_the_header():
    with pytest.raises(Rejected) as err:
        probe_and_decode(moving(), VideoParams(**{**PARAMS.__dict__, "max_pixels": 95 * 72}))
    assert err.value.reason == "too_large" and "96x72" in err.value.detail


def test_params_validate():
    for bad in ({"num_frames": 16}, {"fps": 0}, {"scene_cuts": "maybe"}, {"max_seconds": 1.0}):
        with pytest.raises(ValueError):
            VideoParams(**bad)


def test_near_duplicates_reencode_yes_unrelated_no():
    a = probe_and_decode(moving(n=75, w=96, h=72, crf=18), PARAMS)[0]["phashes"]
    b = probe_and_decode(moving(n=75, size=(160, 120), crf=35), PARAMS)[0]["phashes"]
    c = probe_and_decode(moving(n=75, w=96, h=72, seed=5), PARAMS)[0]["phashes"]
    rep = near_duplicate_groups(np.stack([a, b, c]), PARAMS.phash_max_distance)
    assert rep.tolist() == [0, 0, 2]


@pytest.mark.parametrize("all_pairs", [1024, 64])  # 64: the title cards searched again on keyframes 2 and 3
def test_near_duplicate_groups_equal_bruteforce(all_pairs, monkeypatch):
    monkeypatch.setattr(video_checks, "ALL_PAIRS", all_pairs)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2 ** 64, (400, 3), dtype=np.uint64)
    flips = lambda x, k: x ^ np.uint64(sum(1 << int(b) for b in rng.choice(64, k, replace=False)))
    near = np.array([[flips(v, int(rng.integers(0, 10))) for v in base[i % 400]] for i in range(1200)], np.uint64)
    placeholder = np.tile(base[:1], (3000, 1))  # thousands of identical clips
    title_card = np.c_[np.full(500, base[1, 0]), rng.integers(0, 2 ** 64, (500, 2), dtype=np.uint64)]
    same_two = np.c_[np.tile(base[2, :2], (200, 1)), base[2, 2] ^ rng.integers(0, 2 ** 64, 200, dtype=np.uint64)
                     & np.uint64(0xFFF)]  # first two keyframes equal, the last within a few bits or not
    hashes = np.concatenate([base, near, placeholder, title_card, same_two]).astype(np.uint64)
    if all_pairs < 1024:  # recursion costs a Python call per dense run: the dense parts and a few others
        hashes = np.concatenate([base[:50], near[:100], placeholder[:100], title_card, same_two])
    priority = rng.random(len(hashes))
    for radius in (0, 4, 8):
        assert (near_duplicate_groups(hashes, radius, priority)
                == near_duplicate_groups_bruteforce(hashes, radius, priority)).all()


def test_find_cuts_ignores_steady_motion():
    pan = np.r_[0, np.full(30, 30.0)]
    planted = np.r_[0, np.full(10, 3.0), 60.0, np.full(10, 3.0)]
    alternating = np.r_[0, np.tile([0.0, 40.0], 10)]  # every other frame repeated: steady, not a cut
    assert find_cuts(pan, 20) == [] and find_cuts(planted, 20) == [11] and find_cuts(alternating, 20) == []


def test_light_switched_on_is_not_a_cut():
    frames = [np.clip(_scene(i, 96, 72).astype(int) + (50 if i >= 40 else 0), 0, 255).astype(np.uint8)
              for i in range(75)]
    assert probe_and_decode(encode(frames), PARAMS)[0]["cuts"] == []


def test_encode_clip_round_trip():
    _, clip = probe_and_decode(moving(), VideoParams(**{**PARAMS.__dict__, "image_size": 64}))
    data = encode_clip(clip, 8.0, crf=18)
    back = decode_clip(data)
    assert back.shape == clip.shape and psnr(back, clip) > 35  # a 64-pixel clip; 256: see README
    facts, again = probe_and_decode(data, VideoParams(**{**PARAMS.__dict__, "static_threshold": 0}))
    assert facts["fps"] == 8 and psnr(again, clip) > 35


def test_process_video_facts_fit_a_dataframe():
    import pandas as pd

    data = cut(n=150, at=20)
    facts, stored = process_video(data, PARAMS)
    row = pd.DataFrame([facts])
    assert row["phash_first"].str.len().tolist() == [16] and facts["cuts"] == "0.8"
    assert decode_clip(stored).shape == (17, 64, 64, 3) and len(facts["sha256"]) == 64
    expected = probe_and_decode(data, PARAMS)[0]["phashes"]
    assert [int(facts[k], 16) for k in ("phash_first", "phash_middle", "phash_last")] == expected.tolist()


def test_real_mp4_from_dagster_webserver():
    import dagster_webserver

    path = next(pathlib.Path(dagster_webserver.__file__).parent.rglob("*.mp4"))
    facts, clip = probe_and_decode(path.read_bytes(), VideoParams())
    assert clip.shape == (17, 256, 256, 3) and facts["codec"] == "h264" and facts["width"] == 240
    assert facts["frames_decoded"] <= 2 * 60 + 5  # 2 s of its 10 s at 60 fps, plus the cut detector's context


@pytest.mark.parametrize("name,cuts,start", [
    ("vtest.avi", [], 0.0),  # msmpeg4, surveillance: slow walkers, no cut
    ("tree.avi", [], 0.0),  # cinepak rgb24, frames held ~0.3 s: low motion, still above the static threshold
    ("Megamind.avi", [0.0417, 4.0874, 6.4231, 8.3417], 1.0),  # mpeg4 trailer: 4 real cuts, window moved between
])
def test_real_avi_opencv_doc(name, cuts, start):
    path = OPENCV_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is made by paris_assets/bench_photos.py on this machine only")
    facts, clip = probe_and_decode(path.read_bytes(), VideoParams())
    assert clip.shape == (17, 256, 256, 3) and facts["cuts"] == cuts and facts["window_start"] == start


def test_a_strobe_is_no_cut_but_a_new_picture_is():
    """A lamp dimmed to a third jumps as far as a cut (frame_difference removes an offset, not a gain); the
    thumbnails' correlation tells the same picture from a new one, and a cut from black is still a cut."""
    rng = np.random.default_rng(0)
    picture = rng.integers(40, 250, (32, 32)).astype(np.uint8)
    other = rng.integers(40, 250, (32, 32)).astype(np.uint8)
    dim = (picture * 0.3).astype(np.uint8)
    black = np.zeros((32, 32), np.uint8)
    for thumbs, expected in (([picture] * 4 + [dim] * 4, []), ([picture] * 4 + [other] * 4, [4]),
                             ([black] * 4 + [picture] * 4, [4])):
        diffs = np.r_[0.0, [frame_difference(a, b) for a, b in zip(thumbs, thumbs[1:])]]
        assert find_cuts(diffs, 20) == [4]  # the differences alone call all three a cut
        assert find_cuts(diffs, 20, thumbs) == expected
