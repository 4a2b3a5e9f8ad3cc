"""Helpers shared by the browser tests: Debian's chromium with the flags this machine needs, free loopback
ports, and starting a server process that stops on SIGTERM (only the processes a test started, by PID)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from paris_assets.settings import PROJECT_ROOT

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# screenshots: test-artifacts/ by default; `make screenshots` points this at docs/screenshots/ for the README
SHOTS = Path(os.environ.get("PARIS_SCREENSHOTS") or PROJECT_ROOT / "test-artifacts")
# a server started from a non-interactive shell ignores SIGINT/SIGTERM unless they are reset first
LAUNCHER = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
            "signal.signal(signal.SIGTERM, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])")


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")


def shot(page, name: str) -> None:
    """A JPEG screenshot (a quarter the size of a PNG: the README's are committed)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), type="jpeg", quality=80)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(argv: list[str], log: Path, ready_url: str, env: dict, timeout: int = 180) -> subprocess.Popen:
    """Start `argv` (an executable and its arguments) with default signal handling, logging to `log`, and wait until `ready_url` answers."""
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
            time.sleep(1)
    stop(proc)
    raise AssertionError(f"{ready_url} did not answer in {timeout} s: {log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_dagster_dev(root: Path, port: int, env: dict) -> subprocess.Popen:
    """`dagster dev` on 127.0.0.1:port over the project's definitions, logging to root/dagster-dev.log."""
    dagster = shutil.which("dagster", path=os.path.dirname(sys.executable))
    return start([dagster, "dev", "-h", "127.0.0.1", "-p", str(port), "-m", "paris_assets.definitions"],
                 root / "dagster-dev.log", f"http://127.0.0.1:{port}/server_info", env)


@contextmanager
def browser_page():
    """A page of Debian's chromium (the flags above), closed at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser.new_page(viewport={"width": 1600, "height": 1000})
        finally:
            browser.close()
