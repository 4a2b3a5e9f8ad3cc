"""The shard browser: its index against the manifest, health on each kind of damage, the filters, images from
the shards or the crops, the JSON API over a real loopback server, and the page in a real browser."""

import io
import json
import shutil
import threading
import urllib.error
import urllib.request

import pandas as pd
import pytest
import webdataset as wds

from paris_assets import browse
from paris_assets.lib.outputs import shard_index
from paris_assets.lib.outputs.tars import iter_members, iter_samples

from .builders import browse_server, shot


def copy_outputs(data, to):
    for name in ("expert_shards", "heldout", "filtered_images"):
        shutil.copytree(data / name, to / name)
    shutil.copy(data / "pipeline_manifest.json", to / "pipeline_manifest.json")
    return to


@pytest.fixture(scope="module")
def shards(trained, tmp_path_factory):
    """A copy of the materialised training outputs (test_training changes the original later)."""
    return copy_outputs(trained[3], tmp_path_factory.mktemp("browse"))


def manifest_of(root):
    return json.loads((root / "pipeline_manifest.json").read_text())


def test_index_holds_every_shard_sample_once(shards):
    index = shard_index.build_index(str(shards))
    manifest = manifest_of(shards)
    kept = pd.read_parquet(shards / "filtered_images" / "kept.parquet")["image_id"]
    assert sorted(index.samples["image_id"]) == sorted(kept)  # every kept image, none twice
    assert shard_index.shard_health(index) == []
    view = shard_index.overview(index)
    assert view["total_images"] == len(kept) == view["indexed_images"]
    assert view["heldout_images"] == sum(s["samples"] for s in manifest["heldout"]) > 0
    per_split = {s["split"]: s for s in view["splits"]}
    for k, listed in manifest["clusters"].items():
        assert per_split[k]["shards"] == len(listed) > 1  # six samples per shard: several per cluster
        assert (index.samples["split"] == k).sum() == per_split[k]["samples"]
        assert (index.samples.loc[index.samples["split"] == k, "cluster"] == int(k)).all()
    assert sum(b["shards"] for b in view["shard_sizes"]) == view["shards"]


