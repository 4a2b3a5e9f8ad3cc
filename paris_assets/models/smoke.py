"""One image and one prompt through each model role: what a GPU machine runs after `make models`.

    python -m paris_assets.models.smoke --profile paris [--device cuda] [--dtype float16]
    python -m paris_assets.models.smoke --profile tiny --data-dir /tmp/smoke   # anywhere, offline

Prints, per role, the model, its resolved commit, device, dtype, output shapes and dtypes, and seconds to load and
to run. Exits 1 with the loader's message when a model is missing.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from ..settings import Settings, load_settings, parse_settings
from .common import ModelNotAvailable, dtype_name
from .profiles import build_model
from .tiny import ROLES

PROMPT = "a lighthouse on a cliff above a calm sea at sunset"


def smoke_settings(profile: str | None = None, device: str | None = None, dtype: str | None = None,
                   data_dir: str | None = None) -> Settings:
    """The settings file's values (PARIS_CONFIG or paris.yaml), with the command line's overrides."""
    base = load_settings()
    raw = base.as_dict()
    raw["models"].update({k: v for k, v in {"profile": profile, "device": device, "dtype": dtype}.items() if v})
    if data_dir:
        raw["data_dir"] = data_dir
    return parse_settings(raw, base_dir=base.base_dir)


def smoke_image(size: int) -> np.ndarray:
    """One drawn (1, size, size, 3) uint8 picture, the shape every stage gets from filtered_images."""
    from ..lib.demo.images import THEMES, draw_theme

    return draw_theme(THEMES[0], size, size, np.random.default_rng(0))[None]


def describe(output) -> str:
    if isinstance(output, tuple):
        return ", ".join(describe(o) for o in output)
    if isinstance(output, list):
        return f"{len(output)} caption(s) {output!r}"
    return f"{tuple(output.shape)} {output.dtype}"


def smoke_role(settings: Settings, role: str) -> dict:
    """Load `role`, run it once; returns what was printed as a dict."""
    started = time.perf_counter()
    model = build_model(settings, role).load()
    loaded = time.perf_counter()
    data = [PROMPT] if role == "text_encoder" else smoke_image(settings.filter.image_size)
    output = model(data)
    ran = time.perf_counter()
    return {"role": role, "model_id": model.ref.model_id, "revision": model.revision, "device": str(model.device),
            "dtype": dtype_name(model.dtype), "output": describe(output), "load_s": round(loaded - started, 2),
            "run_s": round(ran - loaded, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("paris", "tiny"), help="default: the settings file's")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: the settings file's)")
    parser.add_argument("--dtype", choices=("auto", "float16", "bfloat16", "float32"))
    parser.add_argument("--data-dir", help="where the tiny profile builds its models (default: the settings')")
    parser.add_argument("--roles", nargs="+", choices=ROLES, default=list(ROLES))
    args = parser.parse_args(argv)
    settings = smoke_settings(args.profile, args.device, args.dtype, args.data_dir)
    for role in args.roles:
        try:
            row = smoke_role(settings, role)
        except ModelNotAvailable as exc:
            print(f"smoke: {exc}", file=sys.stderr)
            return 1
        print(f"{row['role']:<15} {row['model_id']} @ {row['revision']}  {row['device']} {row['dtype']}  "
              f"-> {row['output']}  load {row['load_s']} s, run {row['run_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
