"""Shards: deterministic bytes, read back by the plain webdataset library and by tarfile alike."""

import io
import tarfile

import pytest
import webdataset as wds

from paris_assets.lib.outputs.tars import TarShardWriter, iter_samples


def write(samples) -> bytes:
    buf = io.BytesIO()
    with TarShardWriter(buf) as writer:
        for key, fields in samples:
            writer.write(key, fields)
    return buf.getvalue()


SAMPLES = [(f"id{i:04d}", {"jpg": bytes([i]) * (i * 37 % 700), "txt": f"caption {i}".encode(),
                           "json": b'{"a": 1}'}) for i in range(30)]


def test_byte_identical_for_the_same_samples():
    assert write(SAMPLES) == write(SAMPLES)


def test_plain_webdataset_reads_our_shards(tmp_path):
    path = tmp_path / "shard-000000.tar"
    path.write_bytes(write(SAMPLES))
    got = list(wds.WebDataset(str(path), shardshuffle=False))
    assert [s["__key__"] for s in got] == [k for k, _ in SAMPLES]
    assert got[7]["txt"] == b"caption 7" and got[7]["jpg"] == SAMPLES[7][1]["jpg"]


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_reader_matches_tarfile_on_foreign_tars(fmt):
    buf = io.BytesIO()
    long_dir = "d" * 120  # beyond 100 characters: GNU long names, pax paths or the ustar prefix
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for key, fields in SAMPLES[:5]:
            for ext, data in fields.items():
                info = tarfile.TarInfo(f"{long_dir}/{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    ours = list(iter_samples(buf))
    assert [k for k, _ in ours] == [k for k, _ in SAMPLES[:5]]
    assert ours[3][1] == SAMPLES[3][1]


def test_wanted_keys_only():
    got = list(iter_samples(io.BytesIO(write(SAMPLES)), wanted={"id0003", "id0010"}))
    assert [k for k, _ in got] == ["id0003", "id0010"]


def test_key_with_a_dot_is_refused():
    with pytest.raises(ValueError, match="must not contain"):
        write([("a.b", {"txt": b"x"})])
