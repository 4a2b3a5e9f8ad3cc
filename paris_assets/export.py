"""Export the committed training outputs as a Hugging Face dataset folder:

    python -m paris_assets.export --output DIR [--config paris.yaml] [--data-dir URL] [--license other] [--force]

DIR gets data/train/cluster_<k>/shard-NNNNNN.tar (the expert shards), data/heldout/shard-NNNNNN.tar (the held-out
split), a dataset card README.md whose YAML front matter the Hub reads (one config for every cluster together,
one per cluster) and stats.json (the card's numbers, machine-readable). Shards are hard-linked from the data_dir
when it is on the same local filesystem, else copied (from an object store, each file's sha256 checked against
pipeline_manifest.json on the way). The folder is built in DIR.tmp-<pid>-<id> beside DIR and renamed into place
last, so an error, or a kill, never leaves a half-made DIR.

What a sample holds (members, shapes, dtypes, json fields) is read from the shards, never from a list kept here,
so a member or json field added upstream shows up in the card by itself.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from upath import UPath

from .lib.samples import decode_member, member_type
from .lib.shards import listed_shards
from .lib.storage import (
    IncompleteOutput,
    folder_files,
    is_local,
    local_path,
    open_folder,
    require_settled,
    root_upath,
)
from .lib.tars import iter_members
from .settings import SettingsError, load_settings

FORMAT = "paris-assets-export"
VERSION = 1
DUPLICATE_TABLES = ("duplicates", "dropped")  # cluster_labels' tables of images dropped at the fan-in, if present
FIELD_NOTES = {  # one line per json field this project writes; a field it does not know is listed without one
    "image_id": "stable id of the image (also the sample's key)", "url": "where the image was downloaded from",
    "alt_text": "the alt text of the source", "caption": "the caption the expert conditions on (same as txt)",
    "aesthetic": "aesthetic score (LAION scale)", "punsafe": "probability the image is unsafe (NSFW)",
    "width": "original width in pixels", "height": "original height in pixels",
    "cluster": "the DINOv2 cluster, i.e. the expert that trains on it",
    "centroid_distance": "cosine distance to its cluster's centroid", "phash": "perceptual hash of the whole image",
}
MEMBER_NOTES = {"latent.npy": "VAE latent (the diffusion target), scaled by the VAE's scaling_factor",
                "clip.npy": "pooled CLIP text embedding (what the router reads)",
                "clip_tokens.npy": "CLIP per-token text states (what the experts condition on)",
                "txt": "the caption", "json": "provenance and scores (fields below)", "jpg": "the square crop"}


WITHHELD = "<withheld>"
SECRET_SETTINGS = ("webhook_url", "password", "secret", "credentials")  # a key containing one of these is withheld


class ExportRefused(RuntimeError):
    """The data_dir lacks a committed output the export needs, or DIR may not be written."""


def read_committed(data_root: str) -> tuple[dict, list[tuple[str, str, UPath, dict]]]:
    """pipeline_manifest.json and every shard it lists as (split, path in the export, source, manifest entry),
    after checking that expert_shards and heldout are committed and hold exactly those shards."""
    root = root_upath(data_root)
    missing = [name for name in ("expert_shards", "heldout") if not _committed(data_root, name)]
    manifest_path = root / "pipeline_manifest.json"
    if not manifest_path.exists():
        missing.append("pipeline_manifest.json")
    if missing:
        raise ExportRefused(f"cannot export {root}: no committed {', '.join(missing)}. Materialise expert_shards "
                            "(it writes expert_shards/, heldout/ and pipeline_manifest.json): `make demo`, or "
                            "`dagster asset materialize -m paris_assets.definitions --select '*expert_shards'`")
    try:
        require_settled(data_root, "expert_shards", "heldout")
    except IncompleteOutput as exc:
        raise ExportRefused(str(exc)) from None
    manifest = json.loads(manifest_path.read_text())
    lacking = [key for key in ("k", "clusters", "heldout", "heldout_split") if key not in manifest]
    if lacking:
        raise ExportRefused(f"{manifest_path} has no {', '.join(lacking)} (an older version wrote it): materialise "
                            "expert_shards again")
    folders = {name: open_folder(data_root, name) for name in ("expert_shards", "heldout")}
    promised = {f"{name}/{rel}": size for name, folder in folders.items()
                for rel, size in folder_files(folder).items() if rel.endswith(".tar")}
    files = []
    for split, entry in listed_shards(manifest):
        under, _, rel = entry["path"].partition("/")
        name = Path(rel).name
        dest = f"data/heldout/{name}" if split == "heldout" else f"data/train/cluster_{split}/{name}"
        files.append((split, dest, folders[under] / rel, entry))
    listed = {entry["path"]: entry["bytes"] for _, _, _, entry in files}
    if listed != promised:
        raise ExportRefused(f"pipeline_manifest.json under {root} does not describe the committed shards (it lists "
                            f"{len(listed)}, the folders hold {len(promised)}, or their sizes differ): a run was "
                            "killed between them; materialise expert_shards again")
    return manifest, files


def _committed(data_root: str, name: str) -> bool:
    try:
        open_folder(data_root, name)
    except IncompleteOutput:
        return False
    return True


def place_files(files: list[tuple[str, str, UPath, dict]], staged: Path, data_root: str, log=print) -> str:
    """Hard-link (same local filesystem) or copy every shard into `staged`; returns "hard-linked", "copied" or
    "hard-linked and copied". Every copy is checked against the manifest's sha256 as it streams (a hard link is
    the committed file itself: its size was checked against the manifest)."""
    how = set()
    for i, (_, dest, source, entry) in enumerate(files):
        target = staged / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        if is_local(data_root):
            try:
                os.link(source.path, target)  # a later re-materialisation renames new files in: these stay intact
                how.add("hard-linked")
                continue
            except OSError:  # another filesystem (EXDEV), or links not allowed: copy
                pass
        digest = hashlib.sha256()
        with source.open("rb") as src, open(target, "wb") as out:
            for block in iter(lambda: src.read(8 << 20), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != entry["sha256"]:
            raise ExportRefused(f"{source} does not match its sha256 in pipeline_manifest.json: the shard changed "
                                "after it was written; materialise expert_shards again")
        how.add("copied")
        if (i + 1) % 1000 == 0:
            log(f"export: {i + 1:,}/{len(files):,} shards placed")
    return " and ".join(sorted(how, reverse=True)) or "nothing to place"


def describe_sample(shard: Path) -> dict:
    """The members of the shard's first sample (kind, shape, dtype, image size) and the json fields over the
    whole shard (field -> sorted type names: a field null in some samples reads e.g. ["float", "null"])."""
    members: dict[str, dict] = {}
    key = None
    fields: dict[str, set] = {}
    with open(shard, "rb") as fh:
        for name, _, stream in iter_members(fh):
            sample, _, member = name.rpartition("/")[2].partition(".")
            key = key or sample
            if sample == key:
                data = stream.read()
                members[member] = _describe_member(member, data)
            elif member_type(member) == "json":
                data = stream.read()
            else:
                continue  # the arrays and images of later samples are skipped, not read
            if member_type(member) == "json":
                for field, value in json.loads(data).items():
                    fields.setdefault(field, set()).add(_type_name(value))
    return {"key": key, "members": members, "json_fields": {f: sorted(t) for f, t in fields.items()}}


def _describe_member(member: str, data: bytes) -> dict:
    value = decode_member(member, data)
    kind = member_type(member)
    if isinstance(value, np.ndarray):
        return {"kind": kind, "shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, dict):
        return {"kind": kind}  # its fields are described over the whole shard
    if isinstance(value, str):
        return {"kind": kind, "dtype": "utf-8 text"}
    return {"kind": kind, "size": list(value.size), "mode": value.mode}  # an image


def _type_name(value) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object",
            type(None): "null"}.get(type(value), type(value).__name__)


def reason_counts(data_root: str) -> dict[str, dict[str, int]]:
    """Images left out before the shards, by reason: filtered_images' rejected table (every part of it with
    partitions) and cluster_labels' duplicates / dropped tables when they exist."""
    counts = {"filtered_images": _reasons(_asset_parts(data_root, "filtered_images"), "rejected")}
    labels = _asset_parts(data_root, "cluster_labels")
    for table in DUPLICATE_TABLES:
        if any((folder / f"{table}.parquet").exists() for folder in labels):  # present, even empty: say 0
            counts[f"cluster_labels_{table}"] = _reasons(labels, table)
    return counts


