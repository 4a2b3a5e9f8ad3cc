"""Checks on the contract arrays: plain functions returning (passed, facts), streamed in row blocks."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

BLOCK = 65536


def check_arrays(arrays: dict[str, np.ndarray], image_ids: np.ndarray, kept_ids: np.ndarray,
                 expected_tail: dict[str, tuple[int, ...]], unit_norm: tuple[str, ...] = (),
                 norm_tolerance: float = 1e-3) -> tuple[bool, dict]:
    """Finite values, the expected shape per row, unit L2 norm where promised, and image_ids identical to the
    kept set (same ids, same order). Returns (passed, facts with one entry per problem found)."""
    problems: list[str] = []
    facts: dict = {"rows": int(len(image_ids))}
    if len(image_ids) != len(kept_ids) or not np.array_equal(np.asarray(image_ids, str), np.asarray(kept_ids, str)):
        mismatch = int(np.argmax(np.asarray(image_ids[:len(kept_ids)], str) != np.asarray(kept_ids[:len(image_ids)], str))) \
            if min(len(image_ids), len(kept_ids)) else 0
        problems.append(f"image_ids differ from kept.parquet ({len(image_ids)} vs {len(kept_ids)} rows; "
                        f"first difference at row {mismatch})")
    for name, array in arrays.items():
        facts[f"{name}_shape"] = list(array.shape)
        if len(array) != len(image_ids):
            problems.append(f"{name}: {len(array)} rows for {len(image_ids)} image_ids")
        if name in expected_tail and tuple(array.shape[1:]) != tuple(expected_tail[name]):
            problems.append(f"{name}: rows of shape {tuple(array.shape[1:])}, expected {tuple(expected_tail[name])}")
        bad, worst = 0, 0.0
        for start in range(0, len(array), BLOCK):
            block = np.asarray(array[start:start + BLOCK], dtype=np.float32)
            bad += int((~np.isfinite(block)).reshape(len(block), -1).any(axis=1).sum())
            if name in unit_norm and len(block):
                worst = max(worst, float(np.abs(np.linalg.norm(block, axis=1) - 1).max()))
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
