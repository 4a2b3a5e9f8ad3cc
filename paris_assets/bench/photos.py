"""Real photographs for the benchmarks: found in Debian packages (fetched with `apt-get download`, unpacked with
`dpkg-deb -x` into a cache, nothing installed) plus the two that scikit-learn ships.

No photograph is committed: the lists below name the files, the cache holds them (~230 MB of .deb files, unpacked
into ~/.cache/paris-assets/photos). Drawings, renders and screenshots in the same packages are left out by name,
as are the second halves of stereo pairs and before/after pairs, which are near copies of each other.

    python -m paris_assets.bench.photos             # the recall / false-positive table per pHash radius
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..lib.demo.images import NEAR_COPY_RECIPES, apply_recipe
from ..lib.images.decode import decode_image, image_phash, square_crop

_NATURE = "usr/share/backgrounds/mate/nature"
_PLASMA = "usr/share/wallpapers/{}/contents/images/2560x1600.jpg"
_OPENCV = "usr/share/doc/opencv-doc/examples"
PHOTOS = {  # Debian package -> photographs in it (paths inside the package)
    "mate-backgrounds": [f"{_NATURE}/{n}.jpg" for n in (
        "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm",
        "TwoWings", "Wood", "YellowFlower")],
    "plasma-workspace-wallpapers": [_PLASMA.format(n) for n in (
        "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "Kite",
        "OneStandsOut", "Path", "summer_1am")],
    "opencv-doc": [f"{_OPENCV}/data/{n}" for n in (
        "aero1.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "board.jpg", "building.jpg", "butterfly.jpg",
        "fruits.jpg", "home.jpg", "leuvenA.jpg", "messi5.jpg", "orange.jpg", "squirrel_cls.jpg",
        "licenseplate_motion.jpg", "ela_original.jpg", "basketball1.png", "graf1.png", "box_in_scene.png",
        "chicky_512.png", "rubberwhale1.png")] + [f"{_OPENCV}/{p}" for p in (
        "alphamat/input_images/plant.jpg", "hfs/data/000.jpg", "reg/home.png")] + [
        f"{_OPENCV}/text/scenetext0{i}.jpg" for i in range(1, 7)],
}


def sklearn_photos() -> list[Path]:
    """china.jpg and flower.jpg (427x640), inside every scikit-learn install."""
    import sklearn.datasets

    return sorted((Path(sklearn.datasets.__file__).parent / "images").glob("*.jpg"))


def photo_paths(cache: str | Path | None = None) -> list[Path]:
    """Every listed photograph, fetching the Debian packages into `cache` the first time."""
    cache = Path(cache or os.environ.get("PARIS_PHOTOS_CACHE", Path.home() / ".cache" / "paris-assets" / "photos"))
    found = []
    for package, paths in PHOTOS.items():
        root = cache / package
        if not all((root / p).exists() for p in paths):
            _unpack(package, root)
        missing = [p for p in paths if not (root / p).exists()]
        if missing:
            raise FileNotFoundError(f"{package} has no {missing[0]}: the package changed; update PHOTOS in {__file__}")
        found += [root / p for p in paths]
    return found + sklearn_photos()


def _unpack(package: str, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["apt-get", "download", package], cwd=tmp, check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", b"") or str(exc).encode()
            raise RuntimeError(f"could not fetch the Debian package {package} ({detail.decode(errors='replace')[-300:]}); "
                               "run `apt-get update` first, or set PARIS_PHOTOS_CACHE to a folder that has it "
                               "unpacked") from None
        deb = next(Path(tmp).glob("*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)


def load_photo(path: Path, longest: int = 1600) -> Image.Image:
    """The upright RGB photograph, no longer than `longest` px (the 5K wallpapers are decoded at reduced size)."""
    data = path.read_bytes()
    image = decode_image(data, 200_000_000, draft_size=longest).image
    if max(image.size) > longest:
        image.thumbnail((longest, longest), Image.LANCZOS)
    return image


def laion_like(photos: list[Image.Image], n: int, seed: int = 0) -> list[bytes]:
    """n JPEGs shaped like LAION's: a random window (50-100 % of each side) of a photograph, longest side
    400-1200 px (mean ~0.5 MP), quality 75-95, 4:2:0 as most web encoders write. Same (photos, n, seed),
    same bytes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = (int(s * f) for s, f in zip((w, h), rng.uniform(0.5, 1.0, 2)))
        if max(cw, ch) > 3 * min(cw, ch):
            cw = ch = min(cw, ch)
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        longest = int(rng.integers(400, 1201))
        scale = longest / max(cw, ch)
        size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
        window = photo.resize(size, Image.LANCZOS, box=(left, top, left + cw, top + ch), reducing_gap=3.0)
        buf = io.BytesIO()
        window.save(buf, "JPEG", quality=int(rng.integers(75, 96)))
        out.append(buf.getvalue())
    return out