def _asset_parts(data_root: str, name: str) -> list[UPath]:
    """The committed folder of an asset, or the committed folders of its parts (`<name>/rows-.../`)."""
    try:
        return [open_folder(data_root, name)]
    except IncompleteOutput:
        base = root_upath(data_root) / name
        parts = sorted(p.name for p in base.iterdir() if p.name.startswith("rows-")) if base.exists() else []
        folders = [open_folder(data_root, f"{name}/{p}") for p in parts if _committed(data_root, f"{name}/{p}")]
        if not folders:
            raise ExportRefused(f"no committed {name} under {root_upath(data_root)}: materialise it (and the graph "
                                "after it) first") from None
        return folders


def _reasons(folders: list[UPath], table: str) -> dict[str, int]:
    total: Counter = Counter()
    for folder in folders:
        path = folder / f"{table}.parquet"
        if path.exists():
            with path.open("rb") as fh:
                total.update(pd.read_parquet(fh, columns=["reason"])["reason"].astype(str).tolist())
    return dict(total.most_common())


def read_report(data_root: str, manifest: dict) -> dict:
    """cluster_report/report.json, refused when it describes another clustering than the shards were made from."""
    try:
        folder = open_folder(data_root, "cluster_report")
    except IncompleteOutput:
        raise ExportRefused(f"no committed cluster_report under {root_upath(data_root)}: materialise cluster_report, "
                            "then expert_shards") from None
    report = json.loads((folder / "report.json").read_text())
    sizes = [manifest["heldout_split"]["per_cluster"][str(c)]["size"] for c in range(int(manifest["k"]))]
    if list(report["sizes"]) != sizes:
        raise ExportRefused(f"cluster_report (sizes {report['sizes']}) describes another clustering than the shards "
                            f"(sizes {sizes}): materialise cluster_labels+ so the report and the shards agree")
    report["run_id"] = json.loads((folder / "_SUCCESS.json").read_text()).get("run_id")
    return report


