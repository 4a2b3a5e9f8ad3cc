"""The near-duplicate measurement and the benchmark inputs, on the two photographs every scikit-learn install ships
(the full run fetches 52 more from Debian packages: python -m paris_assets.bench.photos)."""

import io

import numpy as np
from PIL import Image

from paris_assets.bench.photos import laion_like, load_photo, radius_table, sklearn_photos
from paris_assets.lib.demo.images import NEAR_COPY_RECIPES


def test_radius_table_on_real_photographs():
    photos = [load_photo(p, 640) for p in sklearn_photos()]
    rows, sizes = radius_table(photos, radii=range(0, 13, 2))
    assert sizes["photos"] == 2 and sizes["copies"] == 2 * len(NEAR_COPY_RECIPES) and sizes["pairs_originals"] == 1
    recall = [r["recall"] for r in rows]
    assert recall == sorted(recall) and recall[-1] >= 0.9  # more found as the radius grows
    assert rows[3]["recall_rescale"] == 1.0 and rows[3]["recall_requality"] == 1.0  # radius 6, the default
    assert all(r["fpr_originals"] == 0 for r in rows)  # china and flower are far apart
    assert sizes["closest_different"] > 12


def test_laion_like_inputs_are_deterministic_and_shaped_like_laion():
    photos = [load_photo(p) for p in sklearn_photos()]
    blobs = laion_like(photos, 12, seed=3)
    assert blobs == laion_like(photos, 12, seed=3)
    sizes = [Image.open(io.BytesIO(b)).size for b in blobs]
    assert all(400 <= max(s) <= 1200 for s in sizes)
    assert 0.1 < np.mean([w * h for w, h in sizes]) / 1e6 < 1.0
