"""The Dagster UI in a real browser (Debian's chromium driven by playwright), as a user meets it.

`dagster dev` on 127.0.0.1 with a temporary DAGSTER_HOME and demo settings: every asset and check is found in
the UI; "Materialize all" clicked in the UI succeeds; cluster_report shows its checks passed and its grids.
Then the failure path: the settings file gets an impossible min_silhouette, the definitions are reloaded
from the UI, the gate and what it guards are launched from the UI, the check shows failed, expert_shards is
not materialised, and the alert sensor writes the failure to alerts.jsonl; a later run of only expert_shards and
router_pairs launched from the UI is refused and writes nothing. Screenshots go to
test-artifacts/ (docs/screenshots/ in the README are made the same way, by `make screenshots`)."""

import json
import re
import time

import pytest

from .builders import (chromium_page, dagster_dev, dagster_site, graphql, latest_run, materialisations,
                       require_chromium, shot, wait_for_run)

ASSETS = {"raw_images", "filtered_images", "captions", "clip_embeddings", "dinov2_embeddings", "latents",
          "clip_image_embeddings", "quality_scores", "protected_images", "cluster_labels", "cluster_report",
          "expert_shards", "router_pairs"}
CHECKS = {"clip_embeddings": {"clip_embeddings_valid"}, "dinov2_embeddings": {"dinov2_embeddings_valid"},
          "clip_image_embeddings": {"clip_image_embeddings_valid"},
          "latents": {"latents_valid"}, "expert_shards": {"shards_match_manifest"},
          "router_pairs": {"router_pairs_aligned"},
          "cluster_report": {"silhouette_above_minimum", "silhouette_not_dropped", "no_empty_cluster",
                             "davies_bouldin_below_maximum", "largest_cluster_below_maximum"}}


def check_description(base: str, asset: str, check: str) -> str:
    query = ('{ assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks { checks { name description } '
             '} } } }')
    node = next(n for n in graphql(base, query)["assetNodes"] if n["assetKey"]["path"] == [asset])
    return next(c["description"] for c in node["assetChecksOrError"]["checks"] if c["name"] == check)


def ui_settings(base: str) -> str:
    return ("data_dir: data\nexecutor: in_process\nsource: {kind: demo, demo_size: 64}\n"
            "ingest: {processes: 1, threads: 8}\nfilter: {processes: 1}\ncaptions: {source: alt_text}\n"
            f"alerts: {{ui_base_url: '{base}'}}\n")


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory):
    """`dagster dev` over ui_settings in a temp folder and one chromium page, for the module's three tests (in
    order: each acts on what the one before left)."""
    require_chromium()
    site = dagster_site(tmp_path_factory.mktemp("ui"), ui_settings)
    with dagster_dev(site), chromium_page() as page:
        yield site.base, site.root, page


