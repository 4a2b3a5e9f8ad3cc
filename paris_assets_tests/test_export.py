"""python -m paris_assets.export: the committed outputs of the whole graph (the `trained` fixture) exported, then
read back with Hugging Face `datasets` offline, every field of every sample; the card's front matter against the
files; what a sample holds read from the shards; the refusals, none of which leaves the output half-made."""

import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # read by datasets when first imported

import numpy as np
import pandas as pd
import pytest
import yaml

from paris_assets import export
from paris_assets.lib.outputs.samples import decode_member
from paris_assets.lib.outputs.tars import TarShardWriter, iter_members
from paris_assets.settings import PROJECT_ROOT

OUTPUTS = ("expert_shards", "heldout", "filtered_images", "cluster_labels", "cluster_report")


def copy_outputs(data: Path, to: Path) -> Path:
    """The committed outputs the export reads, copied (test_training changes the fixture's data later)."""
    for name in OUTPUTS:
        shutil.copytree(data / name, to / name)
    shutil.copy(data / "pipeline_manifest.json", to / "pipeline_manifest.json")
    return to


@pytest.fixture(scope="module")
def data(trained, tmp_path_factory) -> Path:
    return copy_outputs(trained[3], tmp_path_factory.mktemp("export-data"))


@pytest.fixture(scope="module")
def exported(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "paris-demo"
    started = time.perf_counter()
    stats = export.export_dataset(str(data), out, log=lambda m: None)
    print(f"\nexport of {stats['splits']['train']['samples'] + stats['splits']['heldout']['samples']} samples: "
          f"{time.perf_counter() - started:.2f} s")
    return out, stats


def manifest_of(root: Path) -> dict:
    return json.loads((root / "pipeline_manifest.json").read_text())


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    head, sep, _ = card[4:].partition("\n---\n")
    assert sep, "the front matter is not closed"
    return yaml.safe_load(head)


def raw_samples(tar: Path) -> dict[str, dict]:
    """Every sample of a tar decoded member by member with the project's own reader (no datasets involved)."""
    samples: dict[str, dict] = {}
    with open(tar, "rb") as fh:
        for name, _, stream in iter_members(fh):
            key, _, member = name.partition(".")
            samples.setdefault(key, {})[member] = decode_member(member, stream.read())
    return samples


def test_the_layout_hard_links_the_committed_shards(data, exported):
    out, stats = exported
    manifest = manifest_of(data)
    for k, shards in manifest["clusters"].items():
        names = sorted(p.name for p in (out / "data" / "train" / f"cluster_{k}").iterdir())
        assert names == sorted(Path(s["path"]).name for s in shards)
        for s in shards:  # same filesystem: hard links, no byte copied
            assert os.stat(out / "data" / "train" / f"cluster_{k}" / Path(s["path"]).name).st_ino == \
                os.stat(data / s["path"]).st_ino
    assert sorted(p.name for p in (out / "data" / "heldout").iterdir()) == \
        sorted(Path(s["path"]).name for s in manifest["heldout"])
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data", "stats.json"]
    assert not list(out.parent.glob(f"{out.name}.*"))  # no staging folder left beside it
    assert json.loads((out / "stats.json").read_text()) == json.loads(json.dumps(stats, default=str))


def test_datasets_reads_every_field_of_every_sample(data, exported, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    out, stats = exported
    manifest = manifest_of(data)
    files = {"train": sorted(glob.glob(str(out / "data/train/cluster_*/*.tar"))),
             "heldout": sorted(glob.glob(str(out / "data/heldout/*.tar")))}
    started = time.perf_counter()
    ds = datasets.load_dataset("webdataset", data_files=files, cache_dir=str(tmp_path / "cache"))
    print(f"\nload_dataset: {time.perf_counter() - started:.2f} s")
    assert len(ds["train"]) == manifest["counts"]["expert_samples"] == stats["splits"]["train"]["samples"]
    assert len(ds["heldout"]) == manifest["counts"]["heldout_samples"] == stats["splits"]["heldout"]["samples"] > 0

    members = stats["sample"]["members"]
    assert {"latent.npy", "clip.npy", "txt", "json", "jpg"} <= set(members)  # the fixture ships jpg
    image_size = manifest["settings"]["filter"]["image_size"]
    assert members["latent.npy"]["shape"] == [4, image_size // 8, image_size // 8]
    assert members["latent.npy"]["dtype"] == "float16" and members["jpg"]["size"] == [image_size, image_size]
    for member, array in (("latent.npy", "latents"), ("clip.npy", "clip_text_embeddings")):  # the router's arrays
        index = json.loads((data / "heldout" / array / "index.json").read_text())
        assert members[member]["shape"] == index["shape"][1:]
    raw = {}
    for tar in files["train"] + files["heldout"]:
        raw.update(raw_samples(Path(tar)))
    seen: dict[str, list[str]] = {"train": [], "heldout": []}
    per_cluster = {c: 0 for c in stats["clusters"]}
    for split in ("train", "heldout"):
        for row in ds[split]:
            key = row["__key__"].rpartition("/")[2]
            seen[split].append(key)
            assert set(row) == set(members) | {"__key__", "__url__"}
            expected = raw[key]
            for name, member in members.items():
                value = row[name]
                if member["kind"] == "npy":
                    array = np.asarray(value, dtype=member["dtype"])
                    assert array.shape == tuple(member["shape"]) and np.isfinite(array).all()
                    assert np.array_equal(array, expected[name])  # the same values as the tar holds
                elif member["kind"] == "json":
                    assert set(value) == set(expected[name]) == set(stats["sample"]["json_fields"])
                    assert {f: v for f, v in value.items() if v is not None} == \
                        {f: v for f, v in expected[name].items() if v is not None}
                    assert value["image_id"] == key and value["caption"] == row["txt"]
                elif member["kind"] in ("txt", "text"):
                    assert isinstance(value, str) and value == expected[name]
                else:  # an image
                    assert value.size == tuple(member["size"])
                    assert np.array_equal(np.asarray(value.convert("RGB")), np.asarray(expected[name]))
            if split == "train":
                per_cluster[str(row["json"]["cluster"])] += 1
                assert f"/cluster_{row['json']['cluster']}/" in row["__url__"]
    assert per_cluster == {c: cl["train_samples"] for c, cl in stats["clusters"].items()}
    assert per_cluster == {c: sum(s["samples"] for s in sh) for c, sh in manifest["clusters"].items()}
    kept = pd.read_parquet(data / "filtered_images" / "kept.parquet")["image_id"]
    assert sorted(seen["train"] + seen["heldout"]) == sorted(kept)  # every kept image exactly once
    assert sorted(seen["heldout"]) == sorted(raw_key for tar in files["heldout"] for raw_key in raw_samples(Path(tar)))


def test_the_card_front_matter_and_its_globs(data, exported, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    out, stats = exported
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    from huggingface_hub import DatasetCard

    assert DatasetCard.load(out / "README.md").data.to_dict() == meta  # as the Hub's own client parses it
    assert meta["license"] == "other" and meta["license_name"] and meta["task_categories"] == ["text-to-image"]
    assert "webdataset" in meta["tags"] and meta["size_categories"] == ["n<1K"]
    declared = [{f["name"] for f in info["features"]} for info in meta["dataset_info"]]
    assert declared == [set(stats["sample"]["members"]) | {"__key__", "__url__"}] * len(meta["configs"])
    configs = {c["config_name"]: {f["split"]: f["path"] for f in c["data_files"]} for c in meta["configs"]}
    k = manifest_of(data)["k"]
    assert set(configs) == {"default"} | {f"cluster_{c}" for c in range(k)}
    on_disk = {p.relative_to(out).as_posix() for p in (out / "data").rglob("*.tar")}
    matched = lambda pattern: {Path(p).relative_to(out).as_posix() for p in glob.glob(str(out / pattern))}
    assert matched(configs["default"]["train"]) == {p for p in on_disk if p.startswith("data/train/")}
    assert matched(configs["default"]["heldout"]) == {p for p in on_disk if p.startswith("data/heldout/")} != set()
    for c in range(k):
        assert matched(configs[f"cluster_{c}"]["train"]) == {p for p in on_disk if p.startswith(f"data/train/cluster_{c}/")}

    # what datasets itself makes of the card's configs, from the folder
    whole = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert {s: len(whole[s]) for s in whole} == {s: stats["splits"][s]["samples"] for s in ("train", "heldout")}
    one = datasets.load_dataset(str(out), "cluster_1", cache_dir=str(tmp_path / "cache"))
    assert list(one) == ["train"] and len(one["train"]) == stats["clusters"]["1"]["train_samples"]
    assert {meta["cluster"] for meta in one["train"]["json"]} == {1}

    # the body states what stats.json holds
    report = json.loads((data / "cluster_report" / "report.json").read_text())
    rejected = pd.read_parquet(data / "filtered_images" / "rejected.parquet")["reason"].value_counts()
    assert stats["left_out"]["filtered_images"] == {r: int(n) for r, n in rejected.items()}
    for reason, n in rejected.items():
        assert f"| {reason} | {n:,} |" in card
    for c, cl in stats["clusters"].items():
        assert cl["top_terms"] == report["top_terms"][int(c)] and ", ".join(cl["top_terms"]) in card
        assert cl["heldout_samples"] == manifest_of(data)["heldout_split"]["per_cluster"][c]["heldout"]
    assert f"**{report['silhouette']:.4f}**" in card and f"**{report['davies_bouldin']:.4f}**" in card
    assert "Status: **passed**" in card and stats["gate"]["passed"] is True
    for role, model in manifest_of(data)["models"].items():
        assert f"| {role} | `{model['id']}` | `{model['revision']}` |" in card
    for field in stats["sample"]["json_fields"]:
        assert f"| `{field}` |" in card
    assert 'load_dataset("webdataset"' in card and "wds.WebDataset(" in card


def test_what_a_sample_holds_is_read_from_the_shard(tmp_path):
    """A member and a json field the project does not know yet show up by themselves (the graph gains assets)."""
    tar = tmp_path / "shard-000000.tar"
    with open(tar, "wb") as fh:
        writer = TarShardWriter(fh)
        for i, aesthetic in enumerate([None, 5.5]):
            writer.write(f"id{i}", {"latent.npy": export_npy(np.zeros((4, 8, 8), np.float16)),
                                    "quality.npy": export_npy(np.ones(3, np.float32)), "txt": b"a cat",
                                    "json": json.dumps({"image_id": f"id{i}", "aesthetic": aesthetic,
                                                        "aesthetic_computed": i == 1}).encode()})
        writer.close()
    sample = export.describe_sample(tar)
    assert sample["key"] == "id0"
    assert sample["members"]["quality.npy"] == {"kind": "npy", "shape": [3], "dtype": "float32"}
    assert sample["members"]["latent.npy"] == {"kind": "npy", "shape": [4, 8, 8], "dtype": "float16"}
    assert sample["json_fields"] == {"aesthetic": ["float", "null"], "aesthetic_computed": ["bool"],
                                     "image_id": ["string"]}


def export_npy(array: np.ndarray) -> bytes:
    from paris_assets.lib.outputs.shards import npy_bytes

    return npy_bytes(array)


@pytest.mark.parametrize("n,bucket", [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (2_008, "1K<n<10K"),
                                      (11_000_000, "10M<n<100M")])
def test_size_category(n, bucket):
    assert export.size_category(n) == bucket


@pytest.mark.parametrize("remove,named", [("pipeline_manifest.json", "pipeline_manifest.json"),
                                          ("expert_shards/_SUCCESS.json", "expert_shards"),
                                          ("heldout/_SUCCESS.json", "heldout"),
                                          ("expert_shards", "expert_shards")])
def test_refuses_a_data_dir_without_the_training_outputs(data, tmp_path, remove, named):
    root = copy_outputs(data, tmp_path / "data")
    target = root / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    out = tmp_path / "out"
    with pytest.raises(export.ExportRefused, match=f"no committed .*{named}.*Materialise expert_shards"):
        export.export_dataset(str(root), out)
    assert not out.exists() and list(tmp_path.glob("out*")) == []


def test_refuses_an_empty_data_dir_from_the_command_line(tmp_path):
    (tmp_path / "empty").mkdir()
    done = subprocess.run([sys.executable, "-m", "paris_assets.export", "--output", str(tmp_path / "out"),
                           "--data-dir", str(tmp_path / "empty")], capture_output=True, text=True, cwd=PROJECT_ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "export refused" in done.stderr and "expert_shards, heldout, pipeline_manifest.json" in done.stderr
    assert "Materialise expert_shards" in done.stderr and not (tmp_path / "out").exists()


def test_refuses_a_manifest_that_does_not_match_the_shards(data, tmp_path):
    root = copy_outputs(data, tmp_path / "data")
    manifest = manifest_of(root)
    manifest["clusters"]["0"] = manifest["clusters"]["0"][:-1]  # a shard the manifest no longer lists
    (root / "pipeline_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(export.ExportRefused, match="does not describe the committed shards"):
        export.export_dataset(str(root), tmp_path / "out")
    assert list(tmp_path.glob("out*")) == []


def test_refuses_a_report_of_another_clustering(data, tmp_path):
    root = copy_outputs(data, tmp_path / "data")
    report = json.loads((root / "cluster_report" / "report.json").read_text())
    report["sizes"] = report["sizes"][::-1] if report["sizes"] != report["sizes"][::-1] else [0] * len(report["sizes"])
    (root / "cluster_report" / "report.json").write_text(json.dumps(report))
    with pytest.raises(export.ExportRefused, match="another clustering.*cluster_labels\\+"):
        export.export_dataset(str(root), tmp_path / "out")
    assert list(tmp_path.glob("out*")) == []


def test_an_error_half_way_leaves_nothing(data, tmp_path):
    """The first expert shard is garbage of the right size: found while describing it, after every shard was
    placed in the staging folder. Neither DIR nor the staging folder is left."""
    root = copy_outputs(data, tmp_path / "data")
    first = root / manifest_of(root)["clusters"]["0"][0]["path"]
    first.write_bytes(b"\x07" * first.stat().st_size)
    with pytest.raises(export.ExportRefused, match="cannot read the first sample of .*materialise expert_shards"):
        export.export_dataset(str(root), tmp_path / "out")
    assert list(tmp_path.glob("out*")) == []


def test_a_non_empty_output_needs_force(data, exported, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(export.ExportRefused, match="not empty.*--force"):
        export.export_dataset(str(data), out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert export.main(["--output", str(out), "--data-dir", str(data), "--force", "--license", "cc-by-4.0"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data", "stats.json"]
    meta = front_matter((out / "README.md").read_text())
    assert meta["license"] == "cc-by-4.0" and "license_name" not in meta
    assert list(tmp_path.glob("out.*")) == []  # the old folder, renamed aside, is gone
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder is fine without --force
    assert export.export_dataset(str(data), empty, log=lambda m: None)["k"] == exported[1]["k"]


def test_copies_across_filesystems_and_checks_the_sha256(data, tmp_path):
    """/dev/shm is another filesystem here: no hard link is possible, so every shard is copied and checked."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(data).st_dev:
        pytest.skip("no second local filesystem to export to")
    out = Path(f"/dev/shm/paris-export-test-{os.getpid()}")
    try:
        said: list[str] = []
        stats = export.export_dataset(str(data), out, log=said.append)
        assert "shards copied" in said[-1]
        tars = sorted(out.rglob("*.tar"))
        assert len(tars) == stats["splits"]["train"]["shards"] + stats["splits"]["heldout"]["shards"]
        assert all(os.stat(t).st_nlink == 1 for t in tars)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    root = copy_outputs(data, tmp_path / "data")
    shard = root / manifest_of(root)["heldout"][0]["path"]
    blob = bytearray(shard.read_bytes())
    blob[-2048] ^= 1  # one bit in the padding: same size, another sha256
    shard.write_bytes(bytes(blob))
    try:
        with pytest.raises(export.ExportRefused, match="does not match its sha256"):
            export.export_dataset(str(root), out, log=lambda m: None)
        assert not out.exists() and list(shm.glob(f"{out.name}.*")) == []
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_reasons_from_every_part_and_from_cluster_labels(data, tmp_path):
    """With partitions, filtered_images is one committed folder per part; cluster_labels' duplicates (and
    dropped) tables add their reasons when present."""
    root = copy_outputs(data, tmp_path / "data")
    rejected = pd.read_parquet(root / "filtered_images" / "rejected.parquet")
    whole = root / "filtered_images"
    parts = root / "filtered_images.parts"
    half = len(rejected) // 2
    for i, (key, rows) in enumerate((("rows-000000000-000000040", rejected[:half]),
                                     ("rows-000000040-000000080", rejected[half:]))):
        (parts / key).mkdir(parents=True)
        rows.to_parquet(parts / key / "rejected.parquet", index=False)
        (parts / key / "_SUCCESS.json").write_text(json.dumps({"files": {"rejected.parquet": 0}}))
    shutil.rmtree(whole)
    parts.rename(whole)
    pd.DataFrame({"image_id": ["a", "b", "c"], "reason": ["duplicate_across_parts"] * 3,
                  "detail": ["x"] * 3}).to_parquet(root / "cluster_labels" / "duplicates.parquet", index=False)
    reasons = export.reason_counts(str(root))
    assert reasons["filtered_images"] == {r: int(n) for r, n in rejected["reason"].value_counts().items()}
    assert reasons["cluster_labels_duplicates"] == {"duplicate_across_parts": 3}
    dropped = root / "cluster_labels" / "dropped.parquet"  # cluster_labels' own drops (quality), when it has them
    if dropped.exists():
        assert reasons["cluster_labels_dropped"] == {r: int(n) for r, n in
                                                     pd.read_parquet(dropped)["reason"].value_counts().items()}
    else:
        assert "cluster_labels_dropped" not in reasons
    out = tmp_path / "out"
    export.export_dataset(str(root), out, log=lambda m: None)
    assert "`cluster_labels_duplicates`: 3 images" in (out / "README.md").read_text()


def test_refuses_an_output_that_overlaps_the_data_dir(data, tmp_path):
    root = copy_outputs(data, tmp_path / "data")
    for out in (root, root / "export", root / "expert_shards", tmp_path):
        with pytest.raises(export.ExportRefused, match="overlaps the data_dir"):
            export.export_dataset(str(root), out, force=True)
    assert manifest_of(root) == manifest_of(data) and (root / "expert_shards" / "_SUCCESS.json").exists()


def test_exports_from_an_fsspec_data_dir(data, tmp_path):
    """data_dir as a URL (memory:// here, the same code path as s3://): every shard read through fsspec, copied and
    checked against its sha256, the card's statistics the same as from the local copy."""
    import fsspec

    fs = fsspec.filesystem("memory")
    url = f"memory://export-test-{os.getpid()}"
    try:
        for path in sorted(data.rglob("*")):
            if path.is_file():
                fs.pipe_file(f"{url}/{path.relative_to(data).as_posix()}", path.read_bytes())
        said: list[str] = []
        remote = export.export_dataset(url, tmp_path / "out", log=said.append)
        local = export.export_dataset(str(data), tmp_path / "out-local", log=lambda m: None)
        assert "shards copied" in said[-1]
        drop = ("exported",)
        assert {k: v for k, v in remote.items() if k not in drop} == {k: v for k, v in local.items() if k not in drop}
        for tar in (tmp_path / "out").rglob("*.tar"):
            assert tar.read_bytes() == (tmp_path / "out-local" / tar.relative_to(tmp_path / "out")).read_bytes()
    finally:
        fs.rm(url, recursive=True)


PRESIGNED = ("https://bucket.s3.eu-west-3.amazonaws.com/laion/part-0.parquet?X-Amz-Algorithm=AWS4-HMAC-SHA256"
             "&X-Amz-Credential=AKIAEXAMPLE%2F20261208%2Feu-west-3%2Fs3%2Faws4_request&X-Amz-Signature=5iGnAtUrE")


def test_secrets_in_the_settings_are_withheld(data, tmp_path):
    """The card is meant to be published: a webhook URL, a URL's password, or a credential in a URL's query string
    or fragment (anywhere in the settings, however nested, or in a message) never reaches it."""
    root = copy_outputs(data, tmp_path / "data")
    manifest = manifest_of(root)
    settings = manifest["settings"]
    settings["alerts"]["webhook_url"] = "https://hooks.slack.com/services/T000/B000/sEcReT"
    settings["alerts"]["ui_base_url"] = "https://dagster.example.org/?auth=uIaUtH#k=fRaGmEnT"
    settings["source"]["path"] = PRESIGNED
    settings["quality"]["nsfw_weights"] = "https://huggingface.co/u/m/resolve/main/nsfw.zip?token=hf_ToKeN"
    settings["quality"]["protected"]["path"] = "s3://user:pAsSwOrD@bucket/coco/*.parquet"
    settings["gate"] = {"notes": ["mirrors", {"at": "see https://m.example/w.pth?sig=nEsTeD for the weights"}]}
    (root / "pipeline_manifest.json").write_text(json.dumps(manifest))
    stats = export.export_dataset(str(root), tmp_path / "out", log=lambda m: None)
    for name in ("README.md", "stats.json"):
        text = (tmp_path / "out" / name).read_text()
        for secret in ("sEcReT", "pAsSwOrD", "5iGnAtUrE", "AKIAEXAMPLE", "hf_ToKeN", "uIaUtH", "fRaGmEnT", "nEsTeD"):
            assert secret not in text, (name, secret)
    public = stats["settings"]
    assert public["alerts"]["webhook_url"] == export.WITHHELD
    assert public["alerts"]["ui_base_url"] == f"https://dagster.example.org/?{export.WITHHELD}#{export.WITHHELD}"
    assert public["source"]["path"] == f"https://bucket.s3.eu-west-3.amazonaws.com/laion/part-0.parquet?{export.WITHHELD}"
    assert public["quality"]["nsfw_weights"] == f"https://huggingface.co/u/m/resolve/main/nsfw.zip?{export.WITHHELD}"
    assert public["quality"]["protected"]["path"] == f"s3://{export.WITHHELD}@bucket/coco/*.parquet"
    assert public["gate"]["notes"][1]["at"] == f"see https://m.example/w.pth?{export.WITHHELD} for the weights"
    assert public["seed"] == settings["seed"] and public["clustering"] == settings["clustering"]  # the rest as it was


W = export.WITHHELD


@pytest.mark.parametrize("value,key,expected", [
    ("https://hooks.example/x", "webhook_url", W), (None, "webhook_url", None), (3, "pg_password", W),
    ("s3://bucket/a@b.parquet", "path", "s3://bucket/a@b.parquet"), ("data", "data_dir", "data"),
    ("https://h/x.parquet", "path", "https://h/x.parquet"), ("http://127.0.0.1:3000", "ui_base_url", "http://127.0.0.1:3000"),
    # user:password, split as HTTP clients split it: the user ends at the host's last @, the host at / ? or #
    ("https://u:p@host/x", "url", f"https://{W}@host/x"), ("https://u:p@ss@host", "url", f"https://{W}@host"),
    ("https://host/@user/x", "url", "https://host/@user/x"),
    # a presigned S3 URL, a Hub token, an auth parameter, a fragment: the query and the fragment go, whatever they hold
    (PRESIGNED, "path", f"https://bucket.s3.eu-west-3.amazonaws.com/laion/part-0.parquet?{W}"),
    ("https://huggingface.co/x/resolve/main/w.pth?token=hf_abc", "nsfw_weights",
     f"https://huggingface.co/x/resolve/main/w.pth?{W}"),
    ("https://ui.example/?auth=abc", "ui_base_url", f"https://ui.example/?{W}"),
    ("https://ui.example?auth=abc", "ui_base_url", f"https://ui.example?{W}"),
    ("https://ui.example/#access_token=abc", "ui_base_url", f"https://ui.example/#{W}"),
    ("https://ui.example/p#t=a?b", "ui_base_url", f"https://ui.example/p#{W}"),
    ("https://ui.example/?#", "ui_base_url", "https://ui.example/?#"),  # nothing to withhold
    ("https://a:b@ui.example/p?q=1#f", "ui_base_url", f"https://{W}@ui.example/p?{W}#{W}"),
    # nested, and inside text: every string is read
    ({"a": [{"b": "https://h/p?token=hf_abc"}]}, "", {"a": [{"b": f"https://h/p?{W}"}]}),
    (["x https://h?k=1 and s3://u:p@b/k"], "mirrors", [f"x https://h?{W} and s3://{W}@b/k"]),
])
def test_public_settings(value, key, expected):
    assert export.public_settings(value, key) == expected
    assert export.public_settings(expected, key) == expected  # the card reads stats that were made public already


def test_declared_features_load_a_field_null_in_the_first_samples(tmp_path, monkeypatch):
    """datasets infers a webdataset's types from its first five samples: a json field null in all of them and set
    later fails the whole load. The card declares the features describe_sample found, so the folder loads."""
    import datasets

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    folder = tmp_path / "ds"
    tar = folder / "data" / "train" / "cluster_0" / "shard-000000.tar"
    tar.parent.mkdir(parents=True)
    with open(tar, "wb") as fh:
        writer = TarShardWriter(fh)
        for i in range(8):
            writer.write(f"id{i}", {"latent.npy": export_npy(np.full((2, 3), i, np.float16)), "txt": b"a cat",
                                    "json": json.dumps({"image_id": f"id{i}", "aesthetic": None if i < 6 else 5.5,
                                                        "width": 64 + i}).encode()})
        writer.close()
    sample = export.describe_sample(tar)
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train/cluster_*/*.tar"}]}]
    undeclared = yaml.safe_dump({"configs": configs}, sort_keys=False)
    (folder / "README.md").write_text(f"---\n{undeclared}---\n")
    with pytest.raises(datasets.exceptions.DatasetGenerationError):  # what the declaration is for
        datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache-1"))
    declared = yaml.safe_dump({"configs": configs, "dataset_info": [{"config_name": "default",
                                                                     **export.hub_features(sample)}]}, sort_keys=False)
    (folder / "README.md").write_text(f"---\n{declared}---\n")
    rows = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache-2"))["train"]
    assert [r["json"]["aesthetic"] for r in rows] == [None] * 6 + [5.5, 5.5]
    assert [r["json"]["width"] for r in rows] == list(range(64, 72))
    assert np.asarray(rows[7]["latent.npy"], np.float16).tolist() == np.full((2, 3), 7, np.float16).tolist()


def test_no_features_declared_for_a_json_type_it_cannot_declare():
    sample = {"members": {"json": {"kind": "json"}}, "json_fields": {"tags": ["list"]}}
    assert export.hub_features(sample) is None
    sample["json_fields"] = {"score": ["float", "int", "null"], "never_set": ["null"]}
    assert export.hub_features(sample) is None
    sample["json_fields"] = {"score": ["float", "int", "null"]}
    assert export.hub_features(sample)["features"][0]["struct"] == [{"name": "score", "dtype": "float64"}]


def test_the_export_and_its_data_dir_verify_against_the_same_roots(data, exported, tmp_path):
    """The graph's manifest records a Merkle root per expert and the held-out set's; stats.json and the card carry
    the same roots; python -m paris_assets.verify passes both folders and names a shard with one flipped byte."""
    from paris_assets import verify

    out, stats = exported
    roots = manifest_of(data)["merkle_roots"]
    assert stats["verification"]["roots"] == {"clusters": roots["clusters"], "heldout": roots["heldout"]}
    assert all(stats["clusters"][c]["merkle_root"] == root for c, root in roots["clusters"].items())
    card = (out / "README.md").read_text()
    assert "## Verifying the data" in card and all(root in card for root in roots["clusters"].values())
    for root in (data, out):
        assert verify.verify(root)[0] == []
    copy = Path(shutil.copytree(out, tmp_path / "copy"))
    shard = sorted(copy.glob("data/train/cluster_0/*.tar"))[0]
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x80
    shard.write_bytes(bytes(raw))
    findings, summary = verify.verify(copy)
    assert [(f.kind, f.path) for f in findings] == [("changed", shard.relative_to(copy).as_posix())]
    assert summary["roots"]["0"]["found"] != roots["clusters"]["0"]
