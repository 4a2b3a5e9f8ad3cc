"""The quality gate in a real instance: checks passing and failing, the drop check across materialisations,
alerts reaching a real HTTP receiver on 127.0.0.1 and alerts.jsonl, a change of K, and the gate holding across
runs (Python and the command line; the browser test does it from the UI)."""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml
from dagster import AssetKey, DagsterInstance, build_run_status_sensor_context, build_sensor_context

from paris_assets.definitions import build_defs
from paris_assets.settings import PROJECT_ROOT, parse_settings

UPSTREAM = ["raw_images", "filtered_images", "captions", "clip_embeddings", "dinov2_embeddings", "latents"]
CLUSTER = [AssetKey("cluster_labels"), AssetKey("cluster_report")]


@pytest.fixture(scope="module")
def receiver():
    bodies = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def world(tmp_path_factory, receiver):
    root = tmp_path_factory.mktemp("gate")
    home = root / "home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    instance = DagsterInstance.local_temp(str(home))
    base = {"data_dir": str(root / "data"), "source": {"kind": "demo", "demo_size": 64},
            "ingest": {"processes": 1, "threads": 8}, "filter": {"processes": 1}, "captions": {"source": "alt_text"},
            "alerts": {"webhook_url": receiver[0], "ui_base_url": "http://ui.example:3000"}}

    def settings(**overrides):
        raw = json.loads(json.dumps(base))
        for section, values in overrides.items():
            raw.setdefault(section, {}).update(values)
        return parse_settings(raw, base_dir=root)

    def run(s, selection=None, run_config=None):
        job = build_defs(s).resolve_implicit_global_asset_job_def()
        return job.execute_in_process(instance=instance, asset_selection=selection, run_config=run_config,
                                      raise_on_error=False)

    first = run(settings(clustering={"k": 8}))
    assert first.success
    return settings, run, instance, root / "data", first


def checks_of(result) -> dict:
    return {e.event_specific_data.check_name: e.event_specific_data for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def materialisations(instance, key: str) -> int:
    return len(instance.fetch_materializations(AssetKey(key), limit=100).records)


def test_gate_passes_on_the_demo(world):
    _settings, _run, instance, _data, first = world
    gate = {name: e.passed for name, e in checks_of(first).items() if e.asset_key == AssetKey("cluster_report")}
    assert gate == {"silhouette_above_minimum": True, "silhouette_not_dropped": True, "no_empty_cluster": True,
                    "davies_bouldin_below_maximum": True, "largest_cluster_below_maximum": True}
    report = instance.get_latest_materialization_event(AssetKey("cluster_report")).asset_materialization.metadata
    assert report["k"].value == 8 and report["silhouette"].value > 0.02
    # what is computed, said as it is: the silhouette over every image, Davies-Bouldin on a sample
    assert report["silhouette_rows"].value == report["images"].value
    assert 0 < report["davies_bouldin_sample"].value <= report["images"].value
    assert "data:image/jpeg;base64," in report["grids"].value


def test_failed_check_blocks_and_alerts(world, receiver):
    settings, run, instance, data, _first = world
    defs = build_defs(settings(clustering={"k": 8}, report={"min_silhouette": 0.99}))
    sensor = defs.get_sensor_def("check_failure_alerts")
    start = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=None))  # the first tick: from now on
    assert start.cursor and not (data / "alerts.jsonl").exists()  # history (passed checks) is not replayed
    result = run(settings(clustering={"k": 8}, report={"min_silhouette": 0.99}), selection=CLUSTER)
    assert not result.success  # a blocking ERROR check fails the run
    failed = checks_of(result)["silhouette_above_minimum"]
    assert not failed.passed and failed.metadata["threshold"].value == 0.99
    # the checked asset itself stays materialised: the report explains the failure
    assert materialisations(instance, "cluster_report") == 2

    sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=start.cursor))
    alerts = [json.loads(line) for line in (data / "alerts.jsonl").read_text().splitlines()]
    alert = next(a for a in alerts if a["check"] == "silhouette_above_minimum")
    assert alert["asset"] == "cluster_report" and alert["threshold"] == 0.99 and alert["value"] > 0
    assert alert["run_url"] == f"http://ui.example:3000/runs/{result.run_id}"
    _url, bodies = receiver
    assert any("silhouette_above_minimum" in b["text"] and b["blocks"] for b in bodies)

    # the failed run itself is an alert too
    context = build_run_status_sensor_context(
        sensor_name="run_failure_alerts", dagster_instance=instance, dagster_run=instance.get_run_by_id(result.run_id),
        dagster_event=result.get_run_failure_event()).for_run_failure()
    defs.get_sensor_def("run_failure_alerts")(context)
    alerts = [json.loads(line) for line in (data / "alerts.jsonl").read_text().splitlines()]
    run_alert = next(a for a in alerts if a["kind"] == "run_failed")
    assert run_alert["run_id"] == result.run_id and "silhouette_above_minimum" in run_alert["message"]


