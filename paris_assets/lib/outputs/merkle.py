"""A Merkle root per expert: one 32-byte commitment to exactly which shards an expert trains on.

The construction is RFC 6962's Merkle Tree Hash (Certificate Transparency, section 2.1) with SHA-256:

- the leaves are the shards' sha256 digests (32 raw bytes each, as pipeline_manifest.json lists them in hex),
  in the sorted order of the shards' file names (`shard-000000.tar`, ...; the names are the same in a data_dir
  and in an export, so a cluster has one root wherever its shards sit);
- a leaf hashes as SHA-256(0x00 || digest), an inner node as SHA-256(0x01 || left || right): the two prefixes
  keep a leaf from passing for a node (no second-preimage by re-reading two leaves as one);
- the tree is built level by level, pairing neighbours left to right; a level's last node, when it has no
  partner, is promoted to the next level unhashed. That is the same tree RFC 6962 defines by splitting at the
  largest power of two below n (MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))), so any RFC 6962
  implementation reproduces the root;
- the root of no shards (an empty cluster) is SHA-256 of the empty string, as in RFC 6962.

A changed byte in any shard changes its sha256 and so the root; so does a shard missing, added or swapped for
another's place. The per-shard digests (the manifest, an export's stats.json) then say which shard it was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

SCHEME = ("RFC 6962 Merkle Tree Hash, SHA-256: leaves are the shards' sha256 digests in sorted file-name order, "
          "leaf = SHA-256(0x00 || digest), node = SHA-256(0x01 || left || right), an unpaired node promoted; "
          "no shards: SHA-256('')")
LEAF, NODE = b"\x00", b"\x01"


def leaf_hash(digest: bytes) -> bytes:
    """The leaf of one shard: SHA-256(0x00 || its 32-byte sha256)."""
    return hashlib.sha256(LEAF + digest).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """An inner node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE + left + right).digest()


def merkle_root(digests: Iterable[bytes]) -> bytes:
    """The root over the given shard digests, in the order given (see the module docstring)."""
    level = [leaf_hash(d) for d in digests]
    if not level:
        return hashlib.sha256(b"").digest()
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = paired + ([level[-1]] if len(level) % 2 else [])
    return level[0]


def shards_root(shards: Iterable[dict]) -> str:
    """The hex root of a list of shard entries (each with `path` and hex `sha256`, as pipeline_manifest.json and
    stats.json list them), ordered by the file name of `path`."""
    ordered = sorted(shards, key=lambda s: Path(s["path"]).name)
    return merkle_root(bytes.fromhex(s["sha256"]) for s in ordered).hex()


def split_roots(clusters: dict[str, list[dict]], heldout: list[dict]) -> dict:
    """What pipeline_manifest.json's `merkle_roots` holds: the scheme, a root per cluster (expert) and the
    held-out set's root."""
    return {"scheme": SCHEME, "clusters": {str(c): shards_root(shards) for c, shards in clusters.items()},
            "heldout": shards_root(heldout)}


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
