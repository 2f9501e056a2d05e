# mliapdb: `make demo` installs everything and runs the demo; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= $(if $(MLIAPDB_DATA),$(MLIAPDB_DATA),../shared/data)
DEMO_DB ?= demo/mliapdb.duckdb
DEMO_N ?= 16

.PHONY: install demo test lint bench bench-hull bench-relax docs docs-check clean

install: $(VENV)/.installed

# torch is pinned to the CPU build that lies on this machine's disk: any looser spec pulls
# a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
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

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check mliapdb tests bench

bench: bench-hull bench-relax

bench-hull: install
	$(BIN)/python bench/bench_hull.py --data $(DATA)

bench-relax: install
	$(BIN)/python bench/bench_relax.py --data $(DATA)

docs: install
	$(BIN)/python -m mliapdb.cli.docs > docs/cli.md

docs-check: install
	$(BIN)/python -m mliapdb.cli.docs | diff -u docs/cli.md - && echo "docs/cli.md is up to date"

clean:
	rm -rf demo .pytest_cache