def test_materialise_everything_from_the_ui(dagster_ui):
    base, root, page = dagster_ui
    page.goto(f"{base}/asset-groups", wait_until="networkidle")
    page.get_by_text("embeddings", exact=True).last.wait_for(timeout=60_000)  # the graph, groups collapsed
    page.locator("button:has([aria-label=settings])").last.click()  # the graph's settings menu
    page.get_by_role("menuitem", name="Expand all groups").click()
    page.keyboard.press("Escape")
    for asset in sorted(ASSETS):  # a long name is middle-truncated on its node: "clip_i…_embeddings"
        truncated = re.compile(f"^{re.escape(asset[:4])}[a-z_]*…[a-z_]*{re.escape(asset[-6:])}$")
        page.get_by_text(asset, exact=True).or_(page.get_by_text(truncated)).last.wait_for(timeout=60_000)
    nodes = graphql(base, "{ assetNodes { assetKey { path } groupName kinds "
                          "assetChecksOrError { ... on AssetChecks { checks { name } } } } }")["assetNodes"]
    assert {n["assetKey"]["path"][0] for n in nodes} == ASSETS
    assert all(n["kinds"] and n["groupName"] in ("ingest", "embeddings", "clustering", "training") for n in nodes)
    found = {n["assetKey"]["path"][0]: {c["name"] for c in n["assetChecksOrError"]["checks"]} for n in nodes}
    assert {k: v for k, v in found.items() if v} == CHECKS
    for asset, checks in CHECKS.items():  # and each check is on its asset's Checks tab
        page.goto(f"{base}/assets/{asset}?view=checks", wait_until="networkidle")
        for check in checks:  # long names are middle-truncated on screen; the full name is in the page
            page.get_by_text(check, exact=True).first.wait_for(state="attached", timeout=30_000)

    page.goto(f"{base}/asset-groups", wait_until="networkidle")
    page.get_by_role("button", name="Materialize all").click()  # launched from the UI, not the CLI
    run = wait_for_run(base, after=None)
    assert run["status"] == "SUCCESS", (root / "dagster-dev.log").read_text()[-3000:]
    assert {a["path"][0] for a in run["assetSelection"]} == ASSETS
    page.goto(f"{base}/asset-groups", wait_until="networkidle")  # groups stay expanded
    page.get_by_text("expert_shards", exact=True).last.wait_for(timeout=60_000)
    page.wait_for_timeout(1000)  # the freshly fetched statuses
    shot(page, "ui-asset-graph.jpg")

    page.goto(f"{base}/assets/filtered_images", wait_until="networkidle")  # metadata: counts, reasons, previews
    page.get_by_text("dropped_by_reason", exact=True).first.wait_for(timeout=60_000)
    page.get_by_text("kept_fraction", exact=True).first.scroll_into_view_if_needed()
    shot(page, "ui-filtered-images-metadata.jpg")

    page.goto(f"{base}/assets/cluster_report?view=checks", wait_until="networkidle")
    page.get_by_text("Passed").first.wait_for(timeout=60_000)
    assert page.get_by_text("Succeeded").count() == len(CHECKS["cluster_report"])
    shot(page, "ui-cluster-report-checks.jpg")

    page.goto(f"{base}/assets/cluster_report", wait_until="networkidle")
    page.get_by_role("row").filter(has_text="grids").get_by_text("[Show Markdown]").click()
    grids = page.locator("img[alt^='cluster ']")
    grids.first.wait_for(timeout=30_000)
    k = json.loads((root / "data" / "cluster_report" / "report.json").read_text())["k"]
    assert grids.count() == k
    assert all(w > 0 for w in grids.evaluate_all("imgs => imgs.map(i => i.naturalWidth)"))  # decoded, not broken
    shot(page, "ui-cluster-grids.jpg")
    page.keyboard.press("Escape")

    page.goto(f"{base}/assets/latents?view=checks", wait_until="networkidle")  # the VAE check's side-by-side
    page.get_by_text("latents_valid").first.wait_for(timeout=30_000)
    shot(page, "ui-latents-check.jpg")
    page.get_by_role("row").filter(has_text="reconstructions").get_by_text("[Show Markdown]").click()
    page.locator("img[alt*='reconstructions']").first.wait_for(timeout=30_000)
    shot(page, "ui-latents-reconstructions.jpg")
    page.keyboard.press("Escape")
    assert (root / "data" / "pipeline_manifest.json").exists()


