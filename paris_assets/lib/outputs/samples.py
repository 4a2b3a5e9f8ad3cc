"""Decoding a shard sample with no pickle anywhere: only the member types this project writes.

webdataset's default decoder unpickles `.pyd` / `.pickle` members and hands `.pth` to torch.load, so a
tampered shard could run code in a trainer or in the integrity check. Here every member's type is vetted
before anything is decoded: `.npy` (numpy with allow_pickle=False), text, json and images; anything else is
refused with an error naming the shard, the sample and the member.
"""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

TEXT = {"txt", "text"}
JSON = {"json"}
ARRAYS = {"npy"}
IMAGES = {"jpg", "jpeg", "png", "webp"}
KNOWN = TEXT | JSON | ARRAYS | IMAGES


class UnsafeMember(ValueError):
    """A shard member of a type that is not decoded (it could carry a pickle) or an .npy holding objects."""


def member_type(name: str) -> str:
    """The type a member decodes as: its last extension ("clip_tokens.npy" -> "npy", "x.npy.pickle" -> "pickle")."""
    return name.rpartition(".")[2].lower()


def decode_member(name: str, data: bytes, where: str = "") -> object:
    """One member's bytes as an array (.npy), str (text), dict (json) or RGB PIL image; UnsafeMember otherwise."""
    kind = member_type(name)
    if kind in ARRAYS:
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:  # object arrays and raw pickles both end here
            raise UnsafeMember(f"{where}{name}: not a plain numeric .npy ({exc}); refusing to unpickle it. The shard "
                               "was not written by paris-assets or was altered: re-materialise expert_shards") from exc
    if kind in TEXT:
        return data.decode("utf-8")
    if kind in JSON:
        return json.loads(data)
    if kind in IMAGES:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    raise UnsafeMember(f"{where}{name}: a .{kind} member is never decoded (only {', '.join(sorted(KNOWN))}: pickle "
                       "and torch members can run code). The shard was not written by paris-assets or was altered: "
                       "re-materialise expert_shards")


def decode_sample(sample: dict, wanted: set[str] | None = None) -> dict:
    """A webdataset-style sample ({"__key__": ..., member: bytes}) decoded: every member's type is checked first
    (UnsafeMember on any unknown one, even if not wanted), then the `wanted` members (all when None) decoded;
    the rest are left out. Keys starting with "__" pass through."""
    where = f"{sample.get('__url__', '')}: {sample.get('__key__', '?')}."
    members = [k for k in sample if not k.startswith("__")]
    for name in members:
        if member_type(name) not in KNOWN:
            decode_member(name, b"", where)  # raises with the message above
    out = {k: v for k, v in sample.items() if k.startswith("__")}
    for name in members:
        if wanted is None or name in wanted:
            out[name] = decode_member(name, sample[name], where)
    return out