def radius_table(photos: list[Image.Image], radii=range(13)) -> tuple[list[dict], dict]:
    """Per radius: recall (share of recipe copies within radius of their own original) per recipe family and
    overall, and the false-positive rate (share of pairs of different photographs within radius, counting
    originals and copies alike). Hashes come from the filter's own path (decode_image, image_phash)."""
    hashes, centre_hashes, owner, recipe_of = [], [], [], []
    for k, photo in enumerate(photos):
        buf = io.BytesIO()
        photo.save(buf, "JPEG", quality=90)
        for recipe, data in [("", buf.getvalue())] + [(r.name, apply_recipe(photo, r)) for r in NEAR_COPY_RECIPES]:
            pixels = decode_image(data, 200_000_000, draft_size=256).pixels
            hashes.append(image_phash(pixels))
            centre_hashes.append(image_phash(square_crop(pixels, 256)))  # what filtered_images hashed before
            owner.append(k)
            recipe_of.append(recipe)
    h, centre = np.array(hashes, np.uint64), np.array(centre_hashes, np.uint64)
    owner, recipe_of = np.array(owner), np.array(recipe_of)
    dist = np.bitwise_count(h[:, None] ^ h[None, :])
    is_copy = recipe_of != ""
    first = np.searchsorted(owner, owner)  # each photo's original sits first in its block
    copy_dist = dist[np.arange(len(h)), first][is_copy]
    copy_family = np.array([r.split("_")[0] for r in recipe_of[is_copy]])
    centre_dist = np.bitwise_count(centre ^ centre[first])[is_copy]
    upper = np.triu(np.ones_like(dist, bool), 1)
    different = upper & (owner[:, None] != owner[None, :])
    originals = different & ~is_copy[:, None] & ~is_copy[None, :]
    rows = []
    for r in radii:
        row = {"radius": r, "recall": float(np.mean(copy_dist <= r))}
        for family in dict.fromkeys(copy_family):
            row[f"recall_{family}"] = float(np.mean(copy_dist[copy_family == family] <= r))
        row["centre_crop_recall_crop"] = float(np.mean(centre_dist[copy_family == "crop"] <= r))
        row["fpr_all"] = float(np.mean(dist[different] <= r))
        row["fpr_originals"] = float(np.mean(dist[originals] <= r))
        rows.append(row)
    sizes = {"photos": len(photos), "copies": int(is_copy.sum()), "pairs_all": int(different.sum()),
             "pairs_originals": int(originals.sum()), "closest_different": int(dist[different].min())}
    per_recipe = {name: np.sort(dist[np.arange(len(h)), first][recipe_of == name]).tolist()
                  for name in dict.fromkeys(recipe_of[is_copy])}
    sizes["per_recipe_distances"] = per_recipe
    return rows, sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default=None, help="where the Debian packages are unpacked")
    parser.add_argument("--longest", type=int, default=1024, help="longest side of each original")
    args = parser.parse_args(argv)
    photos = [load_photo(p, args.longest) for p in photo_paths(args.cache)]
    rows, sizes = radius_table(photos)
    families = [k for k in rows[0] if k.startswith("recall_")]
    print(f"{sizes['photos']} photographs, {sizes['copies']} recipe copies; pairs of different photographs: "
          f"{sizes['pairs_originals']:,} originals only, {sizes['pairs_all']:,} with the copies; the closest two are "
          f"{sizes['closest_different']} bits apart")
    print("| radius | recall | " + " | ".join(f"recall, {f[7:]}" for f in families)
          + " | recall, crop, centre-crop hash (before) | false positives (originals) | false positives (all pairs) |")
    print("|---" * (5 + len(families)) + "|")
    for row in rows:
        print(f"| {row['radius']} | {row['recall']:.3f} | " + " | ".join(f"{row[f]:.3f}" for f in families)
              + f" | {row['centre_crop_recall_crop']:.3f} | {row['fpr_originals']:.4f} | {row['fpr_all']:.4f} |")
    for name, dists in sizes["per_recipe_distances"].items():
        print(f"{name}: distances {dists}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