def test_silhouette_drop_against_the_previous_materialisation(world):
    settings, run, instance, _data, _first = world
    run(settings(clustering={"k": 8}), selection=CLUSTER)
    before = instance.get_latest_materialization_event(AssetKey("cluster_report")).asset_materialization
    result = run(settings(clustering={"k": 2}, report={"max_silhouette_drop": 0.0}), selection=CLUSTER)
    check = checks_of(result)["silhouette_not_dropped"]
    after = instance.get_latest_materialization_event(AssetKey("cluster_report")).asset_materialization
    drop = before.metadata["silhouette"].value - after.metadata["silhouette"].value
    assert check.metadata["previous"].value == pytest.approx(before.metadata["silhouette"].value)
    assert check.metadata["drop"].value == pytest.approx(drop)
    assert check.passed == (drop <= 0.0)
    assert drop > 0 and not check.passed


def test_changing_k_reruns_only_what_depends_on_it(world):
    settings, run, instance, data, _first = world
    before = {key: materialisations(instance, key) for key in UPSTREAM}
    old = build_defs(settings(clustering={"k": 8})).get_assets_def(AssetKey("cluster_labels"))
    new = build_defs(settings(clustering={"k": 5})).get_assets_def(AssetKey("cluster_labels"))
    assert old.code_versions_by_key[AssetKey("cluster_labels")] != new.code_versions_by_key[AssetKey("cluster_labels")]
    result = run(settings(clustering={"k": 5}), selection=CLUSTER)
    assert result.success
    assert {key: materialisations(instance, key) for key in UPSTREAM} == before  # nothing upstream recomputed
    labels = np.load(data / "cluster_labels" / "labels.npy")
    assert labels.max() == 4 and np.load(data / "cluster_labels" / "centroids.npy").shape[0] == 5
    assert json.loads((data / "cluster_report" / "report.json").read_text())["k"] == 5
    assert sorted(p.name for p in (data / "cluster_report" / "grids").iterdir()) == [f"cluster_{c}.png" for c in range(5)]


def test_k_from_the_launchpad_for_one_run(world):
    settings, run, _instance, data, _first = world
    result = run(settings(clustering={"k": 5}, report={"max_silhouette_drop": 1.0}), selection=CLUSTER,
                 run_config={"ops": {"cluster_labels": {"config": {"k": 3}}}})
    assert result.success
    assert np.load(data / "cluster_labels" / "centroids.npy").shape[0] == 3


TRAINING = [AssetKey("expert_shards"), AssetKey("router_pairs")]
ACCEPT = {"ops": {"expert_shards": {"config": {"accept_failed_gate": True}},
                  "router_pairs": {"config": {"accept_failed_gate": True}}}}


def failure_messages(result) -> dict:
    return {e.step_key: e.step_failure_data.error.message for e in result.get_step_failure_events()}


def outputs_snapshot(data) -> dict:
    """Every file of the training outputs with its size and modification time: what a refused run must not touch."""
    files = {}
    for name in ("expert_shards", "router_pairs", "heldout"):
        for path in sorted((data / name).rglob("*")):
            if path.is_file():
                files[str(path.relative_to(data))] = (path.stat().st_size, path.stat().st_mtime_ns)
    manifest = data / "pipeline_manifest.json"
    return {"files": files, "manifest": manifest.read_text() if manifest.exists() else None}


