"""Decontamination: find the training images that are copies of an image the user evaluates on (COCO val, an
FID/CLIP set, the held-out split), by pHash distance and by embedding similarity.

`read_protected` reads the protected images (a folder, or a table of URLs) through the filter's own per-image
function (lib/images/units.process_image), so each pHash is computed exactly as kept.parquet's and each crop is the
JPEG filtered_images would store. `phash_matches` and `embedding_matches` then list the training rows near a
protected image, each with its nearest one; the pHash search itself is lib/dedup/phash_cross.py.
"""

from __future__ import annotations

import http.client
import math
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import fsspec
import numpy as np
import pandas as pd

from ..images.decode import Rejected
from ..images.units import FilterParams, process_image
from ..ingest.download import IMAGE_SUFFIXES  # a protected folder is read as a source folder is
from ..ingest.sources import FORMATS, SourceError, expand_paths, read_url_list
from ..ingest.urls import UrlPolicy
from .phash_cross import phash_matches, phash_matches_bruteforce  # noqa: F401 (imported from here)

MAX_DOWNLOAD_BYTES = 64 << 20  # an evaluation image is a few MB; more is a wrong URL, not a photograph
SIM_BLOCK = 1 << 24  # similarities per block of embedding_matches: 64 MB of float32


@dataclass
class ProtectedSet:
    """The protected images that could be read, in a stable order (folder paths or table rows).

    ids: (N,) str, the file path relative to the folder, or the URL. phash: (N,) uint64, as kept.parquet's
    `phash` (lib/images/filtering.hex_to_u64). crops: N JPEG blobs, each the square crop filtered_images would store
    for this file; `lib.crops.decode_crops(crops[a:b])` gives the (n, S, S, 3) uint8 RGB batch the model
    stages pass to `model.preprocess`. failures: (id, reason, detail), one row per file or URL not read.
    """

    ids: np.ndarray
    phash: np.ndarray
    crops: list[bytes]
    failures: pd.DataFrame

    def __len__(self) -> int:
        return len(self.ids)


class ProtectedSetError(ValueError):
    """The protected set cannot be used as configured; the message says what to fix."""


def read_protected(path: str, url_col: str, policy: UrlPolicy, image_size: int, max_pixels: int, timeout: float,
                   threads: int, resize_mode: str = "center_crop", jpeg_quality: int = 95) -> ProtectedSet:
    """Read the protected images at `path`: a folder of images (searched recursively) or a parquet/csv/jsonl
    table whose `url_col` column (any case) lists http(s) URLs, fetched with `threads` threads.

    A URL the `policy` refuses (a metadata or link-local address, another scheme) is never connected to; a
    redirect is checked the same way before it is followed. Every image is decoded, cropped and hashed by
    the filter's own function with no size, shape or blank check (a protected image is protected whatever it
    looks like). `image_size`, `resize_mode`, `jpeg_quality` and `max_pixels` must be the filter's settings
    for the hashes and crops to compare. Raises ProtectedSetError when nothing could be read.
    """
    params = FilterParams(image_size=image_size, resize_mode=resize_mode, min_side=1, max_aspect=math.inf,
                          blank_std=-1.0, jpeg_quality=jpeg_quality, max_image_pixels=max_pixels)
    fs = fsspec.get_fs_token_paths(path)[0]
    files = [] if path.lower().endswith(tuple(FORMATS)) else _listed(path, IMAGE_SUFFIXES)
    if not files and not _listed(path, tuple(FORMATS)):
        raise ProtectedSetError(f"quality.protected.path {path!r}: no images ({' '.join(IMAGE_SUFFIXES)}) and no "
                                f"table ({' '.join(FORMATS)}) there; point it at a folder of images or a URL table")
    if not files:
        try:
            urls = read_url_list(path, url_col)[0]["url"].astype(str).tolist()
        except SourceError as exc:
            raise ProtectedSetError(f"quality.protected.path: {exc}") from None
        unique = list(dict.fromkeys(urls))
        results = _map(lambda url: _read_url(url, policy, timeout, params), unique, threads)
        repeated = [(url, "duplicate_url", "URL listed earlier in the table")
                    for url in pd.Series(urls)[pd.Series(urls).duplicated()]]
        ids, what = unique, f"URL table {path} (column {url_col!r})"
    else:
        results = _map(lambda f: _read_file(f, params), files, threads)
        root = fs._strip_protocol(path).rstrip("/")
        ids = [_relative(fs._strip_protocol(f), root) for f in files]
        repeated, what = [], f"folder {path}"
    kept = [(i, r) for i, r in zip(ids, results) if not isinstance(r, _Failed)]
    failures = pd.DataFrame([(i, *r.args) for i, r in zip(ids, results) if isinstance(r, _Failed)] + repeated,
                            columns=["id", "reason", "detail"])
    if not kept:
        counts = failures["reason"].value_counts().to_dict()
        raise ProtectedSetError(f"quality.protected.path: none of the {len(ids)} images of the {what} could be read "
                                f"({counts or 'the list is empty'}); first failure: "
                                f"{failures.iloc[0].to_dict() if len(failures) else 'none'}. Fix the list, or "
                                "unset quality.protected.path to run without decontamination")
    return ProtectedSet(ids=np.array([i for i, _ in kept], dtype=np.str_),
                        phash=np.array([h for _, (h, _c) in kept], dtype=np.uint64),
                        crops=[c for _, (_h, c) in kept], failures=failures)


class _Failed(Exception):
    """(reason, detail) of one protected item that could not be read."""


