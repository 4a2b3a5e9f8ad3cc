"""bench_video on tiny inputs: the report's structure and sanity (positive rates, the clips both paths keep, every
model stage over every kept clip), never its timings."""

from pathlib import Path

import pytest

from paris_assets.bench.video import STAGES, bench_decode, bench_stages, demo_clips, naive_clip, real_videos, write_kept
from paris_assets.lib.images.decode import Rejected
from paris_assets.lib.video.decode import VideoParams, decode_clip

PARAMS = VideoParams(image_size=128)  # 128, not less: libx264's 4:4:4 output below 120 px is not reproducible


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench_video")
    files, captions = demo_clips(folder / "demo", n=6)
    return folder, files, captions


@pytest.mark.parametrize("name, reason", [("static_0.mp4", "static"), ("short_0.mp4", "too_short"),
                                          ("tiny_0.mp4", "too_small"), ("page_0.mp4", "undecodable")])
def test_the_naive_path_refuses_what_it_checks(demo, name, reason):
    with pytest.raises(Rejected) as refused:
        naive_clip((demo[0] / "demo" / "files" / name).read_bytes(), PARAMS)
    assert refused.value.reason == reason


def test_report_on_a_few_demo_clips_and_dagster_world(demo):
    folder, files, captions = demo
    real = real_videos()[:1]
    assert real[0].name == "Dagster_world.mp4" and real[0].exists()
    captions = {**captions, real[0].name: "frames from Dagster_world"}
    report = bench_decode({"demo": files[:4], "real": real}, PARAMS, processes=2, also_sizes=(128,), rounds=1)

    assert [r["set"] for r in report["rows"]] == ["demo", "real"]
    for row in report["rows"]:
        for key in ("ours_clips_per_s", "naive_clips_per_s", "ours_mb_per_s", "naive_mb_per_s", "ours_cpu_ms",
                    "naive_cpu_ms", "ratio"):
            assert row[key] > 0, key
        # these clean clips pass both paths' checks: the same files kept
        assert row["ours_kept"] == row["naive_kept"] and len(row["ours_kept"]) == row["clips"]
        assert row["only_ours_refused"] == {} and row["only_naive_refused"] == {}
    for (how, name), results in report["clips"].items():
        for r in results:
            assert decode_clip(r["stored"]).shape == (17, 128, 128, 3), (how, r["path"])
    resized = report["resized"][128]
    assert resized["clips_per_s"] > 0 and len(resized["results"]) == 5

    stored = {Path(r["path"]).name: r["stored"] for r in resized["results"]}
    kept = write_kept(folder / "kept", stored, captions)
    rows = bench_stages(folder / "kept", kept, 128)
    assert [r["stage"] for r in rows] == [label for label, *_ in STAGES]
    for r in rows:
        assert r["rows"] == 5 and r["rows_per_s"] > 0 and 0 < r["model_share"] <= 1, r["stage"]
        assert all(shape[0] == 5 for shape in r["shapes"].values())
    assert rows[-1]["shapes"]["latents"] == [5, 4, 5, 16, 16]  # 17 frames -> 5 latent frames, 128 px / 8
