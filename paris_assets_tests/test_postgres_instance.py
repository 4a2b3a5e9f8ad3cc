"""A team's Dagster instance on a real PostgreSQL server (started on 127.0.0.1 by the postgres_server fixture):
the project's dagster.yaml with its PostgreSQL block uncommented, the real graph materialised on it, the quality
gate refusing and accepting exactly as on SQLite, the records in PostgreSQL's tables, and a second machine's
instance on the same database seeing and continuing the first one's work."""

import json
import re
import shutil

import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from paris_assets.checks.gate import gate_verdict
from paris_assets.lib.outputs.tars import TarShardWriter
from paris_assets.settings import PROJECT_ROOT, parse_settings

from .builders import graph_runner, instance_home

BEGIN, END = "# >>> team instance on PostgreSQL", "# <<< team instance on PostgreSQL"
ASSETS = ["raw_images", "filtered_images", "captions", "clip_embeddings", "dinov2_embeddings", "latents",
          "clip_image_embeddings", "quality_scores", "protected_images", "cluster_labels", "cluster_report",
          "expert_shards", "router_pairs"]
CLUSTER = [AssetKey("cluster_labels"), AssetKey("cluster_report")]
TRAINING = [AssetKey("expert_shards"), AssetKey("router_pairs")]
RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def team_instance_yaml() -> str:
    """The project's dagster.yaml with every line between its PostgreSQL markers uncommented, as a team would."""
    lines, inside = [], False
    for line in (PROJECT_ROOT / "dagster.yaml").read_text().splitlines():
        if line.strip() in (BEGIN, END):
            inside = line.strip() == BEGIN
            continue
        indent = len(line) - len(line.lstrip())
        lines.append(line[:indent] + line[indent + 2:] if inside and line[indent:].startswith("# ") else line)
    return "\n".join(lines) + "\n"


def run(instance, settings, selection=None):
    return graph_runner(instance)(settings, selection)


def refusals(result) -> dict:
    """What each refused step said, with run ids blanked (they differ between instances by design)."""
    return {e.step_key: RUN_ID.sub("<run>", e.step_failure_data.error.message)
            for e in result.get_step_failure_events()}


def verdict(instance, settings) -> dict:
    found = gate_verdict(instance, settings).as_dict()
    found.pop("cluster_report_run_id")
    return found


@pytest.fixture(scope="module")
def team(tmp_path_factory, postgres_server, demo_files):
    """Machine A on the team instance: the whole graph from a WebDataset tar of the demo's clean pictures (no
    download, so the graph is the time), then a clustering the gate rejects and a training run it refuses.
    The same clustering steps on a SQLite instance over a copy of the data, for comparison."""
    root = tmp_path_factory.mktemp("team")
    folder, table = demo_files
    with open(root / "source-000000.tar", "wb") as fh, TarShardWriter(fh) as writer:
        for row in table[table["expect"] == "kept"].itertuples():
            writer.write(row.demo_id, {"jpg": (folder / "files" / row.name).read_bytes(), "txt": row.caption})

    def settings(data, **report):
        return parse_settings({
            "data_dir": str(data), "source": {"kind": "webdataset", "path": str(root / "*.tar")},
            "filter": {"processes": 1}, "captions": {"source": "alt_text"}, "clustering": {"k": 4},
            "report": {"max_silhouette_drop": 1.0, **report}, "shards": {"max_samples_per_shard": 8}}, base_dir=root)

    database = postgres_server.create_database("paris_team")
    with pytest.MonkeyPatch.context() as env:
        for name, value in {"HOST": postgres_server.host, "PORT": str(postgres_server.port), "DB": database,
                            "USERNAME": postgres_server.user, "PASSWORD": postgres_server.password}.items():
            env.setenv(f"DAGSTER_PG_{name}", value)
        text = team_instance_yaml()
        a = DagsterInstance.from_config(str(instance_home(root / "machine_a", text)))
        pg = {"first": run(a, settings(root / "data"))}
        assert pg["first"].success
        pg["good"] = verdict(a, settings(root / "data"))
        pg["bad_cluster"] = run(a, settings(root / "data", min_silhouette=0.99), CLUSTER)
        pg["bad"] = verdict(a, settings(root / "data", min_silhouette=0.99))
        pg["refused"] = run(a, settings(root / "data", min_silhouette=0.99), TRAINING)

        shutil.copytree(root / "data", root / "sqlite_data")
        lite = DagsterInstance.from_config(str(instance_home(root / "sqlite_home")))  # the project's, SQLite
        sqlite = {"good_cluster": run(lite, settings(root / "sqlite_data"), CLUSTER)}
        sqlite["good"] = verdict(lite, settings(root / "sqlite_data"))
        sqlite["bad_cluster"] = run(lite, settings(root / "sqlite_data", min_silhouette=0.99), CLUSTER)
        sqlite["bad"] = verdict(lite, settings(root / "sqlite_data", min_silhouette=0.99))
        sqlite["refused"] = run(lite, settings(root / "sqlite_data", min_silhouette=0.99), TRAINING)
        lite.dispose()

        yield {"a": a, "pg": pg, "sqlite": sqlite, "settings": settings, "root": root, "text": text,
               "database": database}
        a.dispose()


