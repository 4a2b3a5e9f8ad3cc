"""Decontamination: find the training images that are copies of an image the user evaluates on (COCO val, an
FID/CLIP set, the held-out split), by pHash distance and by embedding similarity.

`read_protected` reads the protected images (a folder, or a table of URLs) through the filter's own per-image
function (lib/checks.process_image), so each pHash is computed exactly as kept.parquet's and each crop is the
JPEG filtered_images would store. `phash_matches` and `embedding_matches` then list the training rows near a
protected image, each with its nearest one.

pHash search (`phash_matches`), for N training and P protected hashes: equal hashes collapse first (one sort of
the training hashes, O(N log N)), so thousands of identical placeholders cost one value. Then multi-index
hashing as in lib/dedup: the 64 bits are split into m blocks and two hashes within `radius` bits agree on at
least s = m - radius of them, so for each of the C(m, s) choices of s blocks a training value is compared only
with the protected values whose masked bits equal its own. Those are found through a bucket table over the
protected side (masked key -> multiplicative hash -> one of ~8P buckets): O(1) per look-up, and a bucket
collision only adds a comparison, never loses a pair. Work per choice is O(U_t + U_p + candidates), candidates
~ U_t * U_p * (2^-key_bits + 1/8P) for spread hashes; at radius 6 (m = 8, s = 2, 28 choices) about one
candidate per training value per choice. 11M random hashes against 50k: 9 blocks, 3 matching, 84 choices,
1.1e8 comparisons, 28 s on a loaded 2-core machine (the 28-choice plan: 3.0e8 comparisons, 38 s). Memory is O(U_t) plus at most CHUNK_WORK candidates at a time. A dense corner of the hash space on
both sides (many distinct values sharing a key) costs their product in time, never in memory. When comparing
every pair of distinct values, O(U_t * U_p), is expected to be cheaper (a small set, a radius of 12 and
more, where C(m, s) explodes), that is done instead, in blocks of CHUNK_WORK pairs.
"""

from __future__ import annotations

import http.client
import itertools
import math
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import fsspec
import numpy as np
import pandas as pd

from .checks import FilterParams, process_image
from .images import Rejected
from .ingest import IMAGE_SUFFIXES  # a protected folder is read as a source folder is
from .sources import FORMATS, SourceError, expand_paths, read_url_list
from .urls import UrlPolicy

HASH_BITS = 64
MAX_DOWNLOAD_BYTES = 64 << 20  # an evaluation image is a few MB; more is a wrong URL, not a photograph
CHUNK_WORK = 4_000_000  # pHash candidates compared at once: ~100 MB of temporary arrays
TRAIN_BLOCK = 1 << 20  # training values looked up at once
SIM_BLOCK = 1 << 24  # similarities per block of embedding_matches: 64 MB of float32
PAIR_COST = 0.1  # a brute-force comparison (xor, popcount, min over a block) against a look-up, measured ~1:10


