"""The Dagster UI in a real browser (Debian's chromium driven by playwright): the graph loads, a
materialisation of the whole graph is launched from the UI itself and succeeds, and cluster_report's checks
show as passed. Screenshots go to test-artifacts/."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from paris_assets.settings import PROJECT_ROOT

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
# dagster dev started from a non-interactive shell ignores SIGINT/SIGTERM unless they are reset first
LAUNCHER = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
            "signal.signal(signal.SIGTERM, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(base: str, query: str) -> dict:
    request = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=30).read())["data"]


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    root = tmp_path_factory.mktemp("ui")
    (root / "home").mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", root / "home" / "dagster.yaml")
    (root / "paris.yaml").write_text("data_dir: data\nsource: {kind: demo, demo_size: 64}\n"
                                     "ingest: {processes: 1, threads: 8}\nfilter: {processes: 1}\n"
                                     "captions: {source: alt_text}\n")
    port = free_port()
    env = dict(os.environ, DAGSTER_HOME=str(root / "home"), PARIS_CONFIG=str(root / "paris.yaml"), HF_HUB_OFFLINE="1")
    dagster = Path(sys.executable).parent / "dagster"
    log = open(root / "dagster-dev.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port),
                             "-m", "paris_assets.definitions"], cwd=PROJECT_ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(f"{base}/server_info", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, (root / "dagster-dev.log").read_text()[-3000:]
                time.sleep(1)
        yield base, root
    finally:
        proc.send_signal(signal.SIGTERM)  # only the process this test started, by its PID
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_materialise_everything_from_the_ui(dagster_ui):
    from playwright.sync_api import sync_playwright

    base, root = dagster_ui
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{base}/asset-groups", wait_until="networkidle")
        for group in ("ingest", "embeddings", "clustering", "training"):
            page.get_by_text(group, exact=True).first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "ui-asset-graph.png"))
        nodes = graphql(base, "{ assetNodes { assetKey { path } } }")["assetNodes"]
        assert {n["assetKey"]["path"][0] for n in nodes} == {
            "raw_images", "filtered_images", "captions", "clip_embeddings", "dinov2_embeddings", "latents",
            "cluster_labels", "cluster_report", "expert_shards", "router_pairs"}

        page.get_by_role("button", name="Materialize all").click()  # launched from the UI, not the CLI
        status = None
        for _ in range(300):
            runs = graphql(base, "{ runsOrError { ... on Runs { results { runId status } } } }")["runsOrError"]["results"]
            status = runs[0]["status"] if runs else None
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(2)
        assert status == "SUCCESS", (root / "dagster-dev.log").read_text()[-3000:]

        page.goto(f"{base}/assets/cluster_report?view=checks", wait_until="networkidle")
        for check in ("silhouette_above_minimum", "silhouette_not_dropped", "no_empty_cluster"):
            page.get_by_text(check).first.wait_for(timeout=60_000)
        page.get_by_text("Passed").first.wait_for(timeout=60_000)
        assert page.get_by_text("Succeeded").count() == 5
        page.screenshot(path=str(ARTIFACTS / "ui-cluster-report-checks.png"))
        browser.close()
    assert (root / "data" / "pipeline_manifest.json").exists()