def test_the_shipped_instance_is_sqlite_and_its_postgres_block_is_valid(team, tmp_path):
    shipped = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    assert "storage" not in shipped and "runs" not in shipped["concurrency"]  # SQLite, the embedded default
    assert shipped["telemetry"] == {"enabled": False} and shipped["nux"] == {"enabled": False}
    team_config = yaml.safe_load(team["text"])
    assert team_config["storage"]["postgres"]["postgres_db"] == {"scheme": "postgresql+psycopg2", **{
        key: {"env": f"DAGSTER_PG_{var}"} for key, var in [("hostname", "HOST"), ("port", "PORT"), ("db_name", "DB"),
                                                            ("username", "USERNAME"), ("password", "PASSWORD")]}}
    assert team_config["concurrency"]["runs"] == {"max_concurrent_runs": 4}
    assert {k: v for k, v in team_config.items() if k not in ("storage", "concurrency")} == {
        k: v for k, v in shipped.items() if k != "concurrency"}
    shipped_text = (PROJECT_ROOT / "dagster.yaml").read_text()
    lite = DagsterInstance.from_config(str(instance_home(tmp_path / "lite", shipped_text)))
    assert type(lite.run_storage).__name__ == "SqliteRunStorage"
    assert type(team["a"].run_storage).__name__ == "PostgresRunStorage"
    assert type(team["a"].event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(team["a"].schedule_storage).__name__ == "PostgresScheduleStorage"
    lite.dispose()


def test_the_gate_refuses_and_accepts_as_on_sqlite(team):
    """The verdict the training assets act on, read back from each instance: passed on the good clustering, failed
    on the rejected one, with the same checks, values and thresholds; and the same refusal, word for word."""
    pg, sqlite = team["pg"], team["sqlite"]
    assert sqlite["good_cluster"].success
    assert pg["good"]["passed"] and pg["good"] == sqlite["good"]  # the same checks, values, thresholds
    assert not pg["bad_cluster"].success and not sqlite["bad_cluster"].success
    assert not pg["bad"]["passed"] and pg["bad"] == sqlite["bad"]
    assert pg["bad"]["checks"]["silhouette_above_minimum"]["status"] == "failed"
    assert not pg["refused"].success and not sqlite["refused"].success
    messages = refusals(pg["refused"])
    assert set(messages) == {"expert_shards", "router_pairs"} and messages == refusals(sqlite["refused"])
    assert re.search(r"silhouette_above_minimum failed: value 0\.\d+, threshold 0\.99", messages["expert_shards"])
    # the first run's training outputs stand: the refused run wrote nothing
    manifest = json.loads((team["root"] / "data" / "pipeline_manifest.json").read_text())
    assert manifest["gate"]["passed"] and not manifest["gate"]["accepted_failed_gate"]


def test_the_credentials_come_from_the_environment(team, postgres_server):
    """The server checks passwords over TCP (scram-sha-256), so the instance connected with DAGSTER_PG_PASSWORD."""
    import psycopg2

    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host=postgres_server.host, port=postgres_server.port, user=postgres_server.user,
                         password="not-the-password", dbname=team["database"], connect_timeout=5)
    assert team["a"].get_run_by_id(team["pg"]["first"].run_id) is not None


