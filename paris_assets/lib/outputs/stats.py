"""What a dataset export says about itself, gathered as one JSON-able dict (its stats.json, the numbers of its
card, lib/outputs/card.py): the members and json fields of a sample read from a shard, never from a list kept
here, the splits and clusters counted from the manifest, and the settings with their secrets withheld. The card is
meant for the Hub: no credential a URL may carry (user:password, query string, fragment) reaches it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
from upath import UPath

from .merkle import SCHEME, shards_root
from .samples import decode_member, member_type
from .tars import iter_members

FORMAT = "paris-assets-export"
VERSION = 1
WITHHELD = "<withheld>"
SECRET_SETTINGS = ("webhook_url", "password", "secret", "credentials")  # a key containing one of these is withheld
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]+")  # a URL, alone or inside a message


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
            "silhouette": report["silhouette_per_cluster"][c], "intra_cosine": report["intra_cosine"][c],
            "merkle_root": shards_root(shards)}
    splits = {name: {"samples": sum(e["samples"] for s, _, _, e in files if (s == "heldout") == (name == "heldout")),
                     "shards": sum(1 for s, *_ in files if (s == "heldout") == (name == "heldout")),
                     "bytes": sum(e["bytes"] for s, _, _, e in files if (s == "heldout") == (name == "heldout"))}
              for name in ("train", "heldout")}
    return public_urls({
        "format": FORMAT, "version": VERSION, "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "manifest_created": manifest.get("created"), "license": license_id, "k": k, "splits": splits,
        "media": manifest.get("media", "image"), "clusters": clusters,
        "clustering": {key: report.get(key) for key in ("silhouette", "davies_bouldin", "largest_fraction",
                                                        "empty_clusters", "n", "sample_size")}
                      | {"cluster_report_run": report.get("run_id")},
        "heldout": {key: split.get(key) for key in ("rule", "heldout", "images", "rate", "worst_cluster",
                                                    "worst_deviation_images", "worst_deviation_share")}
                   | {"per_cluster": split["per_cluster"]},
        "left_out": reasons, "counts": manifest.get("counts", {}), "gate": manifest.get("gate", {}),
        "models": manifest.get("models", {}), "settings": public_settings(manifest.get("settings", {})),
        "sample": sample, "verification": verification(files, k),
    })


def verification(files: list[tuple[str, str, UPath, dict]], k: int) -> dict:
    """What `python -m paris_assets.verify` checks an export against: the Merkle scheme (lib/outputs/merkle.py),
    a root per cluster and the held-out set's, and every shard's path in the export, split, bytes and sha256."""
    splits = [str(c) for c in range(k)]
    return {"scheme": SCHEME,
            "roots": {"clusters": {s: shards_root([e for x, _, _, e in files if x == s]) for s in splits},
                      "heldout": shards_root([e for x, _, _, e in files if x == "heldout"])},
            "shards": [{"path": dest, "split": split, "bytes": e["bytes"], "sha256": e["sha256"]}
                       for split, dest, _, e in files]}


def public_settings(value, key: str = ""):
    """The settings as the card may publish them: a value under a secret-looking key is withheld (alerts.webhook_url:
    a Slack webhook URL lets anyone post), and so is what any URL may carry as a credential (`public_url`)."""
    if isinstance(value, dict):
        return {k: public_settings(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [public_settings(v, key) for v in value]
    if value is not None and any(word in key.lower() for word in SECRET_SETTINGS):
        return WITHHELD
    return public_urls(value)


def public_urls(value):
    """`value` with `public_url` applied to every URL in every string of it, however nested."""
    if isinstance(value, dict):
        return {k: public_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [public_urls(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return URL.sub(lambda m: public_url(m.group()), value)
    return value


def public_url(url: str) -> str:
    """`url` with its user:password, its query string and its fragment withheld, split as HTTP clients split it
    (the host ends at the first / ? or #, the user at its last @): a presigned S3 URL's X-Amz-Credential and
    X-Amz-Signature, a ?token=hf_... or an ?auth=... are credentials, and no query or fragment is needed to
    say where the data came from."""
    scheme, _, rest = url.partition("://")
    ends = [i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0]
    host, tail = rest[:min(ends, default=len(rest))], rest[min(ends, default=len(rest)):]
    if "@" in host:
        host = f"{WITHHELD}@{host.rpartition('@')[2]}"
    before, hash_mark, fragment = tail.partition("#")
    path, query_mark, query = before.partition("?")
    # an empty query or fragment stays as it is, so that a URL made public already reads the same again
    return (f"{scheme}://{host}{path}{query_mark}{WITHHELD if query else ''}"
            f"{hash_mark}{WITHHELD if fragment else ''}")
