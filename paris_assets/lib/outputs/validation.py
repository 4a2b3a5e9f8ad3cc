"""Checks on the contract arrays: plain functions returning (passed, facts), streamed in row blocks."""

from __future__ import annotations

import base64
import io
import mmap

import numpy as np
from PIL import Image

BLOCK_BYTES = 128 * 2**20  # rows checked at once are bounded by bytes, whatever a row's width (CLIP tokens: 118 KB)
EXPONENT = {2: np.uint16(0x7C00), 4: np.uint32(0x7F800000), 8: np.uint64(0x7FF0000000000000)}  # IEEE 754 widths


def rows_per_block(array: np.ndarray, block_bytes: int = BLOCK_BYTES) -> int:
    row_bytes = int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize
    return max(1, block_bytes // max(1, row_bytes))


def release_pages(array: np.ndarray) -> None:
    """Drop a memory-mapped array's pages from this process once read: they stay in the page cache, but not in
    our resident set, so a pass over a 1 TB array holds one block, not the whole file."""
    mapping = getattr(array, "_mmap", None)
    if mapping is not None and hasattr(mapping, "madvise"):
        mapping.madvise(mmap.MADV_DONTNEED)


def non_finite_rows(block: np.ndarray) -> np.ndarray:
    """Which rows hold a NaN or inf, read from the exponent bits in the array's own dtype (all ones: not finite):
    no float32 copy of a float16 block, four times faster than converting."""
    if not np.issubdtype(block.dtype, np.floating):
        return np.zeros(len(block), bool)
    mask = EXPONENT[block.dtype.itemsize]
    bits = np.ascontiguousarray(block).reshape(len(block), -1).view(mask.dtype)
    return np.maximum.reduce(bits & mask, axis=1, initial=0) == mask


def ids_differ_at(image_ids: np.ndarray, kept_ids, block: int = 1 << 20) -> int | None:
    """The first row where image_ids and the kept ids (any sequence: numpy, pyarrow) differ, None when equal;
    compared in blocks, never both whole as Python strings."""
    n = min(len(image_ids), len(kept_ids))
    for start in range(0, n, block):
        stop = min(n, start + block)
        ours = np.asarray(image_ids[start:stop], dtype=str)
        theirs = kept_ids[start:stop]
        theirs = np.asarray(theirs.to_numpy(zero_copy_only=False) if hasattr(theirs, "to_numpy") else theirs, dtype=str)
        unequal = np.flatnonzero(ours != theirs)
        release_pages(image_ids)
        if len(unequal):
            return start + int(unequal[0])
    return None if len(image_ids) == len(kept_ids) else n


def check_arrays(arrays: dict[str, np.ndarray], image_ids: np.ndarray, kept_ids,
                 expected_tail: dict[str, tuple[int, ...]], unit_norm: tuple[str, ...] = (),
                 norm_tolerance: float = 1e-3) -> tuple[bool, dict]:
    """Finite values, the expected shape per row, unit L2 norm where promised, and image_ids identical to the
    kept set (same ids, same order). Returns (passed, facts with one entry per problem found).

    Streams blocks of at most BLOCK_BYTES in the arrays' own dtype (norms in float32), releasing memory-mapped
    pages as it goes: the peak memory does not grow with the number of rows."""
    problems: list[str] = []
    facts: dict = {"rows": int(len(image_ids))}
    mismatch = ids_differ_at(image_ids, kept_ids)
    if mismatch is not None:
        problems.append(f"image_ids differ from kept.parquet ({len(image_ids)} vs {len(kept_ids)} rows; "
                        f"first difference at row {mismatch})")
    for name, array in arrays.items():
        facts[f"{name}_shape"] = list(array.shape)
        if len(array) != len(image_ids):
            problems.append(f"{name}: {len(array)} rows for {len(image_ids)} image_ids")
        if name in expected_tail and tuple(array.shape[1:]) != tuple(expected_tail[name]):
            problems.append(f"{name}: rows of shape {tuple(array.shape[1:])}, expected {tuple(expected_tail[name])}")
        bad, worst = 0, 0.0
        step = rows_per_block(array, BLOCK_BYTES // 2 if name in unit_norm else BLOCK_BYTES)
        for start in range(0, len(array), step):
            block = array[start:start + step]
            finite = ~non_finite_rows(block)
            bad += int((~finite).sum())
            if name in unit_norm and len(block):
                norms = np.linalg.norm(block.reshape(len(block), -1).astype(np.float32, copy=False), axis=1)
                worst = max(worst, float(np.nan_to_num(np.abs(norms[finite] - 1), nan=0.0).max(initial=0.0)))
            release_pages(array)
        facts[f"{name}_non_finite_rows"] = bad
        if bad:
            problems.append(f"{name}: {bad} rows with NaN or inf")
        if name in unit_norm:
            facts[f"{name}_max_norm_error"] = round(worst, 6)
            if worst > norm_tolerance:
                problems.append(f"{name}: L2 norm off by up to {worst:.4f} (promised unit norm)")
    facts["problems"] = problems
    return not problems, facts


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB between uint8 (N, H, W, 3) arrays."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))


def side_by_side_png(originals: np.ndarray, reconstructions: np.ndarray, thumb: int = 96) -> bytes:
    """A 2-row grid: originals on top, reconstructions below, as PNG bytes."""
    n = len(originals)
    grid = Image.new("RGB", (thumb * n, thumb * 2), "white")
    for i, (o, r) in enumerate(zip(originals, reconstructions)):
        grid.paste(Image.fromarray(o).resize((thumb, thumb)), (i * thumb, 0))
        grid.paste(Image.fromarray(r).resize((thumb, thumb)), (i * thumb, thumb))
    buf = io.BytesIO()
    grid.save(buf, "PNG")
    return buf.getvalue()


def inline_png(png: bytes, alt: str) -> str:
    """Markdown that shows the image inline in the Dagster UI (metadata has no image type)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def inline_jpeg(image_bytes: bytes, alt: str, quality: int = 80) -> str:
    """Like inline_png, re-encoded as JPEG: photo grids are several times smaller in the event log."""
    buf = io.BytesIO()
    Image.open(io.BytesIO(image_bytes)).convert("RGB").save(buf, "JPEG", quality=quality)
    return f"![{alt}](data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()})"


def verify_training_outputs(data_root: str, kept_ids, heldout_ids,
                            expect: dict[str, tuple[tuple[int, ...], str]]) -> tuple[bool, dict]:
    """Everything pipeline_manifest.json promises about expert_shards/ and heldout/: each listed shard exists,
    is non-empty, has its sha256 and sample count; no unlisted file; every kept image exactly once across the
    clusters and the held-out set (held-out ones only there); one sample per cluster decoded by the plain
    webdataset library with the promised keys, shapes and dtypes (`expect`: key -> (shape, dtype), shapes of
    any rank: a clip's latent is (C, T', h, w)), and for media: video a json saying so."""
    import hashlib
    import json

    from ..store.storage import IncompleteOutput, require_settled, root_upath
    from .shards import files_on_disk, listed_shards
    from .tars import iter_members, iter_samples

    root = root_upath(data_root)
    problems: list[str] = []
    manifest_path = root / "pipeline_manifest.json"
    if not manifest_path.exists():
        return False, {"problems": ["pipeline_manifest.json is missing"]}
    try:
        require_settled(data_root, "expert_shards", "heldout")
    except IncompleteOutput as exc:
        return False, {"problems": [str(exc)]}
    manifest = json.loads(manifest_path.read_text())
    listed = {s["path"]: (where, s) for where, s in listed_shards(manifest)}
    on_disk = files_on_disk(root)
    places = {where: i for i, where in enumerate(sorted({where for where, _s in listed.values()}))}
    found_keys: list[np.ndarray] = []   # every sample key, as fixed-width bytes (16 B an id, not a Python string)
    found_where: list[np.ndarray] = []  # and where it was found (an index into places)
    for rel, (where, entry) in sorted(listed.items()):
        path = root / rel
        if on_disk.get(rel, (0,))[0] == 0:
            problems.append(f"{rel}: {'missing' if rel not in on_disk else 'empty'}")
            continue
        keys = []
        data = path.read_bytes()  # one read, hashed and parsed (shards are bounded by max_shard_bytes)
        digest = hashlib.sha256(data)
        with io.BytesIO(data) as fh:
            try:
                for name, _size, _stream in iter_members(fh):
                    key = name.rpartition("/")[2].partition(".")[0]
                    if not keys or keys[-1] != key:
                        keys.append(key)
            except Exception as exc:  # a damaged tar is a finding, not a crash
                problems.append(f"{rel}: unreadable tar ({type(exc).__name__}: {exc})")
        if digest.hexdigest() != entry["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest")
        if len(keys) != entry["samples"]:
            problems.append(f"{rel}: {len(keys)} samples, the manifest says {entry['samples']}")
        found_keys.append(np.array(keys, dtype="S"))
        found_where.append(np.full(len(keys), places[where], np.int32))
    for extra in sorted(rel for rel in set(on_disk) - set(listed) if not rel.endswith("/_SUCCESS.json")):
        problems.append(f"{extra}: on disk but not in the manifest")
    where = np.concatenate(found_where) if found_where else np.empty(0, np.int32)
    (keys, kept, held), name = id_codes(np.concatenate(found_keys) if found_keys else np.empty(0, "S16"),
                                        np.asarray(kept_ids).astype("S"), np.asarray(heldout_ids).astype("S"))
    del found_keys
    ordered = np.sort(keys)
    twice = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    missing = np.sort(kept[~np.isin(kept, keys)])
    unknown = np.unique(keys[~np.isin(keys, kept)])
    in_heldout = where == places.get("heldout", -1)
    misplaced = np.unique(keys[np.isin(keys, held) & ~in_heldout])
    stray = np.unique(keys[in_heldout & ~np.isin(keys, held)])
    if len(twice):
        problems.append(f"{len(twice)} images appear more than once (first: {name(twice[0])})")
    if len(missing):
        problems.append(f"{len(missing)} kept images are in no shard (first: {name(missing[0])})")
    if len(unknown):
        problems.append(f"{len(unknown)} shard samples are not kept images (first: {name(unknown[0])})")
    if len(misplaced):
        problems.append(f"{len(misplaced)} held-out images are in expert shards (first: {name(misplaced[0])})")
    if len(stray):
        problems.append(f"{len(stray)} images in heldout/ are not held out (first: {name(stray[0])})")
    for cluster, shards in manifest["clusters"].items():
        first = next((root / s["path"] for s in shards if (root / s["path"]).exists()), None)
        if first is None:
            continue
        try:
            sample = _first_sample(first, iter_samples)
        except Exception as exc:
            problems.append(f"cluster {cluster}: webdataset cannot read {first.name} ({type(exc).__name__}: {exc})")
            continue
        for key, (shape, dtype) in expect.items():
            value = sample.get(key)
            if value is None:
                problems.append(f"cluster {cluster}: sample has no {key}")
            elif tuple(np.shape(value)) != tuple(shape) or str(np.asarray(value).dtype) != dtype:
                problems.append(f"cluster {cluster}: {key} is {np.shape(value)} {np.asarray(value).dtype}, "
                                f"expected {shape} {dtype}")
        if json.loads(json.dumps(sample["json"]))["cluster"] != int(cluster):
            problems.append(f"cluster {cluster}: a sample's json says cluster {sample['json']['cluster']}")
        media = manifest.get("media", "image")
        if sample["json"].get("media", "image") != media:
            problems.append(f"cluster {cluster}: a sample's json says media {sample['json'].get('media', 'image')}, "
                            f"the manifest {media}")
    facts = {"shards": len(listed), "samples": int(len(keys)), "problems": problems}
    return not problems, facts



HEX = np.zeros(256, np.uint64)
HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint64)
IS_HEX = np.zeros(256, bool)
IS_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = True


def id_codes(*ids: np.ndarray):
    """Integer codes for arrays of ids (bytes), equal ids getting equal codes, and a function from a code back to the
    id: image ids (16 hex digits) map to their 64-bit value, so set operations over 11M ids sort integers (about
    40x faster than numpy's byte strings, 8 B an id); any other ids go through one sort of them all."""
    joined = np.concatenate([a for a in ids if len(a)] or [np.empty(0, "S16")])  # empties would widen the dtype
    digits = joined.view(np.uint8).reshape(len(joined), -1) if joined.dtype.itemsize == 16 else None
    if digits is not None and all(IS_HEX[digits[:, i]].all() for i in range(16)):
        codes = np.zeros(len(joined), np.uint64)
        for i in range(16):
            codes = (codes << np.uint64(4)) | HEX[digits[:, i]]
        name = lambda code: f"{int(code):016x}"  # noqa: E731
    else:
        unique, codes = np.unique(joined, return_inverse=True)
        name = lambda code: unique[code].decode()  # noqa: E731
    bounds = np.cumsum([0] + [len(a) for a in ids])
    return [codes[a:b] for a, b in zip(bounds[:-1], bounds[1:])], name


def _first_sample(path, iter_samples) -> dict:
    """The first sample of a shard, decoded the way webdataset's default decoder does: by the plain
    webdataset library on the local disk, over fsspec on object stores; members decoded by lib/outputs/samples, which
    refuses pickle and torch members and object .npy arrays (a clip's mp4 stays bytes: lib/outputs/shards)."""
    from ..store.storage import is_local
    from .shards import decode_shard_sample

    if is_local(str(path)):  # webdataset reads the tar; lib/outputs/samples decodes (webdataset's decode() unpickles)
        import webdataset as wds

        return next(iter(wds.WebDataset(str(path), shardshuffle=False).map(decode_shard_sample)))
    with path.open("rb") as fh:
        key, fields = next(iter_samples(fh))
    return decode_shard_sample({"__key__": key, "__url__": str(path), **fields})
