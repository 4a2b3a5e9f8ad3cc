"""Check a downloaded or exported copy of the expert shards against what was recorded when they were written:

    python -m paris_assets.verify DIR

DIR is a data_dir (expert_shards/cluster_<k>/, heldout/shards/ and pipeline_manifest.json) or an export folder
(data/train/cluster_<k>/, data/heldout/ and stats.json, python -m paris_assets.export). Every .tar under the shard
folders is hashed and compared with the sha256 the manifest (or stats.json's `verification`) lists, and each
expert's (and the held-out set's) Merkle root is computed from the files found and compared with the recorded root
(lib/outputs/merkle.py says how it is built). One line per changed, missing or extra shard.

Exit status: 0 every shard and root matches; 1 a shard changed, missing or extra (or a recorded root the listed
digests do not give); 2 DIR is not a data_dir or an export this can read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .lib.outputs.merkle import file_sha256, shards_root
from .lib.outputs.shards import SHARD_FOLDERS, listed_shards
from .lib.outputs.stats import FORMAT


class NotAnOutput(ValueError):
    """DIR holds neither a pipeline_manifest.json nor an export's stats.json with shard digests."""


@dataclass
class Reference:
    """What DIR promises: every shard (path relative to DIR -> split, bytes, sha256), the roots recorded per split
    (cluster number or 'heldout'; empty when none were recorded) and the folders the shards live under."""
    kind: str  # "data_dir" or "export"
    shards: dict[str, tuple[str, int, str]]
    roots: dict[str, str]
    folders: tuple[str, ...]
    splits: list[str]


@dataclass
class Finding:
    kind: str  # "changed", "missing", "extra", "root"
    path: str
    split: str
    detail: str = ""

    def line(self) -> str:
        where = "held-out set" if self.split == "heldout" else f"cluster {self.split}"
        return f"{self.kind:<8} {self.path}  ({where}){': ' + self.detail if self.detail else ''}"


def read_reference(root: Path) -> Reference:
    """The manifest of a data_dir, or the `verification` of an export's stats.json; NotAnOutput otherwise."""
    if (root / "pipeline_manifest.json").is_file():
        manifest = _json(root / "pipeline_manifest.json")
        if not {"clusters", "heldout"} <= set(manifest):
            raise NotAnOutput(f"{root / 'pipeline_manifest.json'} lists no shards (no clusters / heldout)")
        shards = {e["path"]: (split, int(e["bytes"]), e["sha256"]) for split, e in listed_shards(manifest)}
        recorded = manifest.get("merkle_roots") or {}
        roots = {**recorded.get("clusters", {}), **({"heldout": recorded["heldout"]} if recorded else {})}
        splits = sorted(manifest["clusters"], key=int) + ["heldout"]
        return Reference("data_dir", shards, roots, SHARD_FOLDERS, splits)
    if (root / "stats.json").is_file():
        stats = _json(root / "stats.json")
        if stats.get("format") != FORMAT:
            raise NotAnOutput(f"{root / 'stats.json'} is not a paris-assets export's (format {stats.get('format')!r})")
        if "verification" not in stats:
            raise NotAnOutput(f"{root / 'stats.json'} lists no shard digests (exported by an older version): export "
                              "again with python -m paris_assets.export")
        v = stats["verification"]
        shards = {e["path"]: (e["split"], int(e["bytes"]), e["sha256"]) for e in v["shards"]}
        roots = {**v["roots"]["clusters"], "heldout": v["roots"]["heldout"]}
        return Reference("export", shards, roots, ("data",), [*v["roots"]["clusters"], "heldout"])
    raise NotAnOutput(f"{root} holds neither pipeline_manifest.json (a data_dir) nor stats.json (an export)")


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise NotAnOutput(f"cannot read {path}: {exc}") from None
    if not isinstance(value, dict):
        raise NotAnOutput(f"{path} is not a JSON object")
    return value


