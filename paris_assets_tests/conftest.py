import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from dagster import DagsterInstance  # noqa: E402

from paris_assets.definitions import build_defs  # noqa: E402
from paris_assets.lib.demo.images import make_demo  # noqa: E402
from paris_assets.settings import PROJECT_ROOT, parse_settings  # noqa: E402

SMALL_DEMO = 64  # clean images in the test demo: every planted problem still appears


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory) -> tuple[Path, "object"]:
    """A small demo data set on disk (files/ + the row table), generated once per test session."""
    folder = tmp_path_factory.mktemp("demo")
    table = make_demo(folder, n=SMALL_DEMO, seed=0)
    return folder, table


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """The whole graph materialised once on the small demo (K=4, six samples per shard, jpg in the shards):
    (settings(k, **report), run(settings, selection), instance, data folder). test_training re-runs parts of it
    with other settings; other modules copy what they change."""
    root = tmp_path_factory.mktemp("training")
    home = root / "home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    instance = DagsterInstance.local_temp(str(home))

    def settings(k=4, **report):
        return parse_settings({
            "data_dir": str(root / "data"), "source": {"kind": "demo", "demo_size": 64},
            "ingest": {"processes": 1, "threads": 8}, "filter": {"processes": 1}, "captions": {"source": "alt_text"},
            "clustering": {"k": k}, "report": {"max_silhouette_drop": 1.0, **report},
            "shards": {"max_samples_per_shard": 6, "heldout_fraction": 0.1, "include_jpg": True}}, base_dir=root)

    def run(s, selection=None):
        return build_defs(s).resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=selection, raise_on_error=False)

    result = run(settings())
    assert result.success
    return settings, run, instance, root / "data"


class PostgresServer:
    """A PostgreSQL server this test session started on 127.0.0.1 (password auth over TCP, as a team's would be)."""

    host = "127.0.0.1"
    user = "paris"
    password = "paris-test-password"
    database = "dagster"  # created at start; create_database() makes more

    def __init__(self, port: int):
        self.port = port

    def connect(self, dbname: str | None = None):
        import psycopg2  # dagster-postgres brings psycopg2-binary

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=dbname or self.database, connect_timeout=5)

    def create_database(self, name: str) -> str:
        connection = self.connect("postgres")
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction (nor in `with connection`)
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return name


def _postgres_binaries() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and postgres (Debian's layout), or a failure that
    says how to install it: a missing server is a broken setup, not a reason to skip."""
    found = [b for b in Path("/usr/lib/postgresql").glob("*/bin")
             if b.parent.name.isdigit() and (b / "initdb").is_file() and (b / "postgres").is_file()]
    if not found:
        pytest.fail("PostgreSQL's server binaries (initdb, postgres under /usr/lib/postgresql/<version>/bin) are "
                    "missing: run `bash scripts/ensure-postgres` (or `make postgres`; it runs `apt-get install -y "
                    "--no-install-recommends postgresql`, with sudo when not root), then the tests again.", pytrace=False)
    return max(found, key=lambda b: int(b.parent.name))


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session: initdb in a temp folder, `postgres` on 127.0.0.1 on a free port,
    a `dagster` database. PostgreSQL refuses to run as root, so as root it runs as the package's `postgres` user
    (or `nobody`) on a folder that user owns. Stopped at the end by its own PID (a fast shutdown)."""
    import pwd
    import signal
    import subprocess
    import tempfile
    import time

    import psycopg2

    binaries = _postgres_binaries()
    folder = Path(tempfile.mkdtemp(prefix="paris-pg-", dir="/tmp"))  # pytest's basetemp is 0700 root: not for nobody
    as_user: dict = {}
    if os.geteuid() == 0:
        names = [n for n in ("postgres", "nobody") if n in {e.pw_name for e in pwd.getpwall()}]
        account = pwd.getpwnam(names[0])
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        os.chown(folder, account.pw_uid, account.pw_gid)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(folder)}
    data = folder / "data"
    secret = folder / "password"
    secret.write_text(PostgresServer.password)
    if as_user:
        os.chown(secret, as_user["user"], as_user["group"])
    done = subprocess.run([str(binaries / "initdb"), "-D", str(data), "-U", PostgresServer.user, f"--pwfile={secret}",
                           "-A", "scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"],
                          cwd=folder, env=env, capture_output=True, text=True, check=False, **as_user)
    if done.returncode != 0:
        pytest.fail(f"initdb failed ({binaries}):\n{done.stdout}\n{done.stderr}", pytrace=False)

    server, log = None, folder / "server.log"
    for _attempt in range(3):  # a free port can be taken between the probe and the bind: try another
        port = _free_port()
        with open(log, "ab") as out:
            # fsync off: a test server need not survive a power cut, and commits are the bulk of Dagster's writes
            server = subprocess.Popen(
                [str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-k", str(folder),
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off"],
                cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **as_user)
        handle = PostgresServer(port)
        deadline = time.monotonic() + 60
        while server.poll() is None and time.monotonic() < deadline:
            try:
                handle.connect("postgres").close()
                break
            except psycopg2.OperationalError:
                time.sleep(0.1)
        if server.poll() is None and time.monotonic() < deadline:
            break
        if server.poll() is None:
            server.kill()
        server.wait()
        server = None
    if server is None:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start on 127.0.0.1; its log:\n{log.read_text()[-3000:]}", pytrace=False)

    try:
        handle.create_database(PostgresServer.database)
        yield handle
    finally:
        for sig, wait in ((signal.SIGINT, 30), (signal.SIGQUIT, 10), (signal.SIGKILL, 10)):  # fast, immediate, kill
            server.send_signal(sig)
            try:
                server.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole session (test_ray_engine, test_ray_filter), with the engine's own start-up:
    2 CPUs, 2 logical GPUs, a small object store, no dashboard, no usage stats; stopped at the end."""
    from paris_assets.engines import ray as ray_engine

    with ray_engine.ray_session("", num_cpus=2, num_gpus=2, object_store_mb=200, log=lambda m: None) as where:
        yield where
