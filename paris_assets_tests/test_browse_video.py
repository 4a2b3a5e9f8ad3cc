"""The shard browser over clips (media: video): the animated preview, its cache, the index of a video data root
(mp4 from the shards or from filtered_images' crops), the endpoints over a real loopback server, and the page in
a real browser. The data root is made here: a manifest, shards and crop tars holding seeded moving patterns
encoded by lib/video/decode.encode_clip (~135 KB in all)."""

import hashlib
import io
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from paris_assets import browse
from paris_assets.lib.video import previews
from paris_assets.lib.outputs import shard_index
from paris_assets.lib.outputs.tars import TarShardWriter
from paris_assets.lib.video.decode import decode_clip, encode_clip

from .builders import browse_server, shot

SIDE, FPS, FRAMES = 256, 8.0, 17


def moving_pattern(seed: int, frames: int = FRAMES, side: int = SIDE) -> np.ndarray:
    """(T, S, S, 3) uint8: a smooth seeded colour field sliding right and down a few pixels a frame, so every
    frame differs from the last (a repeated frame may be merged into the one before by the WebP encoder)."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((2 * side, 2 * side),
                                                                                   Image.Resampling.BICUBIC)
    field = np.asarray(field)
    return np.stack([field[3 * t:3 * t + side, 5 * t:5 * t + side] for t in range(frames)])


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def record(image_id: str, cluster: int, i: int) -> dict:
    """The json of a clip's sample: the image record plus media and the clip's facts, as lib/outputs/shards writes it."""
    return {"image_id": image_id, "url": f"https://example.com/{image_id}.mp4", "alt_text": f"clip number {i}",
            "caption": f"a moving pattern number {i}", "aesthetic": 5.0 + i / 10, "punsafe": 0.01, "width": 640,
            "height": 360, "cluster": cluster, "centroid_distance": 0.1 * i, "phash": f"{i:016x}",
            "aesthetic_source": "carried", "aesthetic_computed": 5.5, "punsafe_source": "carried",
            "punsafe_computed": 0.02, "media": "video", "duration": 4.25 + i, "source_fps": 29.97, "fps": FPS,
            "num_frames": FRAMES, "window_start": 0.5, "window_end": 0.5 + (FRAMES - 1) / FPS, "rotation": 90 * (i % 2),
            "codec": "h264", "motion": 3.5 + i}


def write_tar(path, samples: dict[str, dict[str, bytes]]) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh, TarShardWriter(fh) as writer:
        for key, fields in samples.items():
            writer.write(key, fields)
    data = path.read_bytes()
    return {"samples": len(samples), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def make_video_root(root, mp4_in_shards=("0",)):
    """Two clusters and a held-out shard of two clips each; the splits in `mp4_in_shards` carry the mp4 in the
    shard (shards.include_mp4), the rest only in filtered_images' crops. The last held-out clip has no mp4
    anywhere: its crop tar holds only its json. Returns {image_id: the mp4 bytes (None for the missing one)}."""
    clips, manifest = {}, {"created": "2026-11-30T00:00:00Z", "k": 2, "media": "video", "clusters": {}, "heldout": []}
    crops, i = {}, 0
    folders = {"0": "expert_shards/cluster_0", "1": "expert_shards/cluster_1", "heldout": "heldout/shards"}
    for split, folder in folders.items():
        samples = {}
        for _ in range(2):
            image_id = f"clip{i:03d}"
            mp4 = encode_clip(moving_pattern(i), FPS, crf=30)
            missing = split == "heldout" and len(samples) == 1
            clips[image_id] = None if missing else mp4
            fields = {"latent.npy": npy(np.zeros((4, 5, 4, 4), np.float16)), "clip.npy": npy(np.zeros(8, np.float16)),
                      "clip_tokens.npy": npy(np.zeros((4, 8), np.float16)),
                      "t5_tokens.npy": npy(np.zeros((4, 8), np.float16)), "t5_mask.npy": npy(np.ones(4, bool)),
                      "dinov2.npy": npy(np.zeros(8, np.float32)),
                      "txt": f"a moving pattern number {i}".encode(),
                      "json": json.dumps(record(image_id, 0 if split == "heldout" else int(split), i)).encode()}
            if split in mp4_in_shards:
                fields["mp4"] = mp4
            samples[image_id] = fields
            crops[image_id] = {"json": b"{}"} if missing else {"json": b"{}", "mp4": mp4}
            i += 1
        entry = {"path": f"{folder}/shard-000000.tar", **write_tar(root / folder / "shard-000000.tar", samples)}
        (manifest["heldout"] if split == "heldout" else manifest["clusters"].setdefault(split, [])).append(entry)
    ids = list(crops)
    halves = {"crops/shard-000000.tar": ids[:3], "crops/shard-000001.tar": ids[3:]}
    for shard, members in halves.items():
        write_tar(root / "filtered_images" / shard, {k: crops[k] for k in members})
    pd.DataFrame({"image_id": ids, "crop_shard": [s for s, m in halves.items() for _ in m]}).to_parquet(
        root / "filtered_images" / "kept.parquet")
    (root / "pipeline_manifest.json").write_text(json.dumps(manifest))
    return clips


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("video-root")
    return root, make_video_root(root)


# -- the preview ------------------------------------------------------------------------------------------------

def frames_of(webp: bytes) -> tuple[Image.Image, list[int]]:
    image = Image.open(io.BytesIO(webp))
    durations = []
    for n in range(image.n_frames):
        image.seek(n)
        image.load()  # WebP states a frame's duration once the frame is loaded
        durations.append(image.info["duration"])
    return image, durations


@pytest.mark.parametrize("frames,count,fps,side,expected_side", [
    (17, 17, 8.0, None, 256), (17, 17, 8.0, 160, 160), (9, 17, 7.5, 96, 96), (33, 17, 24.0, 256, 256),
    (17, 9, 30.0, 64, 64),
])
def test_preview_frames_durations_and_size(frames, count, fps, side, expected_side):
    mp4 = encode_clip(moving_pattern(1, frames), fps, crf=30)
    webp = previews.clip_preview(mp4, side, count)  # the rate from the mp4 itself
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"
    image, durations = frames_of(webp)
    assert image.format == "WEBP" and image.is_animated and image.info.get("loop", 0) == 0
    assert image.n_frames == min(frames, count) and image.size == (expected_side, expected_side)
    assert all(abs(d - 1000 / fps) <= 1 for d in durations), durations
    assert abs(sum(durations) - image.n_frames * 1000 / fps) <= 1  # no drift: 7.5 fps is 133, 134, 133 ms
    assert np.asarray(image.convert("RGB")).std() > 10  # a picture, not a blank


def test_preview_frames_are_the_clip_s_first_frames():
    clip = moving_pattern(2, 25)
    mp4 = encode_clip(clip, FPS)
    head, rate = previews.first_frames(mp4, 17)
    assert rate == FPS and head.shape == (17, SIDE, SIDE, 3)
    assert np.array_equal(head, decode_clip(mp4)[:17])  # decoded as the latents stage decodes them
    image, _ = frames_of(previews.animated_webp(head, FPS))
    for n in (0, 8, 16):
        image.seek(n)
        error = np.abs(np.asarray(image.convert("RGB"), float) - clip[n]).mean()
        assert error < 6, (n, error)  # the n-th preview frame is the n-th clip frame (the next one is ~20 off)
    still = Image.open(io.BytesIO(previews.first_frame_jpeg(mp4, 100)))
    assert still.format == "JPEG" and still.size == (100, 100)


def test_frame_durations_and_bad_input():
    assert previews.frame_durations(4, 7.5) == [133, 134, 133, 133]
    assert previews.frame_durations(3, 8.0) == [125, 125, 125]
    with pytest.raises(ValueError, match="fps must be positive"):
        previews.frame_durations(3, 0)
    with pytest.raises(ValueError, match="frames must be"):
        previews.animated_webp(np.zeros((2, 8, 8), np.uint8), 8.0)


def test_preview_cache_is_bounded_and_least_recently_used_goes_first():
    cache = previews.PreviewCache(max_bytes=250)
    made = []

    def maker(key, size=100):
        return lambda: made.append(key) or bytes(size)

    cache.get(("a",), maker("a"))
    cache.get(("b",), maker("b"))
    cache.get(("a",), maker("a"))  # a hit: now the most recent
    cache.get(("c",), maker("c"))  # 300 bytes: b, the least recently used, goes
    assert made == ["a", "b", "c"] and cache.hits == 1 and cache.size == 200 and len(cache) == 2
    cache.get(("a",), maker("a"))
    cache.get(("b",), maker("b"))
    assert made == ["a", "b", "c", "b"]
    cache.get(("huge",), maker("huge", 1000))  # larger than the whole cache: served, not kept
    assert len(cache) == 2 and cache.size <= 250


# -- the index ------------------------------------------------------------------------------------------------

def test_index_of_a_video_root(video_root, tmp_path):
    root, clips = video_root
    index = shard_index.build_index(str(root))
    assert shard_index.shard_health(index) == []
    shard_index.build_index(str(root), tmp_path)
    cached = shard_index.build_index(str(root), tmp_path)  # the clip columns survive the scan cache's parquet
    assert len(list(tmp_path.glob("*.parquet"))) == 1
    pd.testing.assert_frame_equal(cached.samples, index.samples, check_dtype=False)
    samples = index.samples.set_index("image_id")
    assert list(samples.index) == list(clips) and (samples["media"] == "video").all()
    assert samples.loc["clip003", "num_frames"] == FRAMES and samples.loc["clip003", "rotation"] == 90
    assert samples.loc["clip002", "duration"] == 6.25 and samples.loc["clip002", "codec"] == "h264"
    assert ((samples["mp4_offset"] >= 0) == (samples["split"] == "0")).all()  # include_mp4 on cluster 0 only
    view = shard_index.overview(index)
    assert view["media"] == "video" and view["clips"] == view["indexed_clips"] == 6 and view["clips_with_mp4"] == 2
    crops = shard_index.CropLookup(index.root)
    for image_id, mp4 in clips.items():
        if mp4 is not None:  # from the shard (cluster 0) or from the crops (the rest): the bytes stored
            assert shard_index.read_clip(index, image_id, crops) == mp4
    with pytest.raises(KeyError, match="'clip005' has no mp4 in .*crops/shard-000001.tar"):
        shard_index.read_clip(index, "clip005", crops)
    with pytest.raises(KeyError, match="no sample"):
        shard_index.read_clip(index, "nope", crops)
    (root / "filtered_images" / "crops" / "shard-000000.tar").rename(root / "gone.tar")
    try:  # a crop tar deleted since: a message that names it, from a fresh lookup
        with pytest.raises(KeyError, match="crops/shard-000000.tar is missing"):
            shard_index.read_clip(index, "clip002", shard_index.CropLookup(index.root))
    finally:
        (root / "gone.tar").rename(root / "filtered_images" / "crops" / "shard-000000.tar")


def test_an_image_index_carries_no_clip_columns(tmp_path):
    """An image root's index and overview are as before: no clip columns, media image, no clip to read."""
    jpg = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(jpg, "JPEG")
    fields = {"json": json.dumps({"image_id": "img0", "cluster": 0, "caption": "red"}).encode(), "jpg": jpg.getvalue()}
    entry = {"path": "expert_shards/cluster_0/shard-000000.tar",
             **write_tar(tmp_path / "expert_shards/cluster_0/shard-000000.tar", {"img0": fields})}
    (tmp_path / "pipeline_manifest.json").write_text(json.dumps({"k": 1, "clusters": {"0": [entry]}, "heldout": []}))
    index = shard_index.build_index(str(tmp_path))
    assert not set(shard_index.CLIP_FIELDS) & set(index.samples.columns) and "mp4_offset" not in index.samples
    view = shard_index.overview(index)
    assert view["media"] == "image" and "clips" not in view and view["has_jpg"]
    with pytest.raises(KeyError, match="is an image, not a clip"):
        shard_index.read_clip(index, "img0", shard_index.CropLookup(index.root))