@dataclass
class ProtectedSet:
    """The protected images that could be read, in a stable order (folder paths or table rows).

    ids: (N,) str, the file path relative to the folder, or the URL. phash: (N,) uint64, as kept.parquet's
    `phash` (lib/filtering.hex_to_u64). crops: N JPEG blobs, each the square crop filtered_images would store
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


# --- pHash ----------------------------------------------------------------------------------------------------


def phash_matches(train_phash: np.ndarray, protected_phash: np.ndarray, radius: int, method: str = "auto",
                  stats: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train_rows, protected_rows, distance): every training row within `radius` bits of some protected hash,
    ascending, with its nearest protected row (ties to the lowest row) and their Hamming distance; (M,) int64
    each. Method and cost in the module docstring; `method` "auto" takes multi-index hashing unless comparing
    every pair of distinct values is cheaper (a small set, or a radius near 16 and beyond), "multi_index" or
    "bruteforce" force one. `stats`, when given, receives the work done: the method, unique values on each
    side, keys searched, hashes compared."""
    train = np.asarray(train_phash, np.uint64).ravel()
    protected = np.asarray(protected_phash, np.uint64).ravel()
    if not 0 <= radius < HASH_BITS:
        raise ValueError(f"radius must be in [0, {HASH_BITS}), got {radius}")
    if method not in ("auto", "multi_index", "bruteforce"):
        raise ValueError(f"method must be auto, multi_index or bruteforce, got {method!r}")
    empty = np.empty(0, np.int64)
    if not len(train) or not len(protected):
        return empty, empty, empty
    values, inverse = np.unique(train, return_inverse=True)
    targets, first_row = np.unique(protected, return_index=True)
    m, s, bucket_bits, cost = cross_plan(len(values), len(targets), radius)
    if method == "auto":
        method = "bruteforce" if len(values) * len(targets) * PAIR_COST <= cost else "multi_index"
    n = len(protected)
    none = np.int64((HASH_BITS + 1) * n)
    best = np.full(len(values), none, np.int64)  # distance * n + protected row: the min is the nearest, lowest row
    compared, keys = 0, 0
    if method == "bruteforce":
        step = max(1, CHUNK_WORK // len(targets))
        for lo in range(0, len(values), step):
            code = np.bitwise_count(values[lo:lo + step, None] ^ targets[None, :]).astype(np.int64) * n + first_row
            best[lo:lo + step] = np.where(code < (radius + 1) * n, code, none).min(axis=1)
        compared = len(values) * len(targets)
    else:
        for mask in block_masks(m, s):
            table = _BucketTable(targets, mask, bucket_bits)
            for lo in range(0, len(values), TRAIN_BLOCK):
                compared += table.compare(values, lo, min(lo + TRAIN_BLOCK, len(values)), radius, first_row, n, best)
        keys = math.comb(m, s)
    if stats is not None:
        stats.update(method=method, train_unique=len(values), protected_unique=len(targets), keys=keys,
                     compared=compared)
    rows = np.flatnonzero(best[inverse] < none)
    code = best[inverse[rows]]
    return rows.astype(np.int64), code % n, code // n


def cross_plan(n_train: int, n_protected: int, radius: int) -> tuple[int, int, int, float]:
    """(blocks m, blocks that must match s, bucket bits, expected cost) for the least expected work: C(m, s)
    keys, each a look-up per training value (cost 1) plus the candidates sharing a key or a bucket with it
    (cost 4 each; PAIR_COST is a brute-force comparison in the same unit)."""
    bucket_bits = min(26, max(4, math.ceil(math.log2(max(n_protected, 1))) + 3))
    best = None
    for s in range(1, 6):
        m = radius + s
        if m > HASH_BITS:
            break
        key_bits = HASH_BITS * s / m
        per_value = 1 + 4 * n_protected * (2.0 ** -key_bits + 2.0 ** -bucket_bits)
        cost = math.comb(m, s) * (n_train * per_value + n_protected)
        if best is None or cost < best[0]:
            best = (cost, m, s)
    return best[1], best[2], bucket_bits, best[0]


def block_masks(m: int, s: int) -> list[np.uint64]:
    """One 64-bit mask per choice of s of m near-equal blocks of bits (lib/dedup.key_masks' blocks)."""
    edges = np.linspace(0, HASH_BITS, m + 1).round().astype(int).tolist()
    blocks = [((1 << (hi - lo)) - 1) << lo for lo, hi in itertools.pairwise(edges)]
    return [np.uint64(sum(combo)) for combo in itertools.combinations(blocks, s)]


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the top bits of key * golden spread any key set


class _BucketTable:
    """The protected values grouped by bucket of their masked key: bucket b holds
    targets[order[start[b]:start[b] + count[b]]]. Equal masked keys share a bucket."""

    def __init__(self, targets: np.ndarray, mask: np.uint64, bits: int):
        self.targets, self.mask, self.shift = targets, mask, np.uint64(HASH_BITS - bits)
        bucket = self.bucket(targets)
        self.order = np.argsort(bucket, kind="stable")
        self.count = np.bincount(bucket, minlength=1 << bits).astype(np.int32)  # int32: half the cache lines
        self.start = (np.cumsum(self.count, dtype=np.int64) - self.count).astype(np.int32)

    def bucket(self, hashes: np.ndarray) -> np.ndarray:
        key = np.bitwise_and(hashes, self.mask)
        np.multiply(key, _GOLDEN, out=key)  # wraps modulo 2^64, as Fibonacci hashing wants
        return np.right_shift(key, self.shift, out=key).view(np.int64)

    def compare(self, values: np.ndarray, lo: int, hi: int, radius: int, first_row: np.ndarray, n_rows: int,
                best: np.ndarray) -> int:
        """Compare values[lo:hi] with the protected values of their buckets, lowering `best` (distance * n_rows
        + protected row) where within radius; returns the number of comparisons."""
        bucket = self.bucket(values[lo:hi])
        count = self.count[bucket]
        busy = np.flatnonzero(count)  # most values share no bucket with a protected one: only these go on
        first, count = self.start[bucket[busy]].astype(np.int64), count[busy].astype(np.int64)
        ends = np.cumsum(count)
        done, at = 0, 0
        while at < len(busy):  # pieces of at most CHUNK_WORK comparisons (one value's bucket at least)
            stop = max(at + 1, int(np.searchsorted(ends, done + CHUNK_WORK, side="right")))
            c = count[at:stop]
            which = np.repeat(busy[at:stop] + lo, c)
            offset = np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)
            target = self.order[np.repeat(first[at:stop], c) + offset]
            distance = np.bitwise_count(values[which] ^ self.targets[target]).astype(np.int64)
            near = distance <= radius
            np.minimum.at(best, which[near], distance[near] * n_rows + first_row[target[near]])
            done, at = int(ends[stop - 1]), stop
        return int(ends[-1]) if len(ends) else 0


