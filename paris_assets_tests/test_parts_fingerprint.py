"""Parts that stay true: each registered part keeps a record of its rows, and `register` / `backfill` refuse a source
whose registered rows moved (a file that sorts first added to a folder, a reordered URL list), naming the part, the
row and what to do. Only the source plan is read here (no download), so each test takes well under a second."""

import json

import pandas as pd
import pytest

from paris_assets import parts
from paris_assets.lib.ingest.partitions import PARTS, RECORDS, PartsMoved, part_key
from paris_assets.lib.ingest.sources import stable_id
from paris_assets.settings import parse_settings

from .builders import instance_home, temp_instance

SIZE = 4  # source rows per part


def folder_settings(root, folder):
    return parse_settings({"data_dir": str(root / "data"), "source": {"kind": "image_folder", "path": str(folder)},
                           "partitions": {"size": SIZE}}, base_dir=root)


def add_files(folder, names):
    """Files are never opened while the plan is read: a few bytes stand for an image."""
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"not decoded here")


@pytest.fixture
def registered(tmp_path):
    """A folder of 10 files, registered as parts [0, 4), [4, 8), [8, 10)."""
    images = tmp_path / "images"
    add_files(images, [f"{i:04d}.jpg" for i in range(10)])
    settings, instance = folder_settings(tmp_path, images), temp_instance(tmp_path)
    assert parts.register(settings, instance, log=lambda _: None) == [part_key(0, 4), part_key(4, 8), part_key(8, 10)]
    return settings, instance, images


def test_a_file_that_sorts_first_is_refused_by_register_and_backfill(registered):
    settings, instance, images = registered
    add_files(images, ["0.jpg"])  # sorts before 0000.jpg: every registered row shifts by one
    for command in (parts.register, parts.backfill):
        with pytest.raises(PartsMoved) as refused:
            command(settings, instance, log=lambda _: None)
        message = str(refused.value)
        assert message.startswith(f"source part {part_key(0, 4)} no longer holds the rows it was registered with: "
                                  f"row 0 held item {stable_id('0000.jpg')} when it was registered and holds item "
                                  f"{stable_id('0.jpg')} (file://"), message
        assert f"now; item {stable_id('0000.jpg')} (file://{images.resolve()}/0000.jpg) is at row 1 now" in message
        assert "name new files so that they sort after every registered one" in message
        assert "a new data_dir and a new Dagster instance" in message
    assert len(instance.get_dynamic_partitions(PARTS)) == 3  # nothing was added
    assert instance.get_run_records() == []  # backfill refused before any run


def test_a_file_sorting_inside_a_part_names_the_row_that_moved(registered):
    settings, instance, images = registered
    add_files(images, ["0000a.jpg"])  # between 0000.jpg and 0001.jpg: the first row stays, the last moves
    with pytest.raises(PartsMoved, match=rf"{part_key(0, 4)} .*row 3 held item {stable_id('0003.jpg')} when it was "
                                         rf"registered and holds item {stable_id('0002.jpg')} \(file://.*/0002\.jpg\) "
                                         rf"now; item {stable_id('0003.jpg')} \(file://.*/0003\.jpg\) is at row 4 now"):
        parts.register(settings, instance, log=lambda _: None)


def test_appended_files_become_new_parts_only(registered):
    settings, instance, images = registered
    add_files(images, [f"{i:04d}.jpg" for i in range(10, 15)])
    logs = []
    keys = parts.register(settings, instance, log=logs.append)
    assert keys == [part_key(0, 4), part_key(4, 8), part_key(8, 10), part_key(10, 14), part_key(14, 15)]
    assert "3 parts registered before, 2 added" in logs[0] and not any("recorded the rows" in line for line in logs)
    records = json.loads((images.parent / "data" / RECORDS).read_text())
    assert sorted(records["parts"]) == sorted(keys)
    assert records["parts"][part_key(14, 15)]["first"] == stable_id("0014.jpg")


def test_a_reordered_url_list_is_refused_and_the_cli_says_why(tmp_path, monkeypatch, capsys):
    urls = [f"https://example.org/{i}.jpg" for i in range(8)]
    listing = tmp_path / "urls.csv"
    pd.DataFrame({"url": urls, "caption": ["a picture"] * 8}).to_csv(listing, index=False)
    settings = parse_settings({"data_dir": str(tmp_path / "data"), "source": {"kind": "url_list", "path": str(listing)},
                               "partitions": {"size": SIZE}}, base_dir=tmp_path)
    instance = temp_instance(tmp_path)
    parts.register(settings, instance, log=lambda _: None)
    urls[5], urls[6] = urls[6], urls[5]  # the second part's middle rows swap: its first and last rows stay
    pd.DataFrame({"url": urls, "caption": ["a picture"] * 8}).to_csv(listing, index=False)
    with pytest.raises(PartsMoved, match=rf"source part {part_key(4, 8)} .*first and last rows .* are where they "
                                         "were, but rows between them moved or changed"):
        parts.register(settings, instance, log=lambda _: None)
    config = tmp_path / "paris.yaml"
    config.write_text(f"data_dir: data\nsource: {{kind: url_list, path: {listing}}}\npartitions: {{size: {SIZE}}}\n")
    monkeypatch.setenv("DAGSTER_HOME", str(instance_home(tmp_path / "home")))
    assert parts.main(["backfill", "--config", str(config)]) == 2
    assert f"source part {part_key(4, 8)} no longer holds the rows" in capsys.readouterr().err


def test_parts_registered_before_records_are_recorded_then_checked(tmp_path):
    images = tmp_path / "images"
    add_files(images, [f"{i:04d}.jpg" for i in range(6)])
    settings, instance = folder_settings(tmp_path, images), temp_instance(tmp_path)
    instance.add_dynamic_partitions(PARTS, [part_key(0, 4), part_key(4, 6)])  # as register did before records
    logs = []
    assert parts.register(settings, instance, log=logs.append) == [part_key(0, 4), part_key(4, 6)]
    assert any(line.startswith(f"recorded the rows of 2 parts registered before parts kept a record "
                               f"({part_key(0, 4)} .. {part_key(4, 6)})") for line in logs), logs
    logs.clear()
    parts.register(settings, instance, log=logs.append)  # recorded now: nothing more to say
    assert not any("recorded the rows" in line for line in logs), logs
    add_files(images, ["0003a.jpg"])  # sorts after the first part's rows: the second part is the first that moved
    with pytest.raises(PartsMoved, match=f"source part {part_key(4, 6)} no longer holds"):
        parts.register(settings, instance, log=lambda _: None)
