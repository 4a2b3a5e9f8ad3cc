"""Per-image filters and the metadata-only rejections, parametrised over settings."""

import io
import struct

import numpy as np
import pandas as pd
import pytest
from PIL import ExifTags, Image, ImageCms

from paris_assets.lib.images.units import FilterParams, process_image
from paris_assets.lib.demo.images import NEAR_COPY_RECIPES, make_demo
from paris_assets.lib.images.filtering import pre_decode_rejections
from paris_assets.lib.images.decode import Rejected


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


def gps_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneMaker"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef], gps[ExifTags.GPS.GPSLatitude] = "N", (48.0, 51.0, 24.0)
    gps[ExifTags.GPS.GPSLongitudeRef], gps[ExifTags.GPS.GPSLongitude] = "E", (2.0, 21.0, 3.0)
    return exif


@pytest.mark.parametrize("size", [256, 300])  # 256: already the crop, whose bytes used to be stored as they came
def test_stored_crops_carry_no_exif(size):
    arr = np.random.default_rng(1).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90, exif=gps_exif(), comment=b"taken at 51.5N 0.1W")
    assert Image.open(buf).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the source does carry a position
    _, crop = process_image(buf.getvalue(), FilterParams(image_size=256))
    stored = Image.open(io.BytesIO(crop))
    assert "exif" not in stored.info and not stored.getexif() and "comment" not in stored.info
    assert b"Exif" not in crop[:2048] and b"51.5N" not in crop


def rgb_profile(description: str, primaries: list[tuple[float, float, float]], gamma: float) -> bytes:
    """A minimal ICC v2 display profile: D50 white, three colourants (XYZ, D50-adapted), one gamma for all."""
    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    text = description.encode() + b"\0"
    tags = [(b"desc", b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)),
            (b"wtpt", xyz(0.9642, 1.0, 0.8249))]
    tags += [(sig, xyz(*p)) for sig, p in zip((b"rXYZ", b"gXYZ", b"bXYZ"), primaries)]
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    tags += [(sig, curve) for sig in (b"rTRC", b"gTRC", b"bTRC")]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for sig, data in tags:
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data + bytes(-len(data) % 4)
    size = offset + len(body)
    header = struct.pack(">I4sI4s4s4s", size, b"none", 0x02100000, b"mntr", b"RGB ", b"XYZ ") + bytes(12) + b"acsp"
    header += bytes(4 + 4 + 4 + 4 + 8 + 4) + s15(0.9642) + s15(1.0) + s15(0.8249)
    return header + bytes(128 - len(header)) + table + body


# Adobe RGB (1998)'s colourants adapted to D50 and its 2.2 gamma: a wide-gamut profile common in camera JPEGs.
WIDE_GAMUT = rgb_profile("Wide gamut test (Adobe RGB 1998 primaries)",
                         [(0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446)], 2.2)


@pytest.mark.parametrize("size", [256, 300])
def test_stored_crops_are_converted_to_srgb(size):
    arr = np.zeros((size, size, 3), np.uint8)
    arr[: size // 2] = (40, 180, 60)  # a saturated green and a muted red: both move when converted
    arr[size // 2:] = (150, 40, 40)
    source = Image.fromarray(arr)
    buf = io.BytesIO()
    source.save(buf, "JPEG", quality=95, subsampling=0, icc_profile=WIDE_GAMUT)
    _, crop = process_image(buf.getvalue(), FilterParams(image_size=256))
    stored = Image.open(io.BytesIO(crop))
    assert not stored.info.get("icc_profile")  # no foreign profile: the pixels are sRGB, as untagged means
    profile = ImageCms.ImageCmsProfile(io.BytesIO(WIDE_GAMUT))
    expected = np.asarray(ImageCms.profileToProfile(source, profile, ImageCms.createProfile("sRGB"),
                                                    renderingIntent=ImageCms.Intent.PERCEPTUAL))
    got = np.asarray(stored.convert("RGB")).astype(int)
    centre = (slice(size // 4 - 8, size // 4 + 8), slice(100, 140))  # inside one flat band, clear of the edge
    lower = (slice(3 * 256 // 4 - 8, 3 * 256 // 4 + 8), slice(100, 140))
    for band, ref_band in ((centre, centre), (lower, (slice(3 * size // 4 - 8, 3 * size // 4 + 8), slice(100, 140)))):
        assert np.abs(got[band].mean(axis=(0, 1)) - expected[ref_band].mean(axis=(0, 1))).max() <= 3
    assert np.abs(expected[centre].mean(axis=(0, 1)) - arr[centre].mean(axis=(0, 1))).max() > 10  # it did move


def test_an_srgb_profile_is_left_as_it_is():
    arr = np.full((300, 300, 3), (40, 180, 60), np.uint8)
    arr[150:] = (150, 40, 40)
    buf = io.BytesIO()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(arr).save(buf, "JPEG", quality=95, subsampling=0, icc_profile=srgb)
    _, crop = process_image(buf.getvalue(), FilterParams(image_size=256))
    band = np.asarray(Image.open(io.BytesIO(crop))).astype(int)[40:80, 100:140]
    assert np.abs(band.mean(axis=(0, 1)) - (40, 180, 60)).max() <= 2


def test_planted_near_copies_follow_fixed_recipes(demo_files, tmp_path):
    """The small demo plants every recipe once or more, made as the recipe says (never re-drawn to fit), and the
    same seed gives the same bytes. On its drawn pictures every copy lands within the default radius of its
    source; the 3 % crop is the farthest (6 bits here, so the old default of 4 missed it). On photographs some
    crops land outside: see the README's recall table."""
    folder, table = demo_files
    near = table[table["expect"] == "duplicate_near"]
    recipes = {name.split("_", 1)[1].rsplit("_", 1)[0] for name in near["name"]}
    assert recipes == {r.name for r in NEAR_COPY_RECIPES}

    def phash(name: str) -> int:
        return int(process_image((folder / "files" / name).read_bytes(), FilterParams())[0]["phash"], 16)

    distances = {row.name: (phash(row.name) ^ phash(row.duplicate_of)).bit_count() for row in near.itertuples()}
    assert max(distances.values()) <= FilterParams().phash_max_distance, distances
    assert max(distances, key=distances.get).startswith("near_crop_"), distances
    again = make_demo(tmp_path, n=len(table[table["name"].str.match(r"^[a-z]+_\d{5}\.jpg$")]), seed=0)
    assert again["name"].tolist() == table["name"].tolist()
    for name in near["name"]:
        assert (tmp_path / "files" / name).read_bytes() == (folder / "files" / name).read_bytes()
