"""The README's test command on a fresh machine: the browser tests' chromium is installed or asked for, never
silently skipped."""

import subprocess

from paris_assets.settings import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "ensure-chromium"


def test_make_test_ensures_chromium_first():
    dry = subprocess.run(["make", "-n", "test"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    lines = dry.stdout.splitlines()
    ensure = next(i for i, line in enumerate(lines) if "scripts/ensure-chromium" in line)
    pytest_line = next(i for i, line in enumerate(lines) if "-m pytest" in line)
    assert ensure < pytest_line


def test_present_chromium_is_left_alone(tmp_path):
    browser = tmp_path / "chromium"
    browser.write_text("#!/bin/sh\n")
    browser.chmod(0o755)
    done = subprocess.run(["/bin/bash", str(SCRIPT)], env={"CHROMIUM": str(browser), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def test_without_apt_it_stops_with_what_to_do(tmp_path):
    done = subprocess.run(["/bin/bash", str(SCRIPT)], env={"CHROMIUM": str(tmp_path / "none"), "PATH": str(tmp_path)},
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert f"need Debian's chromium at {tmp_path / 'none'}" in done.stderr and "make test again" in done.stderr