@pytest.mark.parametrize("damage,problem", [
    ("delete", "missing"), ("empty", "zero-size"), ("truncate", "the manifest says"),
    ("garble", "unreadable"), ("garble_later", "unreadable"), ("extra", "extra: on disk but not in the manifest"),
])
def test_health_names_each_damage(shards, tmp_path, damage, problem):
    root = copy_outputs_of(shards, tmp_path)
    path = root / manifest_of(root)["clusters"]["1"][0]["path"]
    if damage == "delete":
        path.unlink()
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:2048])
    elif damage.startswith("garble"):  # same size, a header's size field overwritten: the first or a later one
        with open(path, "rb") as fh:
            offsets = [fh.tell() - 512 for _name, _size, _stream in iter_members(fh)]
        header = offsets[0] if damage == "garble" else offsets[len(offsets) // 2]
        data = bytearray(path.read_bytes())
        data[header + 124:header + 136] = b"z" * 12
        path.write_bytes(bytes(data))
    else:
        shutil.copy(path, path.with_name("shard-999999.tar"))
    index = shard_index.build_index(str(root))
    health = shard_index.shard_health(index)
    assert len(health) == 1 and problem in health[0]["problem"], health
    if damage == "garble_later":  # the samples before the damage are still browsable
        before = index.counted[path.relative_to(root).as_posix()]
        assert 0 < before < manifest_of(root)["clusters"]["1"][0]["samples"]
        assert f"after {before} samples" in health[0]["problem"]
    expected = path.with_name("shard-999999.tar") if damage == "extra" else path
    assert health[0]["path"] == expected.relative_to(root).as_posix()


def copy_outputs_of(shards, tmp_path):
    shutil.copytree(shards, tmp_path / "data")
    return tmp_path / "data"


def test_a_scan_is_reused_until_a_shard_changes(shards, tmp_path, monkeypatch):
    root = copy_outputs_of(shards, tmp_path)
    first = shard_index.build_index(str(root), tmp_path / "cache")

    def no_scanning(fh):
        raise AssertionError("scanned again")

    monkeypatch.setattr(shard_index, "_scan_shard", no_scanning)
    again = shard_index.build_index(str(root), tmp_path / "cache")  # unchanged: from the cache
    assert again.samples["image_id"].tolist() == first.samples["image_id"].tolist()
    assert again.counted == first.counted and shard_index.shard_health(again) == []
    path = root / manifest_of(root)["clusters"]["2"][0]["path"]
    path.write_bytes(path.read_bytes()[:-1024])  # a shard changes: scanned afresh (here: refused by the stub)
    changed = shard_index.build_index(str(root), tmp_path / "cache")
    assert "scanned again" in " ".join(changed.unreadable.values())
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1  # the stale scan was replaced


def test_filters_page_and_sort(shards):
    samples = shard_index.build_index(str(shards)).samples.copy()
    total, page = shard_index.query(samples, {})
    assert total == len(samples) and len(page) == min(48, total)
    for k in samples["cluster"].unique():
        total, _ = shard_index.query(samples, {"cluster": str(k)})
        assert total == (samples["cluster"] == k).sum()
    middle = float(samples["aesthetic"].median())
    total, rows = shard_index.query(samples, {"aesthetic_min": str(middle), "sort": "-aesthetic"}, per_page=1000)
    assert total == (samples["aesthetic"] >= middle).sum() and (rows["aesthetic"] >= middle).all()
    assert rows["aesthetic"].is_monotonic_decreasing
    total, rows = shard_index.query(samples, {"distance_max": "0.01", "sort": "distance"}, per_page=1000)
    assert 0 < total == (samples["centroid_distance"] <= 0.01).sum() and rows["centroid_distance"].is_monotonic_increasing
    assert shard_index.query(samples, {"split": "heldout"})[0] == (samples["split"] == "heldout").sum()
    # the quality columns every sample's json carries (the demo carries its scores; the computed sit beside them)
    assert set(samples["aesthetic_source"]) == {"carried"} and samples["aesthetic_computed"].notna().all()
    assert shard_index.query(samples, {"aesthetic_source": "carried"})[0] == len(samples)
    samples.loc[samples.index[:4], "aesthetic_source"] = "computed"
    assert shard_index.query(samples, {"aesthetic_source": "computed"})[0] == 4
    samples.loc[samples.index[5:7], "punsafe"] = 0.9
    assert shard_index.query(samples, {"punsafe_max": "0.5"})[0] == len(samples) - 2
    samples.loc[samples.index[:3], "url"] = ""
    samples.loc[samples.index[3:5], "caption"] = None
    assert shard_index.query(samples, {"has_url": "no"})[0] == 3
    assert shard_index.query(samples, {"has_url": "yes"})[0] == len(samples) - 3
    assert shard_index.query(samples, {"has_caption": "no"})[0] == 2
    word = samples["alt_text"].iloc[10].split()[-1]
    total, rows = shard_index.query(samples, {"text": word.upper()}, per_page=1000)
    assert total >= 1 and rows["alt_text"].str.lower().str.contains(word.lower()).all()
    samples.loc[samples.index[20], "caption"] = "a zebra crossing"  # a caption of its own (BLIP-2's, say)
    assert shard_index.query(samples, {"text": "zebra"})[1]["image_id"].tolist() == [samples["image_id"].iat[20]]
    assert shard_index.query(samples, {"text": "crossing " + samples["alt_text"].iat[20]})[0] == 0  # not across
    pages = [shard_index.query(samples, {}, page=p, per_page=10)[1] for p in (1, 2)]
    assert set(pages[0]["image_id"]).isdisjoint(pages[1]["image_id"])
    last = shard_index.query(samples, {}, page=10_000, per_page=10)[1]  # past the end: the last page
    assert last["image_id"].tolist() == samples["image_id"].tolist()[(len(samples) - 1) // 10 * 10:]


@pytest.mark.parametrize("filters,message", [
    ({"aesthetic_min": "high"}, "aesthetic_min must be a number"), ({"cluster": "one"}, "cluster must be whole"),
    ({"has_url": "maybe"}, "has_url must be yes, no or any"), ({"sort": "size"}, "sort must be one of"),
    ({"distance_max": "nan"}, "distance_max must be a number"),
    ({"aesthetic_source": "guessed"}, "aesthetic_source must be carried, computed or any"),
    ({"colour": "red"}, "unknown filter"),
])
def test_bad_filters_say_what_to_fix(shards, filters, message):
    samples = shard_index.build_index(str(shards)).samples
    with pytest.raises(ValueError, match=message):
        shard_index.query(samples, filters)


def test_images_come_from_the_shard_or_the_crops(shards):
    index = shard_index.build_index(str(shards))
    row = index.samples.iloc[7]
    sample = next(s for s in wds.WebDataset(str(shards / row["shard"]), shardshuffle=False)
                  if s["__key__"] == row["image_id"])
    crops = shard_index.CropLookup(index.root)
    assert shard_index.read_image(index, row["image_id"], crops) == sample["jpg"]
    index.samples["jpg_offset"] = -1  # as when shards.include_jpg is off: the filtered_images crop instead
    crop_shard = pd.read_parquet(shards / "filtered_images" / "kept.parquet").set_index("image_id").loc[
        row["image_id"], "crop_shard"]
    with open(shards / "filtered_images" / crop_shard, "rb") as fh:
        crop = dict(iter_samples(fh, {row["image_id"]}))[row["image_id"]]["jpg"]
    assert shard_index.read_image(index, row["image_id"], crops) == crop
    from PIL import Image

    assert Image.open(io.BytesIO(shard_index.thumbnail(crop, 64))).size == (64, 64)
    with pytest.raises(KeyError, match="no sample"):
        shard_index.read_image(index, "not-an-id", crops)


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def test_json_api_over_loopback(shards, tmp_path):
    server = browse.serve(str(shards), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        status, kind, body = get(f"{base}/api/samples?cluster=0&per_page=5&page=2")
        result = json.loads(body)
        assert status == 200 and result["per_page"] == 5 and len(result["rows"]) <= 5 and result["page"] == 2
        assert all(r["cluster"] == 0 for r in result["rows"])
        first = result["rows"][0]["image_id"]
        status, _, body = get(f"{base}/api/sample/{first}")
        assert status == 200 and json.loads(body)["image_id"] == first and "url" in json.loads(body)
        status, kind, body = get(f"{base}/image/{first}?size=96")
        assert status == 200 and kind == "image/jpeg" and body[:2] == b"\xff\xd8"
        assert get(f"{base}/api/samples?aesthetic_min=x")[0] == 400
        assert get(f"{base}/api/sample/nope")[0] == 404
        assert get(f"{base}/")[1].startswith("text/html")
        last = json.loads(get(f"{base}/api/samples?cluster=0&per_page=5&page=999")[2])
        assert last["page"] == last["pages"] and last["rows"]
        rebound = urllib.request.Request(f"{base}/api/overview", headers={"Host": f"evil.example:{server.server_address[1]}"})
        assert get(rebound)[0] == 421  # a DNS-rebound name for this port gets nothing
        assert get(urllib.request.Request(f"{base}/api/rescan", method="POST"))[0] == 400  # a cross-site form
        status, _, body = get(urllib.request.Request(f"{base}/api/rescan", method="POST",
                                                     headers={"X-Requested-With": "test"}))
        assert status == 200 and json.loads(body)["ok"]
    finally:
        server.shutdown()
        server.server_close()
    empty = browse.serve(str(tmp_path), port=0)  # nothing materialised there yet
    threading.Thread(target=empty.serve_forever, daemon=True).start()
    try:
        status, _, body = get(f"http://127.0.0.1:{empty.server_address[1]}/api/overview")
        assert status == 404 and "materialise expert_shards first" in json.loads(body)["error"]
    finally:
        empty.shutdown()
        empty.server_close()


def wait_count(page, n: int) -> None:
    page.wait_for_function(f"Number(document.querySelector('#count').textContent.replace(/,/g, '')) === {n}")


def poison_first_url(root) -> str:
    """Rewrite the first sample's url to a same-length javascript: URL in place (sizes and counts unchanged)."""
    path = root / manifest_of(root)["clusters"]["0"][0]["path"]
    with open(path, "rb") as fh:
        key, fields = next(iter_samples(fh))
    url = json.loads(fields["json"])["url"]
    hostile = ("javascript:alert(1)//" + "x" * len(url))[:len(url)]
    data = path.read_bytes()
    assert len(url) >= 24 and data.count(f'"url": "{url}"'.encode()) == 1
    path.write_bytes(data.replace(f'"url": "{url}"'.encode(), f'"url": "{hostile}"'.encode()))
    return key


def test_shard_browser_in_a_real_browser(shards, tmp_path, chromium):
    """One command starts it; the page shows the totals, a filter changes the count, a detail view opens, and
    a damaged shard shows in health after a rescan."""
    root = copy_outputs_of(shards, tmp_path)
    poisoned = poison_first_url(root)  # a hostile source URL must not become a javascript: link
    index = shard_index.build_index(str(root))
    assert index.samples["url"].iat[0].startswith("javascript:")
    with browse_server(root, tmp_path / "browse.log", "--cache-dir", str(tmp_path / "cache")) as base, \
            chromium(1400, 1100) as page:
        page.goto(f"{base}/", wait_until="networkidle")
        total = len(index.samples)
        wait_count(page, total)
        assert page.locator("#total").text_content() == f"{total:,}"
        assert "All" in page.locator("#health").text_content()
        assert page.locator(".card").count() == min(48, total)
        shot(page, "browse-overview.jpg")

        cluster = int(index.samples["cluster"].value_counts().idxmin())
        expected = int((index.samples["cluster"] == cluster).sum())
        page.select_option("#f-cluster", str(cluster))
        wait_count(page, expected)
        assert page.locator(".card").count() == expected
        assert page.locator(".card .meta").first.text_content().startswith(f"cluster {cluster}")
        cut = float(index.samples.loc[index.samples["cluster"] == cluster, "aesthetic"].median())
        fewer = int(((index.samples["cluster"] == cluster) & (index.samples["aesthetic"] >= cut)).sum())
        page.fill("input[name=aesthetic_min]", str(cut))
        wait_count(page, fewer)
        assert 0 < fewer < expected

        page.locator(".card").first.click()
        page.locator("#detail").wait_for(state="visible")
        chosen = page.locator("#detail-table").text_content()
        row = index.samples[index.samples["image_id"] == page.locator(".card").first.get_attribute("data-id")].iloc[0]
        assert row["caption"] in chosen and row["url"] in chosen and row["image_id"] in chosen
        assert f"(carried; computed {row['aesthetic_computed']:.3f})" in chosen  # the computed score beside
        page.wait_for_function("document.querySelector('#detail-img').naturalWidth > 0")
        shot(page, "browse-detail.jpg")
        page.click("#close")

        page.select_option("#f-cluster", "")  # every filter back to any: the first card is the poisoned one
        page.fill("input[name=aesthetic_min]", "")
        wait_count(page, total)
        page.locator(f".card[data-id='{poisoned}']").click()
        page.locator("#detail").wait_for(state="visible")
        assert "javascript:" in page.locator("#detail-table").text_content()
        assert page.locator("#detail-table a").count() == 0
        page.click("#close")

        damaged = root / manifest_of(root)["clusters"]["0"][0]["path"]
        damaged.unlink()
        page.click("#rescan")
        page.locator("#health .problem").first.wait_for()
        health = page.locator("#health").text_content()
        assert damaged.relative_to(root).as_posix() in health and "missing" in health
        assert "readable, see Health" in page.locator("#unread").text_content()
        shot(page, "browse-health.jpg")


def test_index_and_health_on_object_storage(shards):
    """The same index and health over fsspec's memory:// (as on s3://)."""
    import uuid

    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"memory://browse-{uuid.uuid4().hex[:8]}"
    for path in shards.rglob("*"):
        if path.is_file():
            fs.pipe(f"{root}/{path.relative_to(shards).as_posix()}", path.read_bytes())
    index = shard_index.build_index(root)
    assert len(index.samples) == len(shard_index.build_index(str(shards)).samples)
    assert shard_index.shard_health(index) == []
    row = index.samples.iloc[3]
    assert shard_index.read_image(index, row["image_id"], shard_index.CropLookup(index.root))[:2] == b"\xff\xd8"
    first = manifest_of(shards)["clusters"]["0"][0]["path"]
    fs.rm(f"{root}/{first}")
    fs.pipe(f"{root}/expert_shards/cluster_0/stray.tar", b"x")
    problems = {p["path"]: p["problem"] for p in shard_index.shard_health(shard_index.build_index(root))}
    assert problems == {first: "missing", "expert_shards/cluster_0/stray.tar": "extra: on disk but not in the manifest"}
    fs.rm(root, recursive=True)


def test_allowed_host_serves_behind_another_name(tmp_path):
    """`--allowed-host example.internal`: requests sent to 127.0.0.1 but addressed to that name (any port, any
    case) are served, as behind a proxy; other names are still refused, loopback names still served."""
    with browse_server(tmp_path, tmp_path / "browse.log", "--no-cache", "--allowed-host", "example.internal",
                       "--allowed-host", "other.internal:9", ready="/") as base:
        port = int(base.rsplit(":", 1)[1])

        def status(host):
            return get(urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host}))[0]

        for host in (f"example.internal:{port}", "example.internal", "Example.Internal:443", "other.internal:9",
                     f"localhost:{port}", f"127.0.0.1:{port}"):
            assert status(host) == 200, host
        for host in (f"evil.example:{port}", f"example.internal.evil.example:{port}", f"other.internal:{port}",
                     f"xexample.internal:{port}", "example.internal:80:80", f"127.0.0.1:{port + 1}", ""):
            assert status(host) == 421, host
