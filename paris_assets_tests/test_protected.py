"""Decontamination against a protected evaluation set: reading it (a folder, a URL table served on 127.0.0.1),
finding the training copies of its images by pHash and by embedding, each search against a brute-force
reference.

The photographs are the two that every scikit-learn install ships and the six tiles of each (a 3 x 2 grid):
fourteen real pictures whose filter pHashes are 24 bits or more apart."""

import io
import itertools
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from paris_assets.bench.photos import sklearn_photos
from paris_assets.lib.store.arrays import select_rows
from paris_assets.lib.images.units import FilterParams, process_image
from paris_assets.lib.run.crops import decode_crops
from paris_assets.lib.images.filtering import hex_to_u64
from paris_assets.lib.ingest.http_server import serve_directory
from paris_assets.lib.dedup.protected import (ProtectedSetError, embedding_matches, phash_matches,
                                              phash_matches_bruteforce, read_protected)
from paris_assets.lib.ingest.urls import UrlPolicy

FILTER = FilterParams()  # the filter's defaults: 256 px centre crops, JPEG quality 95
READ = {"url_col": "url", "policy": UrlPolicy(), "image_size": FILTER.image_size,
        "max_pixels": FILTER.max_image_pixels, "timeout": 10.0, "threads": 4}


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def filter_phashes(blobs: list[bytes]) -> np.ndarray:
    """The pHashes kept.parquet would hold for these files: the filter's hex text, parsed as filtering parses it."""
    return hex_to_u64([process_image(b, FILTER)[0]["phash"] for b in blobs])


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    """china, flower and their tiles (china_0 ... flower_5), RGB."""
    out = {}
    for path in sklearn_photos():
        image = Image.open(path).convert("RGB")
        out[path.stem] = image
        w, h = image.size
        for k, (r, c) in enumerate(itertools.product(range(2), range(3))):
            out[f"{path.stem}_{k}"] = image.crop((c * w // 3, r * h // 2, (c + 1) * w // 3, (r + 1) * h // 2))
    return out


def copies(image: Image.Image) -> dict[str, bytes]:
    """What a web crawl holds of a picture: re-encoded harder, downscaled, 2 % of the borders cut off."""
    w, h = image.size
    return {"q40": encode(image, quality=40),
            "half": encode(image.resize((w // 2, h // 2), Image.LANCZOS), quality=85),
            "trimmed": encode(image.crop((w // 50, h // 50, w - w // 50, h - h // 50)), quality=75)}


PROTECTED = {"china": "china.jpg", "flower": "sub/flower.png", "china_4": "sub/deeper/china_4.webp",
             "flower_1": "flower_1.jpeg"}


def test_folder_copies_are_matched_and_unrelated_photographs_are_not(tmp_path, photos):
    folder = tmp_path / "coco_val"
    for name, rel in PROTECTED.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        fmt = {"png": "PNG", "webp": "WEBP"}.get(rel.rsplit(".", 1)[1], "JPEG")
        (folder / rel).write_bytes(encode(photos[name], fmt, **({"quality": 90} if fmt != "PNG" else {})))
    whole = encode(photos["flower_2"])
    (folder / "broken.jpg").write_bytes(whole[:len(whole) // 2])  # cut short
    (folder / "empty.png").write_bytes(b"")
    (folder / "README.txt").write_text("not an image: not read")

    protected = read_protected(str(folder), **READ)

    assert sorted(protected.ids) == sorted(PROTECTED.values())
    assert protected.phash.dtype == np.uint64 and protected.phash.shape == (4,)
    assert protected.failures.set_index("id")["reason"].to_dict() == {"broken.jpg": "truncated",
                                                                     "empty.png": "empty_file"}
    # hashed and cropped by the filter's own function: the same hash, the same crop bytes as filtered_images
    for i, rel in enumerate(protected.ids):
        facts, stored = process_image((folder / rel).read_bytes(), FILTER)
        assert protected.phash[i] == int(facts["phash"], 16) and protected.crops[i] == stored
    pixels = decode_crops(protected.crops)  # what the model stages hand to model.preprocess
    assert pixels.shape == (4, 256, 256, 3) and pixels.dtype == np.uint8

    train_names, train_blobs = [], []
    for name, image in photos.items():
        for how, blob in (copies(image).items() if name in PROTECTED else [("unrelated", encode(image, quality=90))]):
            train_names.append((name, how))
            train_blobs.append(blob)
    rows, nearest, distance = phash_matches(filter_phashes(train_blobs), protected.phash, radius=6)

    by_id = {rel: name for name, rel in PROTECTED.items()}
    found = {train_names[r]: (by_id[protected.ids[p]], int(d)) for r, p, d in zip(rows, nearest, distance)}
    expected = {(name, how) for name in PROTECTED for how in ("q40", "half", "trimmed")}
    assert set(found) == expected  # every copy, and none of the ten unrelated photographs
    assert all(found[(name, how)][0] == name and found[(name, how)][1] <= 6 for name, how in expected)


def test_empty_or_unreadable_folders_say_what_to_fix(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProtectedSetError, match="no images"):
        read_protected(str(tmp_path / "empty"), **READ)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"<html><body>gone</body></html>")
    with pytest.raises(ProtectedSetError, match=r"none of the 1 images.*undecodable"):
        read_protected(str(tmp_path / "bad"), **READ)


@pytest.fixture
def connections(monkeypatch):
    """Every host this process looks up or connects to; anything but 127.0.0.1 fails the test on the spot."""
    seen = []
    real_connect, real_lookup = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        seen.append(address[0])
        assert address[0] == "127.0.0.1", f"connection attempted to {address}"
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        seen.append(host)
        assert host == "127.0.0.1", f"name lookup of {host}"
        return real_lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for proxy in ("http_proxy", "https_proxy", "all_proxy"):  # straight to the test server, through nothing
        monkeypatch.delenv(proxy, raising=False)
        monkeypatch.delenv(proxy.upper(), raising=False)
    return seen


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_url_table_over_real_http(tmp_path, photos, connections, fmt):
    site = tmp_path / "site"
    site.mkdir()
    (site / "china.jpg").write_bytes(encode(photos["china"], quality=90))
    (site / "flower_3.png").write_bytes(encode(photos["flower_3"], "PNG"))
    (site / "page.html").write_text("<!doctype html><html><body>Photo removed</body></html>")
    with serve_directory(str(site)) as base:
        urls = [f"{base}/china.jpg", f"{base}/missing.jpg", f"{base}/page.html",
                "http://169.254.169.254/latest/meta-data/iam/security-credentials/", "http://169.254.1.1/a.jpg",
                "file:///etc/passwd", f"{base}/flower_3.png", f"{base}/china.jpg"]
        table = pd.DataFrame({"URL": urls, "caption": [f"image {i}" for i in range(len(urls))]})
        path = tmp_path / f"val.{fmt}"
        {"parquet": lambda: table.to_parquet(path), "csv": lambda: table.to_csv(path, index=False),
         "jsonl": lambda: table.to_json(path, orient="records", lines=True)}[fmt]()

        protected = read_protected(str(path), **READ)  # url_col "url" finds the column "URL"

    assert list(protected.ids) == [f"{base}/china.jpg", f"{base}/flower_3.png"]
    assert list(protected.phash) == list(filter_phashes([encode(photos["china"], quality=90),
                                                         encode(photos["flower_3"], "PNG")]))
    failures = protected.failures.set_index("id")
    assert failures["reason"].to_dict() == {
        f"{base}/missing.jpg": "http_404", f"{base}/page.html": "undecodable",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/": "metadata_address",
        "http://169.254.1.1/a.jpg": "link_local_address", "file:///etc/passwd": "unsupported_scheme",
        f"{base}/china.jpg": "duplicate_url"}
    assert "HTML" in failures.loc[f"{base}/page.html", "detail"]
    assert "169.254.169.254" in failures.loc["http://169.254.169.254/latest/meta-data/iam/security-credentials/",
                                             "detail"]
    assert connections and set(connections) == {"127.0.0.1"}  # the fetches happened, none of them elsewhere


class _RedirectToMetadata(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
        self.end_headers()

    def log_message(self, format, *args):
        pass


def test_redirect_to_the_metadata_service_is_not_followed(tmp_path, photos, connections):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RedirectToMetadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    site = tmp_path / "site"
    site.mkdir()
    (site / "flower.jpg").write_bytes(encode(photos["flower"]))
    try:
        with serve_directory(str(site)) as base:
            bounce = f"http://127.0.0.1:{server.server_address[1]}/photo.jpg"
            pd.DataFrame({"url": [bounce, f"{base}/flower.jpg"]}).to_parquet(tmp_path / "val.parquet")
            protected = read_protected(str(tmp_path / "val.parquet"), **READ)
    finally:
        server.shutdown()
        server.server_close()
    assert list(protected.ids) == [f"{base}/flower.jpg"]
    failure = protected.failures.iloc[0]
    assert (failure["id"], failure["reason"]) == (bounce, "metadata_address")
    assert "redirected to http://169.254.169.254" in failure["detail"]


def test_url_table_problems_say_what_to_fix(tmp_path, connections):
    pd.DataFrame({"link": ["http://127.0.0.1:9/a.jpg"]}).to_parquet(tmp_path / "no_url.parquet")
    with pytest.raises(ProtectedSetError, match="no URL column 'url'"):
        read_protected(str(tmp_path / "no_url.parquet"), **READ)
    with serve_directory(str(tmp_path)) as base:
        pd.DataFrame({"url": [f"{base}/gone.jpg", "http://169.254.169.254/"]}).to_parquet(tmp_path / "dead.parquet")
        with pytest.raises(ProtectedSetError, match=r"none of the 2 images.*http_404"):
            read_protected(str(tmp_path / "dead.parquet"), **READ)


def random_hashes(rng, n: int) -> np.ndarray:
    return rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)


def flip_bits(rng, hashes: np.ndarray, at_most: int, least: int = 0) -> np.ndarray:
    """Each hash with `least` to `at_most` random bits flipped."""
    out = hashes.copy()
    for i in range(len(out)):
        for bit in rng.choice(64, rng.integers(least, at_most + 1), replace=False):
            out[i] ^= np.uint64(1) << np.uint64(bit)
    return out


@pytest.mark.parametrize("radius,method", [(0, "multi_index"), (1, "multi_index"), (4, "multi_index"),
                                           (6, "multi_index"), (10, "multi_index"), (6, "auto"), (16, "auto")])
def test_phash_matches_equal_bruteforce_despite_placeholders(radius, method):
    rng = np.random.default_rng(radius)
    protected = random_hashes(rng, 2000)
    placeholder = protected[7]
    protected = np.r_[protected, np.full(5000, placeholder), flip_bits(rng, np.full(300, placeholder), 3, least=1)]
    train = np.r_[random_hashes(rng, 20_000),
                  flip_bits(rng, rng.choice(protected[:2000], 1500), 12),  # copies at every distance
                  np.full(5000, placeholder),  # the placeholder image, 5,000 times
                  np.full(5000, random_hashes(rng, 1)[0]),  # another placeholder, not protected
                  flip_bits(rng, np.full(2000, placeholder), 4, least=1)]  # its re-encodings: a dense corner
    train = train[rng.permutation(len(train))]
    stats = {}

    got = phash_matches(train, protected, radius, method=method, stats=stats)

    want = phash_matches_bruteforce(train, protected, radius)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    assert np.count_nonzero(train[got[0]] == placeholder) == 5000
    assert len(got[0]) > 5000 + (radius > 0) * 500
    # identical placeholders collapse to one value on each side: 5,000 x 5,000 copies are one comparison
    assert stats["train_unique"] < 23_100 and stats["protected_unique"] < 2_400
    if method == "auto":
        assert stats["method"] == ("multi_index" if radius <= 6 else "bruteforce")


def test_phash_matches_is_subquadratic():
    """A million training hashes against 20,000 protected ones at radius 6: every planted copy found, with
    about one comparison per training value per key, not 2 * 10^10 pairs."""
    rng = np.random.default_rng(7)
    protected = random_hashes(rng, 20_000)
    train = random_hashes(rng, 1_000_000)
    planted = rng.choice(len(train), 1000, replace=False)
    source = rng.choice(len(protected), 1000, replace=False)
    train[planted] = flip_bits(rng, protected[source], 6)
    stats = {}

    rows, nearest, distance = phash_matches(train, protected, 6, stats=stats)

    order = np.argsort(planted)
    assert rows.tolist() == planted[order].tolist() and nearest.tolist() == source[order].tolist()
    assert distance.max() <= 6
    assert stats["method"] == "multi_index" and stats["keys"] == 28  # 8 blocks of 8 bits, 2 must match
    assert stats["compared"] < 2 * stats["keys"] * len(train)


def test_phash_matches_edge_cases():
    empty = phash_matches(np.empty(0, np.uint64), np.array([1], np.uint64), 6)
    assert all(len(a) == 0 and a.dtype == np.int64 for a in empty)
    rows, nearest, distance = phash_matches(np.array([5, 4, 0xFF], np.uint64), np.array([0, 4, 4, 5], np.uint64), 1)
    assert rows.tolist() == [0, 1] and nearest.tolist() == [3, 1] and distance.tolist() == [0, 0]
    with pytest.raises(ValueError, match="radius"):
        phash_matches(np.array([1], np.uint64), np.array([1], np.uint64), 64)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def embedding_bruteforce(train: np.ndarray, protected: np.ndarray, min_similarity: float):
    similarity = unit(np.asarray(train, np.float64)) @ unit(protected.astype(np.float64)).T
    nearest = similarity.argmax(axis=1)
    best = similarity[np.arange(len(train)), nearest]
    rows = np.flatnonzero(best >= min_similarity)
    return rows, nearest[rows], best[rows]


@pytest.mark.parametrize("min_similarity", [0.95, 0.5])
def test_embedding_matches_equal_bruteforce_in_blocks(tmp_path, min_similarity):
    rng = np.random.default_rng(1)
    protected = unit(rng.normal(size=(300, 64))).astype(np.float32)
    train = unit(rng.normal(size=(5000, 64)))
    copied = rng.choice(5000, 400, replace=False)
    train[copied] = unit(protected[rng.integers(0, 300, 400)] + rng.normal(scale=rng.uniform(0.001, 0.06, (400, 1)),
                                                                              size=(400, 64)))
    np.save(tmp_path / "train.npy", train.astype(np.float16))
    on_disk = np.load(tmp_path / "train.npy", mmap_mode="r")  # float16, read 700 rows at a time

    rows, nearest, similarity = embedding_matches(on_disk, protected, min_similarity, block_rows=700)

    want_rows, want_nearest, want_similarity = embedding_bruteforce(on_disk, protected, min_similarity)
    assert 100 < len(want_rows) < 5000
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(nearest, want_nearest)
    np.testing.assert_allclose(similarity, want_similarity, atol=1e-5)
    assert rows.dtype == nearest.dtype == np.int64 and similarity.dtype == np.float32


def test_embedding_matches_protects_a_heldout_split():
    rng = np.random.default_rng(2)
    features = unit(rng.normal(size=(1000, 32))).astype(np.float32)
    heldout = np.arange(0, 1000, 10)
    features[[5, 17]] = features[[40, 90]]  # two training images are copies of held-out ones
    others = np.setdiff1d(np.arange(1000), heldout)

    rows, nearest, similarity = embedding_matches(select_rows(features, others), features[heldout], 0.95,
                                                  block_rows=128)

    assert others[rows].tolist() == [5, 17] and heldout[nearest].tolist() == [40, 90]
    np.testing.assert_allclose(similarity, 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="same D"):
        embedding_matches(features, features[:, :16], 0.95)