def _listed(path: str, suffixes: tuple[str, ...]) -> list[str]:
    """The files at `path` (a folder, searched recursively, a file or a glob) with one of these suffixes."""
    try:
        return expand_paths(path, suffixes)
    except SourceError:
        return []


def _relative(file: str, root: str) -> str:
    """A file's path under the folder, or its name when the path named the file itself."""
    return file[len(root) + 1:] if file.startswith(root + "/") else file.rsplit("/", 1)[-1]


def _map(fn, items: list, threads: int) -> list:
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(fn, items))


def _hash_and_crop(data: bytes, params: FilterParams) -> tuple[int, bytes] | _Failed:
    try:
        facts, crop = process_image(data, params)
    except Rejected as rejected:
        return _Failed(rejected.reason, rejected.detail)
    return int(facts["phash"], 16), crop


def _read_file(url: str, params: FilterParams) -> tuple[int, bytes] | _Failed:
    try:
        with fsspec.open(url, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return _Failed("unreadable_file", f"{type(exc).__name__}: {exc}")
    return _hash_and_crop(data, params)


def _read_url(url: str, policy: UrlPolicy, timeout: float, params: FilterParams) -> tuple[int, bytes] | _Failed:
    refused = policy.refusal(url)
    if refused:
        return _Failed(*refused)
    opener = urllib.request.build_opener(_CheckedRedirect(policy))
    request = urllib.request.Request(url, headers={"User-Agent": "paris-assets (decontamination)"})
    try:
        with opener.open(request, timeout=timeout) as response:
            data = response.read(MAX_DOWNLOAD_BYTES + 1)
    except _Failed as failed:
        return failed
    except urllib.error.HTTPError as exc:
        return _Failed(f"http_{exc.code}", f"HTTP {exc.code} {exc.reason}")
    except urllib.error.URLError as exc:
        text = str(exc.reason).lower()
        kind = ("timeout" if "timed out" in text else "connection_refused" if "refused" in text
                else "dns" if "name or service" in text or "resolution" in text else "network_error")
        return _Failed(kind, str(exc.reason))
    except (TimeoutError, OSError, http.client.HTTPException) as exc:  # a reset, a body cut short, a bad status
        return _Failed("timeout" if isinstance(exc, TimeoutError) else "network_error", f"{type(exc).__name__}: {exc}")
    if len(data) > MAX_DOWNLOAD_BYTES:
        return _Failed("too_large", f"more than {MAX_DOWNLOAD_BYTES:,} bytes")
    return _hash_and_crop(data, params)


class _CheckedRedirect(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL the policy allows: a public URL answering 302 to 169.254.169.254 is
    refused before the second connection."""

    def __init__(self, policy: UrlPolicy):
        self.policy = policy

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        refused = self.policy.refusal(newurl)
        if refused:
            fp.close()
            raise _Failed(refused[0], f"redirected to {newurl}: {refused[1]}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


# --- embeddings -----------------------------------------------------------------------------------------------


def embedding_matches(train, protected: np.ndarray, min_similarity: float, block_rows: int = 32768
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train_rows, protected_rows, similarity): every training row whose best cosine similarity to a protected
    row is >= min_similarity, ascending, with that row; int64, int64, float32.

    `train` is (N, D), any dtype, read `block_rows` rows at a time by slicing (a numpy array or memmap, a
    lib/store/arrays ChunkedArray, a RowSelection); `protected` (P, D). Both sides are L2-normalised here (a float16
    copy of a unit vector is off by ~1e-3), so similarity is the cosine. Exact search by numpy matmul in blocks:
    O(N * P * D) time, memory O(block * P) with the block shrunk so a block of similarities stays under 64 MB.
    numpy's BLAS reaches ~43 GFLOP/s on this 2-core machine against ~10 through the OpenBLAS faiss-cpu bundles
    (faiss' IndexFlatIP, the same search, measured 4x slower here): 11M x 5,000 x 768 is ~30 min here.

    To protect a held-out split: protected = the held-out rows' features, train = the others
    (lib/store/arrays.select_rows(features, others)); train_rows are then positions among the others.
    """
    protected = _unit_rows(np.asarray(protected, np.float32))
    if protected.ndim != 2 or train.ndim != 2 or train.shape[1] != protected.shape[1]:
        raise ValueError(f"training features {tuple(train.shape)} and protected features {protected.shape} must be "
                         "(N, D) and (P, D) with the same D: compute both with the same embedding model")
    if not 0 < min_similarity <= 1:
        raise ValueError(f"min_similarity must be in (0, 1], got {min_similarity}")
    out = [], [], []
    if len(protected):
        block_rows = max(64, min(block_rows, SIM_BLOCK // len(protected)))
        for lo in range(0, len(train), block_rows):
            sims = _unit_rows(np.asarray(train[lo:lo + block_rows], np.float32)) @ protected.T
            nearest = sims.argmax(axis=1)
            best = sims[np.arange(len(sims)), nearest]
            near = np.flatnonzero(best >= min_similarity)
            for part, values in zip(out, (near + lo, nearest[near], best[near])):
                part.append(values)
    if not out[0]:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    rows, nearest, similarity = (np.concatenate(p) for p in out)
    return rows.astype(np.int64), nearest.astype(np.int64), similarity.astype(np.float32)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows (a failed embedding) stay zero and match nothing."""
    norm = np.linalg.norm(x, axis=1, keepdims=True) if x.ndim == 2 else 1.0
    return np.ascontiguousarray(x / np.maximum(norm, np.float32(1e-12)), dtype=np.float32)