def phash_matches_bruteforce(train_phash: np.ndarray, protected_phash: np.ndarray, radius: int,
                             block: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """phash_matches by comparing every pair, O(N * P): for tests."""
    train = np.asarray(train_phash, np.uint64)
    protected = np.asarray(protected_phash, np.uint64)
    out = [], [], []
    for lo in range(0, len(train), block):
        distance = np.bitwise_count(train[lo:lo + block, None] ^ protected[None, :])
        nearest = distance.argmin(axis=1)  # first minimum: the lowest row
        d = distance[np.arange(len(nearest)), nearest]
        near = np.flatnonzero(d <= radius)
        for part, values in zip(out, (near + lo, nearest[near], d[near])):
            part.append(values.astype(np.int64))
    return tuple(np.concatenate(p) if p else np.empty(0, np.int64) for p in out)


# --- embeddings -----------------------------------------------------------------------------------------------


def embedding_matches(train, protected: np.ndarray, min_similarity: float, block_rows: int = 32768
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train_rows, protected_rows, similarity): every training row whose best cosine similarity to a protected
    row is >= min_similarity, ascending, with that row; int64, int64, float32.

    `train` is (N, D), any dtype, read `block_rows` rows at a time by slicing (a numpy array or memmap, a
    lib/arrays ChunkedArray, a RowSelection); `protected` (P, D). Both sides are L2-normalised here (a float16
    copy of a unit vector is off by ~1e-3), so similarity is the cosine. Exact search by numpy matmul in blocks:
    O(N * P * D) time, memory O(block * P) with the block shrunk so a block of similarities stays under 64 MB.
    numpy's BLAS reaches ~43 GFLOP/s on this 2-core machine against ~10 through the OpenBLAS faiss-cpu bundles
    (faiss' IndexFlatIP, the same search, measured 4x slower here): 11M x 5,000 x 768 is ~30 min here.

    To protect a held-out split: protected = the held-out rows' features, train = the others
    (lib/arrays.select_rows(features, others)); train_rows are then positions among the others.
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
