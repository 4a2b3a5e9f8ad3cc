"""Decoding every web encoding into upright 8-bit RGB, checked against PIL's own decode of the same file."""

import io

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

from paris_assets.lib.images import Rejected, decode_image, is_blank, phash64, square_crop

MAX = 89_478_485


def reference_rgb(data: bytes) -> np.ndarray:
    """PIL's own upright decode, flattened onto white, as an 8-bit RGB array."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if image.mode in ("I;16", "I"):
        arr = np.asarray(image, dtype=np.float64) / 65535 * 255
        return np.repeat(np.clip(arr + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))


@pytest.mark.parametrize("name", ["cmyk.jpg", "gray16.png", "palette_transparent.png", "animated.gif",
                                  "exif_rotated.jpg", "rgba.png", "sunset_00000.jpg"])
def test_awkward_encodings_match_pil(demo_files, name):
    folder, _ = demo_files
    data = (folder / "files" / name).read_bytes()
    decoded = decode_image(data, MAX)
    ours = np.asarray(decoded.image)
    assert decoded.image.mode == "RGB" and ours.dtype == np.uint8
    ref = reference_rgb(data)
    assert ours.shape == ref.shape
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1


def test_exif_rotation_is_applied(demo_files):
    folder, _ = demo_files
    decoded = decode_image((folder / "files" / "exif_rotated.jpg").read_bytes(), MAX)
    assert (decoded.width, decoded.height) == (400, 300)  # stored 300x400, displayed landscape
    assert decoded.image.size == (400, 300)


def test_sixteen_bit_png_is_not_white(demo_files):
    folder, _ = demo_files
    arr = np.asarray(decode_image((folder / "files" / "gray16.png").read_bytes(), MAX).image)
    assert arr.min() < 10 and arr.max() > 240 and arr.std() > 30


@pytest.mark.parametrize("name,reason", [
    ("empty_0.jpg", "empty_file"), ("page_0.jpg", "undecodable"), ("truncated_0.jpg", "truncated"),
    ("bomb.png", "decompression_bomb"), ("one_pixel.png", "too_small"), ("banner.jpg", "too_elongated"),
])
def test_bad_files_are_rejected_with_reason(demo_files, name, reason):
    folder, _ = demo_files
    with pytest.raises(Rejected) as err:
        decode_image((folder / "files" / name).read_bytes(), MAX, min_side=64, max_aspect=3.0)
    assert err.value.reason == reason
    assert err.value.detail


def test_html_page_detail_says_so(demo_files):
    folder, _ = demo_files
    with pytest.raises(Rejected) as err:
        decode_image((folder / "files" / "page_0.jpg").read_bytes(), MAX)
    assert "HTML" in err.value.detail


@pytest.mark.parametrize("mode", ["center_crop", "border", "stretch"])
@pytest.mark.parametrize("size", [32, 256])
@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (256, 256), (64, 900)])
def test_square_crop_sizes(mode, size, shape):
    image = Image.new("RGB", shape, (10, 200, 30))
    out = square_crop(image, size, mode)
    assert out.size == (size, size) and out.mode == "RGB"


def test_center_crop_takes_the_centre():
    arr = np.zeros((100, 300, 3), np.uint8)
    arr[:, 100:200] = 255  # the central square is white, the sides black
    out = np.asarray(square_crop(Image.fromarray(arr), 50, "center_crop"))
    assert out[:, 2:-2].min() > 240


def test_blank():
    assert is_blank(Image.new("RGB", (64, 64), (128, 128, 128)), 2.0)
    assert is_blank(Image.new("RGB", (300, 200), (5, 5, 5)), 2.0)
    noisy = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert not is_blank(Image.fromarray(noisy), 2.0)


def test_phash_follows_imagehash(demo_files):
    """Same algorithm as imagehash's pHash on a faster thumbnail: mostly identical, never far."""
    folder, _ = demo_files
    distances = []
    for path in sorted((folder / "files").glob("*_000*.jpg"))[:60]:
        crop = square_crop(decode_image(path.read_bytes(), MAX).image, 256)
        distances.append(bin(phash64(crop) ^ int(str(imagehash.phash(crop)), 16)).count("1"))
    assert np.mean(np.array(distances) == 0) >= 0.6
    assert max(distances) <= 6
