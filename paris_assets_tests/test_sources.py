"""Reading URL lists of any spelling and format; clear errors for unusable sources."""

import json

import pandas as pd
import pytest

from paris_assets.lib.ingest import prepare_source_table
from paris_assets.lib.sources import SourceError, decode_caption, read_url_list, stable_id

LAION = pd.DataFrame({
    "URL": [f"http://example.com/{i}.jpg" for i in range(20)],
    "TEXT": [f"caption {i}" for i in range(20)],
    "WIDTH": range(100, 120), "HEIGHT": range(200, 220),
    "similarity": 0.31, "punsafe": 0.02, "pwatermark": 0.1, "AESTHETIC_SCORE": 6.0,
})


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_laion_spelling_becomes_stable_names(tmp_path, fmt):
    path = tmp_path / f"urls.{fmt}"
    if fmt == "parquet":
        LAION.to_parquet(path)
    elif fmt == "csv":
        LAION.to_csv(path, index=False)
    else:
        path.write_text("\n".join(json.dumps(r) for r in LAION.to_dict("records")))
    table = read_url_list(str(path), url_col="url", caption_col="caption")
    assert list(table.columns[:3]) == ["image_id", "url", "alt_text"]
    assert table["alt_text"][3] == "caption 3"
    assert table["original_width"][0] == 100 and table["original_height"][0] == 200
    assert table["aesthetic"][0] == 6.0 and table["punsafe"][0] == 0.02 and table["similarity"][0] == 0.31
    assert table["image_id"][5] == stable_id("http://example.com/5.jpg")


def test_limit_is_a_seeded_sample(tmp_path):
    path = tmp_path / "urls.parquet"
    LAION.to_parquet(path)
    a = read_url_list(str(path), limit=5, seed=1)
    b = read_url_list(str(path), limit=5, seed=1)
    c = read_url_list(str(path), limit=5, seed=2)
    assert len(a) == 5 and a["url"].tolist() == b["url"].tolist() and a["url"].tolist() != c["url"].tolist()


def test_glob_over_many_files_and_memory_fs(tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    for part in range(2):
        with fs.open(f"/laion/part-{part}.parquet", "wb") as fh:
            LAION.iloc[part * 10:(part + 1) * 10].to_parquet(fh)
    table = read_url_list("memory://laion/*.parquet")
    assert len(table) == 20


def test_unusable_sources_fail_before_download(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        read_url_list(str(tmp_path / "missing.parquet"))
    path = tmp_path / "urls.parquet"
    LAION.rename(columns={"URL": "link"}).to_parquet(path)
    with pytest.raises(SourceError, match="no URL column 'url'.*link.*set source.url_col"):
        read_url_list(str(path))
    (tmp_path / "urls.txt").write_text("x")
    with pytest.raises(SourceError, match="expected parquet, csv or jsonl"):
        read_url_list(str(tmp_path / "urls.txt"))


@pytest.mark.parametrize("raw,expected", [
    ("a cat", ("a cat", "")),
    ("  two   spaces \n", ("two spaces", "")),
    (b"caf\xc3\xa9", ("café", "")),
    (None, (None, "missing_caption")),
    ("   ", (None, "missing_caption")),
    (float("nan"), (None, "missing_caption")),
])
def test_decode_caption(raw, expected):
    assert decode_caption(raw) == expected


def test_non_utf8_caption_is_flagged():
    text, problem = decode_caption(b"caf\xe9")
    assert problem.startswith("caption_not_utf8") and "\ufffd" in text


def test_repeated_urls_are_refused():
    table = pd.DataFrame({"image_id": ["a", "b", "a"], "url": ["u1", "u2", "u1"], "alt_text": ["x", "y", "x"]})
    todo, refused = prepare_source_table(table)
    assert todo["image_id"].tolist() == ["a", "b"]
    assert refused["reason"].tolist() == ["duplicate_url"]
