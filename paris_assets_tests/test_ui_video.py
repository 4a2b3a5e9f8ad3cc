"""media: video in the real UI and the real shard browser: `dagster dev` over a video settings file, "Materialize
all" clicked in Debian's chromium materialises the whole video graph (every asset says it holds clips), the
latents check shows its clip reconstructions, and the shard browser started on the same data shows a clip's
animated preview."""

import pytest

from .builders import (browse_server, chromium_page, dagster_dev, dagster_site, graphql, require_chromium, shot,
                       wait_for_run)
from .test_ui import ASSETS


@pytest.fixture(scope="module")
def video_ui(tmp_path_factory):
    require_chromium()
    site = dagster_site(tmp_path_factory.mktemp("ui_video"), (
        "media: video\ndata_dir: data\nexecutor: in_process\nsource: {kind: demo, demo_size: 16}\n"
        "ingest: {processes: 1, threads: 8}\nfilter: {processes: 1, image_size: 128}\n"
        "video: {scene_cuts: reject}\ncaptions: {source: alt_text}\nclustering: {k: 3}\n"
        "shards: {heldout_fraction: 0.2, include_mp4: true}\n"))
    with dagster_dev(site), chromium_page() as page:
        yield site.base, site.root, page


def test_the_video_graph_from_the_ui_and_a_clip_in_the_shard_browser(video_ui):
    base, root, page = video_ui
    nodes = graphql(base, "{ assetNodes { assetKey { path } kinds description } }")["assetNodes"]
    assert {n["assetKey"]["path"][0] for n in nodes} == ASSETS  # the same asset names as for images
    by_name = {n["assetKey"]["path"][0]: n for n in nodes}
    assert "video" in by_name["latents"]["kinds"] and "HunyuanVideo" in by_name["latents"]["description"]
    assert "clips" in by_name["filtered_images"]["description"]

    page.goto(f"{base}/asset-groups", wait_until="networkidle")
    page.get_by_role("button", name="Materialize all").click()
    run = wait_for_run(base, after=None)
    assert run["status"] == "SUCCESS", (root / "dagster-dev.log").read_text()[-3000:]
    assert {a["path"][0] for a in run["assetSelection"]} == ASSETS

    page.goto(f"{base}/assets/latents?view=checks", wait_until="networkidle")
    page.get_by_text("latents_valid").first.wait_for(timeout=30_000)
    page.get_by_role("row").filter(has_text="reconstructions").get_by_text("[Show Markdown]").click()
    grid = page.locator("img[alt*='reconstructions']").first
    grid.wait_for(timeout=30_000)
    assert grid.evaluate("i => i.naturalWidth") > 0 and "frames left to right" in grid.get_attribute("alt")
    shot(page, "ui-video-latents-reconstructions.jpg")
    page.keyboard.press("Escape")

    with browse_server(root / "data", root / "browse.log", "--no-cache") as shards:
        page.goto(f"{shards}/", wait_until="networkidle")
        page.locator(".card.clip").first.wait_for(timeout=30_000)
        assert "media video" in page.locator("#media").text_content()
        page.locator(".card.clip").first.click()
        page.locator("#detail").wait_for(state="visible")
        page.wait_for_function("document.querySelector('#detail-img').naturalWidth === 128")
        src = page.locator("#detail-img").get_attribute("src")
        frames = page.evaluate("""async (src) => {
            const r = await fetch(src);
            const d = new ImageDecoder({data: r.body, type: r.headers.get('Content-Type')});
            await d.tracks.ready;
            return d.tracks.selectedTrack.frameCount; }""", src)
        assert frames == 17  # animated: the clip's frames, as the browser itself decodes them
        assert "17 frames at 8 fps" in page.locator("#detail-table").text_content()
        shot(page, "browse-video-demo-detail.jpg")
