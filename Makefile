# paris-assets: `make demo` sets everything up and runs the graph on the demo data; `make test` runs the tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# MEDIA=video: the video graph (Paris 2.0) on its own settings file, data and Dagster instance
MEDIA ?= image
ifeq ($(MEDIA),video)
export PARIS_CONFIG ?= $(CURDIR)/paris-video.yaml
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home/video
else
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
endif
export HF_HUB_OFFLINE ?= 1
export NO_ALBUMENTATIONS_UPDATE := 1
# mkdocs-material 9.7+ prints an end-of-life banner (May 2027, successor: Zensical) on every build
export NO_MKDOCS_2_WARNING := 1
# A CUDA machine: `make setup TORCH_SPEC=torch` (or pre-install the CUDA torch wheel you want in .venv).
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)

.PHONY: setup demo test test-quick chromium postgres ui browse bench screenshots models constraints clean

# constraints.txt: the versions the suite last passed with, so a release tonight does not turn a fresh setup red
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" -e ".[dev]" -c constraints.txt
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

setup: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml

demo: setup
	$(PY) -m paris_assets.demo_run

# the browser tests need Debian's chromium: installed when missing, or a stop with the command to run
chromium:
	bash scripts/ensure-chromium

# the team-instance tests start a real PostgreSQL server (Debian's package): installed when missing, or a stop
postgres:
	bash scripts/ensure-postgres

# the whole suite on TEST_WORKERS pytest-xdist workers; tests sharing a session fixture, and each file's tests,
# stay on one worker (paris_assets_tests/conftest.py groups them, heaviest first). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder)
test: setup chromium postgres
	$(PY) -m pytest -q $(XDIST) $(PYTEST_ARGS)

# the edit loop: everything but the `slow` marker (no browser, dagster dev, Ray, PostgreSQL or graph run)
test-quick: setup
	$(PY) -m pytest -q -m "not slow" $(XDIST) $(PYTEST_ARGS)

ui: setup
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000

browse: setup
	$(PY) -m paris_assets.browse

# the README's screenshots, taken by the browser tests themselves
screenshots: setup chromium
	PARIS_SCREENSHOTS=$(CURDIR)/docs/screenshots $(PY) -m pytest -q paris_assets_tests/test_ui.py \
		paris_assets_tests/test_browse.py::test_shard_browser_in_a_real_browser \
		paris_assets_tests/test_browse_video.py::test_clips_in_a_real_browser paris_assets_tests/test_ui_video.py

# the documentation site (mkdocs, material theme) into site/; --strict fails on a broken link or a page left out of nav
.PHONY: docs
docs: setup
	$(VENV)/bin/mkdocs build --strict -d site

bench: setup
	$(PY) -m paris_assets.bench

# the paris profile's weights into the HF cache at their pinned commits, then one image/prompt per role;
# needs the hub (HF_HUB_OFFLINE=0 here); `make models MODELS_ARGS="--device cuda --dtype float16"`
models: setup
	HF_HUB_OFFLINE=0 $(PY) -m paris_assets.models.fetch $(MODELS_ARGS)

# after a green `make test` on newer releases (pip install -U in .venv): record them as the new constraints
constraints:
	{ sed -n '1,3p' constraints.txt; $(PY) -m pip freeze | grep -v "^#" | grep -v '^-e\|^paris-assets\|^torch=='; } > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf data data-video .dagster_home/* .pytest_cache