def collect_stats(manifest: dict, report: dict, reasons: dict, sample: dict,
                  files: list[tuple[str, str, UPath, dict]], license_id: str) -> dict:
    """Everything the card says, as one JSON-able dict (written as stats.json)."""
    k = int(manifest["k"])
    split = manifest["heldout_split"]
    clusters = {}
    for c in range(k):
        shards = [e for s, _, _, e in files if s == str(c)]
        terms = report["top_terms"][c] if c < len(report.get("top_terms", [])) else []
        clusters[str(c)] = {
            "name": " / ".join(terms[:3]) or f"cluster {c}", "top_terms": terms,
            "train_samples": sum(e["samples"] for e in shards), "shards": len(shards),
            "bytes": sum(e["bytes"] for e in shards), "heldout_samples": split["per_cluster"][str(c)]["heldout"],
            "images": report["sizes"][c], "fraction": report["fractions"][c],
            "silhouette": report["silhouette_per_cluster"][c], "intra_cosine": report["intra_cosine"][c]}
    splits = {name: {"samples": sum(e["samples"] for s, _, _, e in files if (s == "heldout") == (name == "heldout")),
                     "shards": sum(1 for s, *_ in files if (s == "heldout") == (name == "heldout")),
                     "bytes": sum(e["bytes"] for s, _, _, e in files if (s == "heldout") == (name == "heldout"))}
              for name in ("train", "heldout")}
    return {
        "format": FORMAT, "version": VERSION, "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "manifest_created": manifest.get("created"), "license": license_id, "k": k, "splits": splits,
        "clusters": clusters,
        "clustering": {key: report.get(key) for key in ("silhouette", "davies_bouldin", "largest_fraction",
                                                        "empty_clusters", "n", "sample_size")}
                      | {"cluster_report_run": report.get("run_id")},
        "heldout": {key: split.get(key) for key in ("rule", "heldout", "images", "rate", "worst_cluster",
                                                    "worst_deviation_images", "worst_deviation_share")}
                   | {"per_cluster": split["per_cluster"]},
        "left_out": reasons, "counts": manifest.get("counts", {}), "gate": manifest.get("gate", {}),
        "models": manifest.get("models", {}), "settings": public_settings(manifest.get("settings", {})),
        "sample": sample,
    }


