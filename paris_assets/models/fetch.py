"""`make models`: fetch the weights the settings name (the paris profile by default) into the Hugging Face
cache at their pinned commits, then run the smoke test on each role.

    HF_HUB_OFFLINE=0 python -m paris_assets.models.fetch [--no-smoke] [--device cuda] [--dtype float16]

Only safetensors weights, configs, tokenizer and processor files are fetched (FETCH_PATTERNS). Each role's
commit is printed; a revision that is not a commit (an override without one) is resolved and printed, to be
pinned as `models.<role>_revision`. Offline, or with the hub out of reach, it stops with a message that says so.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..settings import Settings
from .common import COMMIT, FETCH_PATTERNS, ModelRef
from .smoke import main as smoke_main, smoke_settings
from .tiny import ROLES


class HubUnreachable(RuntimeError):
    """The hub cannot be asked; the message says what to do."""


def hub_refs(settings: Settings) -> dict[str, ModelRef]:
    """role -> the hub model it loads (local folders need no fetching)."""
    from .profiles import model_ref

    refs = {role: model_ref(settings, role) for role in ROLES}
    return {role: ref for role, ref in refs.items() if not os.path.isdir(ref.model_id)}


def fetch(ref: ModelRef) -> str:
    """Download `ref` into the HF cache; returns the commit fetched."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(ref.model_id, revision=ref.revision, allow_patterns=list(FETCH_PATTERNS))
    except Exception as exc:  # the hub client raises a different class per failure; all of them stop here
        raise HubUnreachable(f"cannot fetch {ref.model_id}@{ref.revision or 'main'} from "
                             f"{os.environ.get('HF_ENDPOINT', 'https://huggingface.co')}: {type(exc).__name__}: {exc}. "
                             "Run `make models` on a machine that reaches the hub, then copy its HF_HOME here") from None
    commit = os.path.basename(os.path.normpath(folder))
    if ref.revision and COMMIT.match(ref.revision) and commit != ref.revision:
        raise HubUnreachable(f"{ref.model_id}: asked for commit {ref.revision}, got {commit}")
    return commit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("paris",), default="paris")
    parser.add_argument("--device")
    parser.add_argument("--dtype", choices=("auto", "float16", "bfloat16", "float32"))
    parser.add_argument("--no-smoke", action="store_true", help="fetch only")
    args = parser.parse_args(argv)
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        print("models: HF_HUB_OFFLINE is set: fetching needs the hub. Run `HF_HUB_OFFLINE=0 make models` on a "
              "machine with network (the Makefile does), or copy a filled HF_HOME here.", file=sys.stderr)
        return 2
    settings = smoke_settings(args.profile, args.device, args.dtype)
    try:
        for role, ref in hub_refs(settings).items():
            commit = fetch(ref)
            pin = "" if ref.revision == commit else f"   (not pinned: set models.{role}_revision: {commit})"
            print(f"{role:<15} {ref.model_id} @ {commit}{pin}", flush=True)
    except HubUnreachable as exc:
        print(f"models: {exc}", file=sys.stderr)
        return 1
    if args.no_smoke:
        return 0
    return smoke_main(["--profile", args.profile] + (["--device", args.device] if args.device else [])
                      + (["--dtype", args.dtype] if args.dtype else []))


if __name__ == "__main__":
    sys.exit(main())
