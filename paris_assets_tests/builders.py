"""What the slow tests build, built one way: a Dagster instance in a temp folder with the project's dagster.yaml and
the graph run in process on it; `dagster dev` and the shard browser as servers a test started (stopped by their
PID); Debian's chromium through playwright; a PostgreSQL server on 127.0.0.1. conftest.py makes the expensive ones
shared fixtures and marks the tests that use them (see its MARKS)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from paris_assets.settings import PROJECT_ROOT

# -- processes ----------------------------------------------------------------------------------------------------

# a server started from a non-interactive shell ignores SIGINT/SIGTERM unless they are reset first
LAUNCHER = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
            "signal.signal(signal.SIGTERM, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(argv: list[str], log: Path, ready_url: str, env: dict, timeout: int = 180) -> subprocess.Popen:
    """Start `argv` (an executable and its arguments) with default signal handling, logging to `log`, and wait
    until `ready_url` answers."""
    out = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, *argv], cwd=PROJECT_ROOT, env=env, stdout=out,
                            stderr=subprocess.STDOUT)
    out.close()  # the child holds its own descriptor
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(ready_url, timeout=2).close()
            return proc
        except urllib.error.HTTPError:  # it answered, if only to say no: it is up
            return proc
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"{argv} exited: {log.read_text()[-3000:]}") from None
            time.sleep(0.5)
    stop(proc)
    raise AssertionError(f"{ready_url} did not answer in {timeout} s: {log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process this test started (by its PID, never by name), SIGKILL after a minute."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- a Dagster instance and the graph in process ------------------------------------------------------------------

def instance_home(folder: Path, text: str | None = None) -> Path:
    """A DAGSTER_HOME holding `text` as its dagster.yaml (the project's own by default)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text() if text is None else text)
    return folder


def temp_instance(root: Path):
    """A real (SQLite) Dagster instance in root/home with the project's instance settings."""
    from dagster import DagsterInstance

    return DagsterInstance.local_temp(str(instance_home(root / "home")))


def graph_runner(instance) -> Callable:
    """run(settings, selection=None, run_config=None): the whole asset graph (or `selection`) built from `settings`,
    executed in process on `instance`; a failed step is a failed result, not an exception."""
    from paris_assets.definitions import build_defs

    def run(settings, selection=None, run_config=None):
        job = build_defs(settings).resolve_implicit_global_asset_job_def()
        return job.execute_in_process(instance=instance, asset_selection=selection, run_config=run_config,
                                      raise_on_error=False)

    return run


# -- `dagster dev` and its GraphQL API ----------------------------------------------------------------------------

@dataclass
class DagsterSite:
    """What `dagster dev` runs over: root/home (DAGSTER_HOME, the project's dagster.yaml), root/paris.yaml
    (PARIS_CONFIG; data_dir relative to it) and a free loopback port. `proc` is set while it runs."""

    root: Path
    port: int
    env: dict
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "dagster-dev.log"


def dagster_site(root: Path, settings: str | Callable[[str], str]) -> DagsterSite:
    """A site in `root`: settings is the paris.yaml text, or a function of the UI's base URL returning it."""
    port = free_port()
    instance_home(root / "home")
    text = settings(f"http://127.0.0.1:{port}") if callable(settings) else settings
    (root / "paris.yaml").write_text(text)
    env = dict(os.environ, DAGSTER_HOME=str(root / "home"), PARIS_CONFIG=str(root / "paris.yaml"),
               HF_HUB_OFFLINE="1")
    return DagsterSite(root, port, env)


@contextmanager
def dagster_dev(site: DagsterSite) -> Iterator[DagsterSite]:
    """`dagster dev` on 127.0.0.1:site.port over the project's definitions (webserver and daemon), logging to
    site.log; stopped at the end by its PID."""
    dagster = shutil.which("dagster", path=os.path.dirname(sys.executable))
    site.proc = start([dagster, "dev", "-h", "127.0.0.1", "-p", str(site.port), "-m", "paris_assets.definitions"],
                      site.log, f"{site.base}/server_info", site.env)
    try:
        yield site
    finally:
        stop(site.proc)
        site.proc = None


def graphql(base: str, query: str) -> dict:
    request = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=30).read())["data"]


def latest_run(base: str) -> dict | None:
    runs = graphql(base, "{ runsOrError { ... on Runs { results { runId status assetSelection { path } "
                         "stepStats { stepKey status } } } } }")["runsOrError"]["results"]
    return runs[0] if runs else None


def wait_for_run(base: str, after: str | None, timeout: int = 600) -> dict:
    """The first run other than `after`, once it has finished."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = latest_run(base)
        if run and run["runId"] != after and run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return run
        time.sleep(2)
    raise AssertionError(f"no run finished within {timeout} s")


def materialisations(base: str, asset: str) -> int:
    query = ('{ assetOrError(assetKey: {path: ["%s"]}) { ... on Asset { assetMaterializations(limit: 100) '
             '{ runId } } } }' % asset)
    return len(graphql(base, query)["assetOrError"]["assetMaterializations"])


# -- the shard browser --------------------------------------------------------------------------------------------

@contextmanager
def browse_server(data_dir: Path, log: Path, *options: str, ready: str = "/api/overview") -> Iterator[str]:
    """`python -m paris_assets.browse --data-dir data_dir` on a free loopback port (plus `options`); yields its
    base URL once `ready` answers, stopped at the end by its PID."""
    port = free_port()
    proc = start([sys.executable, "-m", "paris_assets.browse", "--data-dir", str(data_dir), "--port", str(port),
                  *options], log, f"http://127.0.0.1:{port}{ready}", dict(os.environ))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


# -- chromium -----------------------------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# screenshots: test-artifacts/ by default; `make screenshots` points this at docs/screenshots/ for the README
SHOTS = Path(os.environ.get("PARIS_SCREENSHOTS") or PROJECT_ROOT / "test-artifacts")


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")


@contextmanager
def chromium_page(width: int = 1600, height: int = 1000):
    """A page of Debian's chromium (the flags above) with a width x height viewport; the browser is closed at the
    end. playwright drives the installed binary; it never downloads a browser of its own."""
    from playwright.sync_api import sync_playwright

    require_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def shot(page, name: str) -> None:
    """A JPEG screenshot (a quarter the size of a PNG: the README's are committed)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), type="jpeg", quality=80)


# -- PostgreSQL ---------------------------------------------------------------------------------------------------

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


def postgres_binaries() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and postgres (Debian's layout), or a failure that
    says how to install it: a missing server is a broken setup, not a reason to skip."""
    found = [b for b in Path("/usr/lib/postgresql").glob("*/bin")
             if b.parent.name.isdigit() and (b / "initdb").is_file() and (b / "postgres").is_file()]
    if not found:
        pytest.fail("PostgreSQL's server binaries (initdb, postgres under /usr/lib/postgresql/<version>/bin) are "
                    "missing: run `bash scripts/ensure-postgres` (or `make postgres`; it runs `apt-get install -y "
                    "--no-install-recommends postgresql`, with sudo when not root), then the tests again.", pytrace=False)
    return max(found, key=lambda b: int(b.parent.name))


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server: initdb in a temp folder, `postgres` on 127.0.0.1 on a free port, a `dagster`
    database. PostgreSQL refuses to run as root, so as root it runs as the package's `postgres` user (or `nobody`)
    on a folder that user owns. Stopped at the end by its own PID (a fast shutdown)."""
    import pwd
    import tempfile

    import psycopg2

    binaries = postgres_binaries()
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
        port = free_port()
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
