# The two commands a newcomer needs: `make run` and `make test`. Each does its own set-up.
SHELL := /bin/bash
# The interpreter of the virtual env: the distribution's CPython when it is 3.11 or newer
# (Debian builds it with profile-guided and link-time optimisation: a camera edit ran ~10 %
# faster on it than on a default pyenv build), else the first python3 on the PATH.
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null && echo /usr/bin/python3 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test system web lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "gridcover needs Python >= 3.11: set PYTHON=/path/to/python3.11")'
	@# an existing env keeps its interpreter (`make clean` to change it)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# System packages (PostGIS for the machine's PostgreSQL, GDAL): installed once, checked each time.
system:
	@scripts/install_system.sh

# The web map (web/ -> api/static/): MapLibre GL JS from the npm registry, rebuilt when web/ changes.
WEB_STAMP := api/static/.built
$(WEB_STAMP): web/package.json web/package-lock.json web/build.mjs $(wildcard web/src/*) | system
	cd web && npm ci --no-audit --no-fund --loglevel=error && node build.mjs

web: $(WEB_STAMP)

run: $(STAMP) system $(WEB_STAMP)
	$(BIN)/gridcover db start
	$(BIN)/gridcover db migrate
	$(BIN)/gridcover demo load --if-empty
	$(BIN)/gridcover serve --host $(HOST) --port $(PORT)

test: $(STAMP) system $(WEB_STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check geo api tests scripts

clean:
	-$(BIN)/gridcover db stop
	rm -rf $(VENV) .pytest_cache .ruff_cache web/node_modules api/static
