"""bench/parts on a tiny demo: the same per-image assets computed whole and in parts, each part's run succeeding
(the bench asserts it), and the report naming as many parts as it registered."""

from __future__ import annotations

import re

from paris_assets.bench.parts import main


def test_bench_parts_tiny(capsys):
    assert main(["--demo-size", "24", "--parts", "2"]) == 0
    printed = capsys.readouterr().out
    rows = int(re.search(r"demo of (\d+) source rows", printed).group(1))
    parts = re.search(r"in (\d+) parts, a run each: +[\d.]+ s +\(([^)]*)\)", printed)
    assert rows > 24  # the demo plants its bad inputs beside the clean images
    assert int(parts.group(1)) == 2 == len(parts.group(2).split(", "))
    assert "ratio parts/whole" in printed
