"""Reading URL lists of any spelling and format; clear errors for unusable sources."""

import json

import pandas as pd
import pytest

from paris_assets.lib.ingest.download import prepare_source_table
from paris_assets.lib.ingest.sources import SourceError, decode_caption, read_url_list, stable_id

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
    table, read = read_url_list(str(path), url_col="url", caption_col="caption")
    assert read["bytes_read"] > 0
    assert list(table.columns[:3]) == ["image_id", "url", "alt_text"]
    assert table["alt_text"][3] == "caption 3"
    assert table["original_width"][0] == 100 and table["original_height"][0] == 200
    assert table["aesthetic"][0] == 6.0 and table["punsafe"][0] == 0.02 and table["similarity"][0] == 0.31
    assert table["image_id"][5] == stable_id("http://example.com/5.jpg")


def test_limit_is_a_seeded_sample(tmp_path):
    path = tmp_path / "urls.parquet"
    LAION.to_parquet(path)
    a, _ = read_url_list(str(path), limit=5, seed=1)
    b, _ = read_url_list(str(path), limit=5, seed=1)
    c, _ = read_url_list(str(path), limit=5, seed=2)
    assert len(a) == 5 and a["url"].tolist() == b["url"].tolist() and a["url"].tolist() != c["url"].tolist()


def test_glob_over_many_files_and_memory_fs(tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    for part in range(2):
        with fs.open(f"/laion/part-{part}.parquet", "wb") as fh:
            LAION.iloc[part * 10:(part + 1) * 10].to_parquet(fh)
    table, read = read_url_list("memory://laion/*.parquet")
    assert len(table) == 20 and read["row_groups_read"] == read["row_groups_total"] == 2


def test_a_trial_reads_whole_row_groups_not_a_few_rows_of_each(tmp_path):
    """limit=1,000 of 20,000 rows in 100 row groups of 200: the rows come from the ~5 row groups that hold
    them, and the bytes read (counted under fsspec, beside the reader's own count) are a small share of the
    release, where drawing rows over the whole release and fetching them with one take read nearly all of it."""
    from paris_assets.bench.sources import counted_reads, whole_release_take, write_release

    paths = write_release(tmp_path, files=2, groups=100, rows=200)
    with counted_reads() as counted:
        table, read = read_url_list(str(tmp_path / "*.parquet"), url_col="URL", caption_col="TEXT", limit=1000,
                                    seed=7)
    groups = {tuple(url.split("/")[3:5]) for url in table["url"]}
    assert len(table) == 1000 and table["image_id"].is_unique
    assert read["row_groups_total"] == 100 and len(groups) == read["row_groups_read"] <= 6
    assert read["bytes_read"] == counted[0] > 0
    size = sum(p.stat().st_size for p in paths)
    assert read["bytes_read"] < 0.15 * size  # 5 row groups' columns of 100, and the two footers
    with counted_reads() as baseline:
        assert whole_release_take(paths, 1000, seed=7) == (1000, 100)
    assert baseline[0] > 0.8 * size
    again, _ = read_url_list(str(tmp_path / "*.parquet"), url_col="URL", caption_col="TEXT", limit=1000, seed=7)
    other, _ = read_url_list(str(tmp_path / "*.parquet"), url_col="URL", caption_col="TEXT", limit=1000, seed=8)
    assert again["url"].tolist() == table["url"].tolist() and set(other["url"]) != set(table["url"])


@pytest.mark.parametrize("sizes,limit", [([200] * 100, 1000), ([1, 500, 3, 0, 77, 1000, 2], 600),
                                         ([10] * 5, 49), ([7], 3), ([3, 4], 7)])
@pytest.mark.parametrize("seed", [0, 1])
def test_pick_row_groups_draws_exactly_limit_rows(sizes, limit, seed):
    import numpy as np

    from paris_assets.lib.ingest.sources import pick_row_groups

    picked = pick_row_groups(sizes, limit, seed)
    assert sum(len(rows) for rows in picked.values()) == limit
    for group, rows in picked.items():
        assert len(rows) and sizes[group] and (np.diff(rows) > 0).all() and 0 <= rows[0] and rows[-1] < sizes[group]
    assert sum(sizes[g] for g in picked) - limit < max(sizes)  # no group beyond the one that reached the limit
    same = pick_row_groups(sizes, limit, seed)
    assert same.keys() == picked.keys() and all((same[g] == picked[g]).all() for g in picked)


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
