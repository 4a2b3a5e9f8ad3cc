"""Per-image filters and the metadata-only rejections, parametrised over settings."""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from paris_assets.lib.checks import FilterParams, process_image
from paris_assets.lib.filtering import pre_decode_rejections
from paris_assets.lib.images import Rejected


def jpeg(w, h, seed=0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("size,mode", [(64, "center_crop"), (256, "border"), (128, "stretch")])
def test_process_image_outputs(size, mode):
    facts, crop = process_image(jpeg(300, 200), FilterParams(image_size=size, resize_mode=mode))
    assert Image.open(io.BytesIO(crop)).size == (size, size)
    assert (facts["original_width"], facts["original_height"]) == (300, 200)
    assert len(facts["sha256"]) == 64 and len(facts["phash"]) == 16 and int(facts["phash"], 16) < 2**64


def test_an_image_already_the_crop_keeps_its_bytes():
    data = jpeg(256, 256)
    _, crop = process_image(data, FilterParams(image_size=256))
    assert crop == data


@pytest.mark.parametrize("w,h,params,reason", [
    (100, 50, FilterParams(min_side=64), "too_small"),
    (400, 100, FilterParams(max_aspect=3.0), "too_elongated"),
    (400, 100, FilterParams(max_aspect=4.0), None),
    (1000, 1000, FilterParams(max_image_pixels=999_999), "decompression_bomb"),
])
def test_shape_limits(w, h, params, reason):
    if reason is None:
        process_image(jpeg(w, h), params)
        return
    with pytest.raises(Rejected) as err:
        process_image(jpeg(w, h), params)
    assert err.value.reason == reason


def test_pre_decode_rejections_follow_settings():
    samples = pd.DataFrame({
        "status": ["success", "failed_to_download", "success", "success", "success", "success"],
        "error_message": [None, "HTTP Error 404: Not Found", None, None, None, None],
        "caption_problem": ["", "", "missing_caption", "caption_not_utf8:invalid start byte at byte 3", "", ""],
        "punsafe": [0.1, 0.1, 0.1, 0.1, 0.9, None],
        "pwatermark": [0.1, 0.1, 0.1, 0.1, 0.1, 0.95],
    })
    reason, detail = pre_decode_rejections(samples, FilterParams())
    assert reason.tolist() == ["", "download_failed", "missing_caption", "caption_not_utf8", "nsfw", "watermark"]
    assert detail[1] == "HTTP Error 404: Not Found" and "invalid start byte" in detail[3]
    relaxed, _ = pre_decode_rejections(samples, FilterParams(require_caption=False, max_punsafe=1.0))
    assert relaxed.tolist() == ["", "download_failed", "", "", "", "watermark"]


def test_nudenet_detector_runs_offline_and_spares_ordinary_pictures(demo_files):
    """The real detector (its ONNX model ships in the wheel). At the default classes and threshold none of the
    demo pictures is rejected; with covered/buttocks classes and a low threshold the same detector rejects
    some of them: the check is live, and the defaults are what keeps ordinary pictures."""
    from nudenet import NudeDetector

    folder, _ = demo_files
    files = sorted((folder / "files").glob("[a-z]*_000*.jpg"))
    detector = NudeDetector()
    strict = FilterParams(nudenet=True)
    loose = FilterParams(nudenet=True, nudenet_threshold=0.2,
                         nudenet_classes=("BUTTOCKS_EXPOSED", "FEMALE_BREAST_COVERED", "BELLY_EXPOSED"))
    rejected = {strict: 0, loose: 0}
    for path in files:
        for params in rejected:
            try:
                process_image(path.read_bytes(), params, detector)
            except Rejected as err:
                assert err.reason == "nsfw_detected" and "score" in err.detail
                rejected[params] += 1
    assert rejected[strict] == 0
    assert rejected[loose] > 0