def test_a_later_run_cannot_ship_a_clustering_the_gate_rejected(world):
    """The gate holds across runs: a run that selects only expert_shards and router_pairs is refused, naming the
    failed check, its value and threshold, and writes nothing; the explicit override ships and says so."""
    settings, run, instance, data, _first = world
    bad = settings(clustering={"k": 8}, report={"min_silhouette": 0.99})
    assert not run(bad, selection=CLUSTER).success
    before = outputs_snapshot(data)
    assert before["files"], "the first run wrote training outputs"
    counts = {key: materialisations(instance, key) for key in ("expert_shards", "router_pairs")}

    refused = run(bad, selection=TRAINING)
    assert not refused.success
    messages = failure_messages(refused)
    assert set(messages) == {"expert_shards", "router_pairs"}
    for asset, message in messages.items():
        assert f"{asset} refused" in message and "accept_failed_gate: true" in message
        assert re.search(r"silhouette_above_minimum failed: value 0\.\d+, threshold 0\.99", message), message
    assert outputs_snapshot(data) == before  # nothing written, nothing replaced
    assert {key: materialisations(instance, key) for key in counts} == counts
    # the settings file fixed but the gate not re-run: still refused (the latest report's checks failed)
    assert not run(settings(clustering={"k": 8}), selection=TRAINING).success

    accepted = run(bad, selection=TRAINING, run_config=ACCEPT)
    assert accepted.success
    for key in ("expert_shards", "router_pairs"):
        meta = instance.get_latest_materialization_event(AssetKey(key)).asset_materialization.metadata
        assert meta["gate"].value.startswith("ACCEPTED DESPITE FAILURES")
        assert "silhouette_above_minimum failed" in meta["gate_problems"].value
    manifest = json.loads((data / "pipeline_manifest.json").read_text())
    assert manifest["gate"]["accepted_failed_gate"] is True and not manifest["gate"]["passed"]
    assert manifest["gate"]["checks"]["silhouette_above_minimum"]["status"] == "failed"

    # a passing gate again: the training outputs run without any override and record that the gate passed
    assert run(settings(clustering={"k": 8}), selection=CLUSTER + TRAINING).success
    manifest = json.loads((data / "pipeline_manifest.json").read_text())
    assert manifest["gate"]["passed"] and not manifest["gate"]["accepted_failed_gate"]


def test_a_missing_evaluation_or_a_newer_clustering_counts_as_not_passed(world):
    settings, run, _instance, data, _first = world
    good = settings(clustering={"k": 8})
    assert run(good, selection=CLUSTER).success
    # cluster_report re-materialised without its checks: nothing has judged it
    job = build_defs(good).resolve_implicit_global_asset_job_def()
    subset = job.get_subset(asset_selection={AssetKey("cluster_report")}, asset_check_selection=set())
    assert subset.execute_in_process(instance=_instance, raise_on_error=False).success
    messages = failure_messages(run(good, selection=TRAINING))
    assert "silhouette_above_minimum not evaluated" in messages["expert_shards"]
    # the gate passed, then cluster_labels changed (another K) without the report: the gate has not seen it
    assert run(good, selection=CLUSTER).success
    assert run(settings(clustering={"k": 5}), selection=[AssetKey("cluster_labels")]).success
    messages = failure_messages(run(good, selection=TRAINING))
    assert "cluster_labels was re-materialised (or wiped) after cluster_report judged it" in messages["router_pairs"]
    assert run(good, selection=CLUSTER + TRAINING).success


def test_repeated_bad_runs_keep_failing_the_drop_check(world):
    """silhouette_not_dropped compares with the last materialisation whose gate passed, not the one before."""
    settings, run, instance, _data, _first = world
    assert run(settings(clustering={"k": 8}), selection=CLUSTER).success
    good = instance.get_latest_materialization_event(AssetKey("cluster_report")).asset_materialization
    worse = settings(clustering={"k": 2}, report={"max_silhouette_drop": 0.0})
    for _attempt in range(2):
        check = checks_of(run(worse, selection=CLUSTER))["silhouette_not_dropped"]
        assert not check.passed
        assert check.metadata["previous"].value == pytest.approx(good.metadata["silhouette"].value)


def test_the_command_line_is_refused_too(world, tmp_path):
    """`dagster asset materialize --select expert_shards,router_pairs` on the same instance after a failed gate."""
    settings, run, instance, data, _first = world
    bad = settings(clustering={"k": 8}, report={"min_silhouette": 0.99})
    assert not run(bad, selection=CLUSTER).success
    before = outputs_snapshot(data)
    config = tmp_path / "paris.yaml"
    config.write_text(yaml.safe_dump(bad.as_dict()))
    env = dict(os.environ, DAGSTER_HOME=instance.root_directory, PARIS_CONFIG=str(config))
    done = subprocess.run([str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m",
                           "paris_assets.definitions", "--select", "expert_shards,router_pairs"],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "expert_shards refused" in done.stderr and "router_pairs refused" in done.stderr, done.stderr[-3000:]
    assert re.search(r"silhouette_above_minimum failed: value 0\.\d+, threshold 0\.99", done.stderr)
    assert outputs_snapshot(data) == before
