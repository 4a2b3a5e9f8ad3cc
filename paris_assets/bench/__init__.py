"""Benchmarks: throughput per stage beside a baseline measured in the same run (`make bench`,
`python -m paris_assets.bench --only STAGE`). One module per stage; main.py runs them. Never a pass/fail on time."""