def public_settings(value, key: str = ""):
    """The settings as the card may publish them: a value under a secret-looking key (alerts.webhook_url: a Slack
    webhook URL lets anyone post) and the user:password part of any URL are withheld."""
    if isinstance(value, dict):
        return {k: public_settings(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [public_settings(v, key) for v in value]
    if value is not None and any(word in key.lower() for word in SECRET_SETTINGS):
        return WITHHELD
    if isinstance(value, str) and "://" in value and "@" in value.partition("://")[2].partition("/")[0]:
        scheme, _, rest = value.partition("://")
        return f"{scheme}://{WITHHELD}@{rest.partition('@')[2]}"
    return value


def size_category(n: int) -> str:
    """The Hub's size_categories bucket for n samples."""
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")):
        if n < bound:
            return label
    return "1B<n<10B"


JSON_VALUES = {"float": "float64", "int": "int64", "bool": "bool", "string": "string"}


def hub_features(sample: dict) -> dict | None:
    """The card's `dataset_info` features for the members describe_sample found, as `datasets` writes them: declared,
    so that a json field null in the first samples and set later still loads (datasets infers the types from the
    first five samples otherwise, and then fails on the first non-null value). None when a member or field has a
    type this cannot declare (a json list or object, a field never seen set): datasets then infers them as it would."""
    import datasets  # heavy (pyarrow, fsspec hooks): only the card needs it

    fields = {}
    for field, types in sample["json_fields"].items():
        seen = {t for t in types if t != "null"}
        if seen == {"int", "float"}:
            seen = {"float"}
        if len(seen) != 1 or next(iter(seen)) not in JSON_VALUES:
            return None
        fields[field] = datasets.Value(JSON_VALUES[next(iter(seen))])
    features = {}
    for name, member in sample["members"].items():
        if member["kind"] == "npy":
            feature = datasets.Value(member["dtype"])
            for _ in member["shape"]:
                feature = datasets.List(feature)
            features[name] = feature
        elif member["kind"] == "json":
            features[name] = fields
        elif "size" in member:
            features[name] = datasets.Image()
        else:
            features[name] = datasets.Value("string")
    features |= {"__key__": datasets.Value("string"), "__url__": datasets.Value("string")}
    return datasets.DatasetInfo(features=datasets.Features(features))._to_yaml_dict()


def card_metadata(stats: dict) -> dict:
    """The card's YAML front matter: license, task, tags, size, and the configs the Hub (and load_dataset with a
    folder or repo) reads: `default` with the train and heldout splits, `cluster_<k>` with one expert's shards."""
    meta = {"license": stats["license"]}
    if stats["license"] == "other":
        meta["license_name"] = "unspecified"
    meta |= {
        "pretty_name": f"paris-assets expert shards (K={stats['k']})",
        "task_categories": ["text-to-image"],
        "tags": ["webdataset", "diffusion", "decentralized-diffusion", "paris", "dinov2", "clustering", "latents"],
        "size_categories": [size_category(stats["splits"]["train"]["samples"] + stats["splits"]["heldout"]["samples"])],
        "configs": [{"config_name": "default", "default": True, "data_files": [
            {"split": "train", "path": "data/train/cluster_*/*.tar"},
            {"split": "heldout", "path": "data/heldout/*.tar"}]}]
        + [{"config_name": f"cluster_{c}", "data_files": [{"split": "train", "path": f"data/train/cluster_{c}/*.tar"}]}
           for c in stats["clusters"]],
    }
    features = hub_features(stats["sample"])
    if features is not None:  # the same members in every config
        meta["dataset_info"] = [{"config_name": c["config_name"], **copy.deepcopy(features)}  # no YAML anchors
                                for c in meta["configs"]]
    return meta


def render_card(stats: dict) -> str:
    """README.md: the front matter, then what the data is, what a sample holds, how it was made, how to load it."""
    front = yaml.safe_dump(card_metadata(stats), sort_keys=False, allow_unicode=True).rstrip()
    sections = [_overview(stats), _clusters(stats), _sample(stats), _left_out(stats), _heldout(stats), _gate(stats),
                _provenance(stats), LOADING, _license(stats)]
    return f"---\n{front}\n---\n\n" + "\n\n".join(sections) + "\n"


def _table(header: list[str], rows: list[list], align: str = "") -> str:
    """A Markdown table; `align` holds one letter per column, r for right-aligned (numbers)."""
    rule = ["---:" if a == "r" else "---" for a in align.ljust(len(header), "l")]
    return "\n".join("| " + " | ".join(str(c) for c in row) + " |" for row in [header, rule, *rows])


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f}"


def _num(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _overview(s: dict) -> str:
    splits = [[name, f"`{glob}`", f"{s['splits'][name]['shards']:,}", f"{s['splits'][name]['samples']:,}",
               _mb(s["splits"][name]["bytes"])]
              for name, glob in (("train", "data/train/cluster_*/*.tar"), ("heldout", "data/heldout/*.tar"))]
    return (f"# paris-assets expert shards (K={s['k']})\n\n"
            "Image-text data prepared by paris-assets for decentralised diffusion the way Paris does "
            f"([arXiv 2510.03434](https://arxiv.org/abs/2510.03434)): the images were clustered on their DINOv2 "
            f"features into K={s['k']} clusters, and expert k trains on cluster k alone (config `cluster_<k>`); a "
            "router learns to pick experts. Every sample carries its VAE latent and CLIP text conditioning, so experts "
            f"train without running those models. Pipeline run of {s['manifest_created']}, exported {s['exported']}."
            "\n\n" + _table(["split", "files", "shards", "samples", "MB"], splits, "llrrr") + "\n\n"
            "The held-out images are in no expert's shards (nor in the router's training arrays): evaluate on them.")


def _clusters(s: dict) -> str:
    rows = [[c, cl["name"], ", ".join(cl["top_terms"]), f"{cl['train_samples']:,}", f"{cl['heldout_samples']:,}",
             cl["shards"], _mb(cl["bytes"]), f"{cl['fraction']:.3f}", f"{cl['silhouette']:.3f}"]
            for c, cl in s["clusters"].items()]
    q = s["clustering"]
    return ("## Clusters (one expert each)\n\nNamed by their most frequent caption terms.\n\n"
            + _table(["cluster", "name", "top caption terms", "train samples", "held out", "shards", "MB", "share",
                      "silhouette"], rows, "rllrrrrrr") + "\n\n"
            f"Silhouette (cosine, over {q['n']:,} images): **{q['silhouette']:.4f}**; Davies-Bouldin: "
            f"**{q['davies_bouldin']:.4f}** (on {q['sample_size']:,} images); largest cluster "
            f"{q['largest_fraction']:.1%} of the images; empty clusters: {q['empty_clusters']}.")


def _sample(s: dict) -> str:
    members = []
    for name, m in s["sample"]["members"].items():
        shape = m.get("shape", m.get("size"))
        members.append([f"`{name}`", m["kind"], "" if shape is None else tuple(shape), m.get("dtype", m.get("mode", "")),
                        MEMBER_NOTES.get(name, "")])
    fields = [[f"`{f}`", " or ".join(t), FIELD_NOTES.get(f, "")] for f, t in s["sample"]["json_fields"].items()]
    return ("## What each sample holds\n\nWebDataset tars: a sample is the tar members `<image_id>.<member>`. "
            f"Read from sample `{s['sample']['key']}`:\n\n"
            + _table(["member", "kind", "shape", "dtype", "what"], members) + "\n\n"
            "The `json` member's fields (the types seen over the first shard):\n\n"
            + _table(["field", "type", "what"], fields))


def _left_out(s: dict) -> str:
    parts = ["## What was left out, and why"]
    for table, reasons in s["left_out"].items():
        if not reasons:
            parts.append(f"`{table}`: none")
            continue
        parts.append(f"`{table}`: {sum(reasons.values()):,} images\n\n"
                     + _table(["reason", "images"], [[r, f"{n:,}"] for r, n in reasons.items()], "lr"))
    return "\n\n".join(parts)


def _heldout(s: dict) -> str:
    h = s["heldout"]
    rows = [[c, f"{p['size']:,}", f"{p['heldout']:,}", p["expected"], f"{p['share']:.4f}"]
            for c, p in h["per_cluster"].items()]
    return (f"## The held-out split\n\n{h['heldout']:,} of {h['images']:,} images (rate {h['rate']}). Rule: "
            f"{h['rule']}. It depends on the image id and the seed only, so a new K holds out the same images. "
            f"Worst deviation from a stratified split: {h['worst_deviation_images']} images (cluster "
            f"{h['worst_cluster']}).\n\n"
            + _table(["cluster", "images", "held out", "stratified would give", "share"], rows, "rrrrr"))


def _gate(s: dict) -> str:
    g = s["gate"]
    status = ("ACCEPTED DESPITE FAILURES (accept_failed_gate)" if g.get("accepted_failed_gate")
              else "passed" if g.get("passed") else "not recorded")
    rows = [[name, c.get("status"), "yes" if c.get("blocking") else "no", _num(c.get("value")), _num(c.get("threshold"))]
            for name, c in g.get("checks", {}).items()]
    problems = "".join(f"\n- {p}" for p in g.get("problems", []))
    return (f"## The quality gate\n\nStatus: **{status}** (cluster_report run `{g.get('cluster_report_run_id')}`)."
            "\n\n" + _table(["check", "status", "blocking", "value", "threshold"], rows, "lllrr") + problems)


def _provenance(s: dict) -> str:
    models = [[role, f"`{m.get('id')}`", f"`{m.get('revision')}`"] for role, m in s["models"].items()]
    settings = yaml.safe_dump(s["settings"], sort_keys=False).rstrip()
    return ("## Models\n\n" + _table(["role", "model", "revision"], models) + "\n\n## Settings\n\n"
            f"The pipeline's settings for this run (from `pipeline_manifest.json`):\n\n```yaml\n{settings}\n```\n\n"
            "`stats.json` holds every number on this card, machine-readable.")


LOADING = """## How to load it

With `datasets`, from inside this folder (the paths are relative to it):

```python
from datasets import load_dataset
import numpy as np

ds = load_dataset("webdataset", data_files={"train": "data/train/cluster_*/*.tar",
                                            "heldout": "data/heldout/*.tar"})
expert_3 = load_dataset("webdataset", data_files={"train": "data/train/cluster_3/*.tar"})["train"]
# or through the configs above: load_dataset("<this folder, or user/repo on the Hub>", "cluster_3")
row = ds["train"][0]
latent = np.asarray(row["latent.npy"], dtype=np.float16)  # datasets hands arrays over as nested lists
```

With plain `webdataset`:

```python
import glob, io, json
import numpy as np, webdataset as wds

urls = sorted(glob.glob("data/train/cluster_3/*.tar"))
for sample in wds.WebDataset(urls, shardshuffle=False):
    latent = np.load(io.BytesIO(sample["latent.npy"]), allow_pickle=False)
    meta, caption = json.loads(sample["json"]), sample["txt"].decode()
```"""


def _license(s: dict) -> str:
    if s["license"] == "other":
        return ("## License\n\nNot set (`license: other`). The images were fetched from the web and their rights "
                "stay with their owners (each sample's `json` has its `url`); check those terms, and the models' "
                "licenses, before redistributing. Export again with `--license <id>` once you know.")
    return (f"## License\n\n`{s['license']}`, as set by whoever exported it. The images' rights stay with their "
            "owners (each sample's `json` has its `url`).")


def export_dataset(data_root: str, output: str | Path, license_id: str = "other", force: bool = False,
                   log=print) -> dict:
    """Write the dataset folder at `output` (see the module docstring); returns stats.json's content. Refuses
    (ExportRefused, nothing written) a non-empty `output` unless `force`, and a data_dir missing an output."""
    output = Path(output).absolute()
    if is_local(data_root):
        data = local_path(data_root).absolute()
        if output == data or data.is_relative_to(output) or output.is_relative_to(data):
            raise ExportRefused(f"--output {output} overlaps the data_dir {data} (--force would replace pipeline "
                                "outputs): export to a folder outside it")
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not force:
        raise ExportRefused(f"{output} exists and is not empty: choose another --output, or --force to replace it")
    manifest, files = read_committed(data_root)
    report = read_report(data_root, manifest)
    reasons = reason_counts(data_root)
    output.parent.mkdir(parents=True, exist_ok=True)
    _sweep_abandoned(output)
    staged = output.parent / f"{output.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staged.mkdir()
    try:
        started = time.perf_counter()
        how = place_files(files, staged, data_root, log)
        first = next(((dest, source) for split, dest, source, e in files if split != "heldout" and e["samples"]), None)
        if first is None:
            raise ExportRefused("the expert shards hold no sample: nothing to export")
        try:
            sample = describe_sample(staged / first[0])
        except Exception as exc:  # e.g. a tar damaged after the manifest was written, at its listed size
            raise ExportRefused(f"cannot read the first sample of {first[1]}: {type(exc).__name__}: {exc}; "
                                "materialise expert_shards again") from exc
        stats = collect_stats(manifest, report, reasons, sample, files, license_id)
        (staged / "stats.json").write_text(json.dumps(stats, indent=1, default=str) + "\n")
        (staged / "README.md").write_text(render_card(stats))
        _swap_in(staged, output)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    log(f"export: {len(files):,} shards {how}, {stats['splits']['train']['samples']:,} train and "
        f"{stats['splits']['heldout']['samples']:,} held-out samples in {time.perf_counter() - started:.1f} s -> {output}")
    return stats


def _swap_in(staged: Path, output: Path) -> None:
    """Rename the finished folder to `output`; an existing one (allowed by --force) is renamed aside first and
    removed after, so a reader sees the old folder or the new one."""
    old = None
    if output.exists():
        if output.is_dir() and not any(output.iterdir()):
            output.rmdir()
        else:
            old = output.parent / f"{output.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(output, old)
    os.replace(staged, output)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def _sweep_abandoned(output: Path) -> None:
    """Remove DIR.tmp-<pid>-* / DIR.old-<pid>-* folders an export killed on this machine left behind."""
    for left in output.parent.glob(f"{output.name}.*-*-*"):
        kind, _, rest = left.name[len(output.name) + 1:].partition("-")
        pid = rest.partition("-")[0]
        if kind in ("tmp", "old") and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(left, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paris_assets.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="the dataset folder to write (must not exist, or be empty)")
    parser.add_argument("--config", help="settings file (default: $PARIS_CONFIG or paris.yaml)")
    parser.add_argument("--data-dir", help="export this data_dir instead of the settings' one (a path or fsspec URL)")
    parser.add_argument("--license", default="other", help="the card's license id as the Hub spells it (e.g. "
                        "cc-by-4.0); default 'other', with a note that the images' rights stay with their owners")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --output")
    args = parser.parse_args(argv)
    try:
        data_root = args.data_dir or load_settings(args.config).data_root
        export_dataset(data_root, args.output, args.license, args.force)
    except (ExportRefused, SettingsError) as exc:
        print(f"export refused: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