# -- the endpoints ----------------------------------------------------------------------------------------------

def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_endpoints_over_loopback(video_root):
    root, clips = video_root
    server = browse.serve(str(root), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        overview = json.loads(get(f"{base}/api/overview")[2])
        assert overview["media"] == "video" and overview["clips"] == 6 and overview["total_images"] == 6
        sample = json.loads(get(f"{base}/api/sample/clip003")[2])
        assert sample["fps"] == FPS and sample["num_frames"] == FRAMES and sample["motion"] == 6.5
        assert "mp4_offset" not in sample and sample["media"] == "video"
        rows = json.loads(get(f"{base}/api/samples?cluster=1")[2])["rows"]
        assert [r["image_id"] for r in rows] == ["clip002", "clip003"] and rows[0]["window_end"] == 2.5
        for image_id in ("clip000", "clip003"):  # the mp4 in the shard, and only in the crops
            status, headers, body = get(f"{base}/preview/{image_id}?size=96&v={overview['version']}")
            assert status == 200 and headers["Content-Type"] == "image/webp" and "max-age" in headers["Cache-Control"]
            image, durations = frames_of(body)
            assert image.n_frames == FRAMES and image.size == (96, 96) and set(durations) == {125}
            status, headers, body = get(f"{base}/preview/{image_id}")
            assert status == 200 and Image.open(io.BytesIO(body)).size == (SIDE, SIDE)
            status, headers, body = get(f"{base}/clip/{image_id}")
            assert status == 200 and headers["Content-Type"] == "video/mp4" and body == clips[image_id]
            assert headers["Content-Disposition"] == f'attachment; filename="{image_id}.mp4"'
            status, headers, body = get(f"{base}/image/{image_id}?size=64")  # a still: the first frame
            assert status == 200 and headers["Content-Type"] == "image/jpeg"
            assert Image.open(io.BytesIO(body)).size == (64, 64)
        assert get(f"{base}/preview/clip000?size=96")[2] == get(f"{base}/preview/clip000?size=96")[2]  # the cached one
        for path in ("/preview/clip005", "/clip/clip005", "/image/clip005"):  # no mp4 anywhere: a 404 that says why
            status, headers, body = get(base + path)
            assert status == 404 and headers["Content-Type"] == "application/json"
            assert "'clip005' has no mp4 in" in json.loads(body)["error"]
        status, _, body = get(f"{base}/preview/nope")
        assert status == 404 and "no sample 'nope'" in json.loads(body)["error"]
        assert get(f"{base}/preview/clip000?size=big")[0] == 400
    finally:
        server.shutdown()
        server.server_close()


# -- the page ---------------------------------------------------------------------------------------------------

def test_clips_in_a_real_browser(video_root, tmp_path, chromium):
    """The overview says video and counts clips; every card's preview loads; a clip whose mp4 is only in the
    crops opens with an animated preview and its facts; the clip with no mp4 says why in the detail view."""
    root, clips = video_root
    with browse_server(root, tmp_path / "browse.log", "--no-cache") as base, chromium(1400, 1000) as page:
        page.goto(f"{base}/", wait_until="networkidle")
        page.wait_for_function("document.querySelector('#total').textContent === '6'")
        assert page.locator("#overview .noun").first.text_content() == "clips"
        said = page.locator("#media").text_content()
        assert "media video: 6 clips, mp4 in the shards for 2, the rest from filtered_images' crops" in said
        assert page.locator(".card.clip").count() == 6
        assert "17 frames · 8 fps" in page.locator(".card[data-id='clip000'] .badge").text_content()
        loaded = [i for i in clips if clips[i] is not None]
        page.wait_for_function("ids => ids.every(id => document.querySelector(`.card[data-id='${id}'] img`)"
                               ".naturalWidth === 160)", arg=loaded)
        shot(page, "browse-video-overview.jpg")

        page.locator(".card[data-id='clip003']").click()  # its mp4 is in the crops only
        page.locator("#detail").wait_for(state="visible")
        page.wait_for_function("document.querySelector('#detail-img').naturalWidth === 256")
        src = page.locator("#detail-img").get_attribute("src")
        assert src.startswith("/preview/clip003?")
        # animated as the browser decodes it (WebCodecs' ImageDecoder), and as Pillow reads the same bytes
        frames = page.evaluate("""async (src) => {
            const r = await fetch(src);
            const d = new ImageDecoder({data: r.body, type: r.headers.get('Content-Type')});
            await d.tracks.ready;
            return d.tracks.selectedTrack.frameCount; }""", src)
        assert frames == FRAMES
        served = page.request.get(f"{base}{src}").body()
        assert Image.open(io.BytesIO(served)).n_frames == FRAMES
        facts = page.locator("#detail-table").text_content()
        for shown in ("17 frames at 8 fps", "7.25 s (source, 29.97 fps)", "0.5 – 2.5 s", "90°", "h264", "6.5",
                      "a moving pattern number 3", "clip003"):
            assert shown in facts, (shown, facts)
        assert page.locator("#detail-table a[href='/clip/clip003']").count() == 1
        assert page.locator("#detail-note").is_hidden()
        shot(page, "browse-video-detail.jpg")
        page.click("#close")

        page.locator(".card[data-id='clip005']").click()  # no mp4 anywhere
        page.locator("#detail-note").wait_for(state="visible")
        assert "no preview: 'clip005' has no mp4 in" in page.locator("#detail-note").text_content()
        assert "clip005" in page.locator("#detail-table").text_content()
        page.click("#close")

        page.locator(".card[data-id='clip000']").click()  # an image-free page: nothing left from before
        page.wait_for_function("document.querySelector('#detail-img').naturalWidth === 256")
        assert page.locator("#detail-note").is_hidden()