def split_of(path: str) -> str:
    """The split a shard's path puts it in: 'heldout', or k for a cluster_<k> folder ('?' for neither)."""
    parts = Path(path).parts
    clusters = [p.removeprefix("cluster_") for p in parts if p.startswith("cluster_")]
    return clusters[0] if clusters else "heldout" if "heldout" in parts else "?"


def shards_on_disk(root: Path, folders: tuple[str, ...]) -> list[str]:
    """Every .tar under the shard folders, as a path relative to root."""
    return sorted(p.relative_to(root).as_posix() for folder in folders if (root / folder).is_dir()
                  for p in (root / folder).rglob("*.tar") if p.is_file())


def verify(root: Path, log=print) -> tuple[list[Finding], dict]:
    """Compare DIR with its reference. Returns the findings (empty: all match) and a summary: the kind, the
    shards and bytes checked, each split's root computed from the files found and the root recorded."""
    ref = read_reference(root)
    found = shards_on_disk(root, ref.folders)
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # hashlib releases the GIL on large reads
        digests = dict(zip(found, pool.map(lambda rel: file_sha256(root / rel), found)))
    findings = []
    for path, (split, size, sha) in ref.shards.items():
        if path not in digests:
            findings.append(Finding("missing", path, split))
        elif digests[path] != sha:
            actual = (root / path).stat().st_size
            findings.append(Finding("changed", path, split, f"sha256 {digests[path]}, recorded {sha}"
                                    + (f"; {actual:,} bytes, recorded {size:,}" if actual != size else "")))
    findings += [Finding("extra", path, split_of(path), "not in the " + _source(ref))
                 for path in found if path not in ref.shards]
    roots = {}
    for split in ref.splits:
        listed = [{"path": p, "sha256": sha} for p, (s, _, sha) in ref.shards.items() if s == split]
        on_disk = [{"path": p, "sha256": d} for p, d in digests.items()
                   if (ref.shards[p][0] if p in ref.shards else split_of(p)) == split]
        recorded = ref.roots.get(split)
        if recorded is not None and shards_root(listed) != recorded:
            findings.append(Finding("root", _source(ref), split, f"the listed sha256s give {shards_root(listed)}, "
                                    f"the recorded root is {recorded}: the {_source(ref)} was edited"))
        roots[split] = {"found": shards_root(on_disk), "recorded": recorded or shards_root(listed),
                        "shards": len(on_disk)}
    summary = {"kind": ref.kind, "shards": len(found), "bytes": sum((root / p).stat().st_size for p in found),
               "roots": roots, "recorded_roots": bool(ref.roots)}
    return findings, summary


def _source(ref: Reference) -> str:
    return "pipeline_manifest.json" if ref.kind == "data_dir" else "stats.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paris_assets.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="a data_dir or an export folder")
    args = parser.parse_args(argv)
    try:
        findings, summary = verify(args.dir)
    except NotAnOutput as exc:
        print(f"verify: not an output: {exc}", file=sys.stderr)
        return 2
    for split, r in summary["roots"].items():
        where = "held-out set" if split == "heldout" else f"cluster {split}"
        state = "matches" if r["found"] == r["recorded"] else f"DIFFERS from the recorded {r['recorded']}"
        print(f"{where}: {r['shards']} shard{'' if r['shards'] == 1 else 's'}, Merkle root {r['found']} {state}")
    if not summary["recorded_roots"]:
        print("(no Merkle roots recorded: an older manifest; checked against its sha256 list)")
    for finding in findings:
        print(finding.line())
    counts = {kind: sum(f.kind == kind for f in findings) for kind in ("changed", "missing", "extra")}
    if findings:
        print(f"FAILED: {counts['changed']} changed, {counts['missing']} missing, {counts['extra']} extra shards in "
              f"{args.dir} ({summary['kind']})")
        return 1
    print(f"ok: {summary['shards']} shards ({summary['bytes'] / 1e6:,.1f} MB) in {args.dir} ({summary['kind']}) match "
          "every recorded sha256 and Merkle root")
    return 0


if __name__ == "__main__":
    sys.exit(main())