def test_failed_gate_from_the_ui(dagster_ui):
    base, root, page = dagster_ui
    before = latest_run(base)
    assert before, "test_materialise_everything_from_the_ui runs first: the gate is judged against its outputs"
    before = before["runId"]
    shards_before = materialisations(base, "expert_shards")
    settings = root / "paris.yaml"  # what a user does: edit the settings file, then reload in the UI
    settings.write_text(settings.read_text() + "report: {min_silhouette: 0.99}\n")
    page.goto(f"{base}/asset-groups", wait_until="networkidle")
    page.get_by_role("button", name="Reload definitions").click()
    for _ in range(120):  # the check's description states the threshold it was built with
        if "(0.99)" in check_description(base, "cluster_report", "silhouette_above_minimum"):
            break
        time.sleep(1)
    else:
        raise AssertionError("the definitions were not reloaded with the new settings")

    page.goto(f"{base}/asset-groups", wait_until="networkidle")
    page.locator(".CodeMirror").first.click()  # the asset selection box
    page.keyboard.type("key:cluster_report+")
    page.keyboard.press("Enter")
    page.wait_for_url("**key%3Acluster_report%2B**")
    page.get_by_role("button", name="Materialize all").click()  # all assets in view: the gate and what it guards
    run = wait_for_run(base, after=before)
    assert run["status"] == "FAILURE"
    assert {a["path"][0] for a in run["assetSelection"]} == {"cluster_report", "expert_shards", "router_pairs"}
    steps = {s["stepKey"]: s["status"] for s in run["stepStats"]}
    assert steps["cluster_report"] == "SUCCESS" and steps["cluster_report_silhouette_above_minimum"] == "FAILURE"
    assert steps.get("expert_shards") != "SUCCESS" and steps.get("router_pairs") != "SUCCESS"
    assert materialisations(base, "expert_shards") == shards_before

    page.goto(f"{base}/assets/cluster_report?view=checks", wait_until="networkidle")
    page.get_by_text("Failed", exact=True).first.wait_for(timeout=60_000)
    page.get_by_text("silhouette_above_minimum", exact=True).first.click()
    page.get_by_text("(0.99)").first.wait_for(timeout=30_000)
    shot(page, "ui-gate-failed.jpg")
    page.goto(f"{base}/runs/{run['runId']}", wait_until="networkidle")
    page.get_by_text("silhouette_above_minimum").first.wait_for(timeout=60_000)
    shot(page, "ui-gate-failed-run.jpg")

    alerts_file = root / "data" / "alerts.jsonl"  # the sensors tick every 30 s in the daemon dagster dev runs
    deadline, kinds = time.time() + 180, set()
    while time.time() < deadline:
        alerts = [json.loads(line) for line in alerts_file.read_text().splitlines()] if alerts_file.exists() else []
        mine = [a for a in alerts if a.get("run_id") == run["runId"]]
        kinds = {(a["kind"], a.get("check")) for a in mine}
        if ("check_failed", "silhouette_above_minimum") in kinds and any(k == "run_failed" for k, _ in kinds):
            break
        time.sleep(3)
    assert ("check_failed", "silhouette_above_minimum") in kinds, kinds
    assert any(k == "run_failed" for k, _ in kinds), kinds
    alert = next(a for a in mine if a["check"] == "silhouette_above_minimum")
    assert alert["severity"] == "ERROR" and alert["threshold"] == 0.99 and alert["value"] < 0.99
    assert alert["run_url"] == f"{base}/runs/{run['runId']}"


def test_a_later_run_from_the_ui_cannot_ship_the_rejected_clustering(dagster_ui):
    """The gate holds across runs: after the failed gate, a user selects just expert_shards and router_pairs and
    clicks Materialize all. The run fails with the refusal naming the failed check; nothing is written."""
    base, root, page = dagster_ui
    before = latest_run(base)["runId"]
    shards_before = materialisations(base, "expert_shards")
    manifest_before = (root / "data" / "pipeline_manifest.json").read_text()
    page.goto(f"{base}/asset-groups", wait_until="networkidle")
    page.locator(".CodeMirror").first.click()
    page.keyboard.type("key:expert_shards or key:router_pairs")
    page.keyboard.press("Enter")
    page.wait_for_url("**key%3Aexpert_shards**")
    page.get_by_role("button", name="Materialize all").click()
    run = wait_for_run(base, after=before)
    assert run["status"] == "FAILURE"
    assert {a["path"][0] for a in run["assetSelection"]} == {"expert_shards", "router_pairs"}
    steps = {s["stepKey"]: s["status"] for s in run["stepStats"]}
    assert steps["expert_shards"] == "FAILURE" and steps["router_pairs"] == "FAILURE", steps
    assert materialisations(base, "expert_shards") == shards_before
    assert (root / "data" / "pipeline_manifest.json").read_text() == manifest_before
    page.goto(f"{base}/runs/{run['runId']}", wait_until="networkidle")
    page.get_by_text("expert_shards refused").first.wait_for(timeout=60_000)
    page.get_by_text("silhouette_above_minimum failed").first.wait_for(timeout=30_000)
    shot(page, "ui-gate-refused-later-run.jpg")
