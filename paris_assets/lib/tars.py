"""Deterministic WebDataset tar writing and plain tar reading.

webdataset's own TarWriter stamps the current time into every member, so two identical runs give different
bytes. This writer fixes every header field, so the same samples always give byte-identical shards, and any
WebDataset reader still loads them with no code of ours.
"""

from __future__ import annotations

import io
import tarfile
from typing import IO, Iterator


class TarShardWriter:
    """Append samples ({ext: bytes}) under a key to one tar; members sorted by extension within a sample."""

    def __init__(self, fileobj: IO[bytes]):
        self._tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.USTAR_FORMAT)
        self.samples = 0

    def write(self, key: str, fields: dict[str, bytes]) -> None:
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/' (WebDataset splits on them)")
        for ext in sorted(fields):
            data = fields[ext]
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self.samples += 1

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> "TarShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_samples(fileobj: IO[bytes], wanted: set[str] | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) for each sample of a tar read as a stream, in file order; keys outside `wanted`
    are skipped without reading their data. Members of one sample must be adjacent, as WebDataset requires."""
    current, fields = None, {}
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.rpartition("/")[2].partition(".")
            if wanted is not None and key not in wanted:
                continue
            if key != current:
                if current is not None:
                    yield current, fields
                current, fields = key, {}
            fields[ext] = tar.extractfile(member).read()
    if current is not None:
        yield current, fields