def test_runs_events_and_check_evaluations_are_rows_in_postgres(team, postgres_server):
    a, pg, home = team["a"], team["pg"], team["root"] / "machine_a"
    ours = {pg[k].run_id: status for k, status in [("first", "SUCCESS"), ("bad_cluster", "FAILURE"),
                                                    ("refused", "FAILURE")]}
    runs = (tuple(ours),)
    with postgres_server.connect(team["database"]) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT run_id, status FROM runs WHERE run_id IN %s", runs)
        assert dict(cursor.fetchall()) == ours
        cursor.execute("SELECT asset_key, count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                       "AND run_id IN %s GROUP BY asset_key", runs)
        materialised = {tuple(json.loads(key)): n for key, n in cursor.fetchall()}
        assert materialised == {**{(name,): 1 for name in ASSETS}, ("cluster_labels",): 2, ("cluster_report",): 2}
        cursor.execute("SELECT run_id, execution_status FROM asset_check_executions WHERE asset_key = %s "
                       "AND check_name = 'silhouette_above_minimum' AND run_id IN %s", ('["cluster_report"]', *runs))
        assert dict(cursor.fetchall()) == {pg["first"].run_id: "SUCCEEDED", pg["bad_cluster"].run_id: "FAILED"}
        cursor.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", (pg["first"].run_id,))
        assert cursor.fetchone()[0] > 100  # every step's events, not only the summaries
    connection.close()
    assert a.get_run_by_id(pg["first"].run_id).status.value == "SUCCESS"
    assert not list(home.rglob("*.db"))  # nothing fell back to SQLite files in DAGSTER_HOME


def test_a_second_machine_sees_and_continues_the_first_ones_work(team, tmp_path):
    """Machine B: its own DAGSTER_HOME with the same dagster.yaml. It sees A's materialisations and A's failed
    gate, fixes the clustering, and A ships training outputs on B's report without re-running anything."""
    a, settings, data = team["a"], team["settings"], team["root"] / "data"
    b = DagsterInstance.from_config(str(instance_home(tmp_path / "machine_b", team["text"])))
    for name in ASSETS:
        ours = [r.storage_id for r in a.fetch_materializations(AssetKey(name), limit=10).records]
        assert [r.storage_id for r in b.fetch_materializations(AssetKey(name), limit=10).records] == ours
    assert verdict(b, settings(data, min_silhouette=0.99)) == team["pg"]["bad"]
    assert b.get_run_by_id(team["pg"]["refused"].run_id).is_failure

    fixed = run(b, settings(data), CLUSTER)
    assert fixed.success
    latest = a.get_latest_materialization_event(AssetKey("cluster_report"))
    assert latest.run_id == fixed.run_id and gate_verdict(a, settings(data)).passed
    shipped = run(a, settings(data), TRAINING)
    assert shipped.success
    manifest = json.loads((data / "pipeline_manifest.json").read_text())
    assert manifest["gate"]["passed"] and manifest["gate"]["cluster_report_run_id"] == fixed.run_id
    assert b.get_latest_materialization_event(AssetKey("expert_shards")).run_id == shipped.run_id
    b.dispose()


def test_pool_limits_are_team_wide(team, tmp_path):
    """The `gpu` pool's slots live in the database: a limit set from one machine holds on every other."""
    a = team["a"]
    b = DagsterInstance.from_config(str(instance_home(tmp_path / "machine_b", team["text"])))
    assert "gpu" in b.event_log_storage.get_concurrency_keys()  # the graph's GPU steps claimed slots in PostgreSQL
    assert b.event_log_storage.get_concurrency_info("gpu").slot_count == 1  # dagster.yaml's default_limit
    a.event_log_storage.set_concurrency_slots("gpu", 3)  # what `dagster instance concurrency set gpu 3` does
    assert b.event_log_storage.get_concurrency_info("gpu").slot_count == 3
    b.dispose()


def test_a_fresh_team_instance_refuses_training_until_the_report_runs_on_it(team, postgres_server, tmp_path,
                                                                          monkeypatch):
    """A database set up as the README's team-instance section says (an ordinary role owning it, not a superuser). Moving to PostgreSQL
    starts an empty history (nothing copies SQLite's records): the data stays, and the gate, which reads check
    evaluations from the instance, refuses the training outputs until cluster_report runs on the new instance."""
    admin = postgres_server.connect("postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("CREATE ROLE dagster_team LOGIN PASSWORD 'team-secret'")
        cursor.execute("CREATE DATABASE dagster_team OWNER dagster_team")
    admin.close()
    for name, value in {"DB": "dagster_team", "USERNAME": "dagster_team", "PASSWORD": "team-secret"}.items():
        monkeypatch.setenv(f"DAGSTER_PG_{name}", value)
    fresh = DagsterInstance.from_config(str(instance_home(tmp_path / "fresh", team_instance_yaml())))
    fresh.upgrade()  # `dagster instance migrate`: nothing to do on the tables Dagster has just created
    refused = run(fresh, team["settings"](team["root"] / "sqlite_data"), TRAINING)
    assert not refused.success
    assert "cluster_report has never been materialised" in refusals(refused)["expert_shards"]
    fresh.dispose()
