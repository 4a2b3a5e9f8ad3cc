"""The dataset card (README.md) of an export, rendered from its stats (lib/outputs/stats.py): YAML front matter
the Hub reads (license, size, one config for every cluster together and one per cluster, the declared
features), then what the data is, what a sample holds, what was left out, the held-out split, the quality gate,
provenance and how to load it.
"""

from __future__ import annotations

import copy

import yaml

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
                "txt": "the caption", "json": "provenance and scores (fields below)", "jpg": "the square crop",
                "t5_tokens.npy": "T5-v1.1-XXL per-token text states, zeros at padding (what video experts condition on)",
                "t5_mask.npy": "T5 attention mask, True at real tokens", "dinov2.npy": "DINOv2 of the clip's first frame",
                "mp4": "the clip as stored (H.264 4:4:4)"}


def size_category(n: int) -> str:
    """The Hub's size_categories bucket for n samples."""
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")):
        if n < bound:
            return label
    return "1B<n<10B"


JSON_VALUES = {"float": "float64", "int": "int64", "bool": "bool", "string": "string"}
# the Hub task of the manifest's "media" (an image data set when it names none)
TASK_CATEGORIES = {"image": "text-to-image", "video": "text-to-video"}


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
        "task_categories": [TASK_CATEGORIES.get(stats.get("media"), "text-to-image")],
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
                _provenance(stats), _verification(stats), LOADING, _license(stats)]
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


def _verification(s: dict) -> str:
    v = s.get("verification")
    if not v:
        return "## Verifying the data\n\nNo Merkle roots were recorded for this export."
    count = lambda split: sum(1 for e in v["shards"] if e["split"] == split)
    rows = [[f"cluster {c}", count(c), f"`{root}`"] for c, root in v["roots"]["clusters"].items()]
    rows.append(["held out", count("heldout"), f"`{v['roots']['heldout']}`"])
    return ("## Verifying the data\n\nEach expert's data is pinned by one Merkle root over its shards' sha256 "
            f"({v['scheme']}). An expert that records its root when training starts can prove later which data it "
            "saw.\n\n" + _table(["split", "shards", "Merkle root"], rows, "lrl") + "\n\n"
            "`stats.json` lists every shard's sha256 under `verification`. With paris-assets installed, "
            "`python -m paris_assets.verify <this folder>` checks a downloaded copy against them and the roots, and "
            "names every changed, missing or extra shard (exit 0: all match, 1: a difference).")


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
