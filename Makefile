# The two commands a newcomer needs: `make run` (the service with a live demo firm) and `make test`
# (the whole suite; the PostgreSQL tests use 127.0.0.1:5432/test and skip without it, except under CI=true).
# Both create ./.venv from lock files of exact versions and hashes (requirements/*.txt, made by `make lock`);
# nothing else has to be installed first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# running needs requirements/run.txt; the tests need requirements/test.txt (the same pins plus the test extras).
# Both also pin pip and the build backend (requirements/install-tools.in), so the project itself is installed
# editable with the locked setuptools and nothing unpinned is fetched.
RUN_LOCK := requirements/run.txt
TEST_LOCK := requirements/test.txt
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
# where `propcrm serve` listens: `make run PORT=8080` (HOST=0.0.0.0 to listen on every interface)
HOST ?= 127.0.0.1
PORT ?= 8000
# the web application's front-end libraries (Chart.js; Swagger UI for /docs) from the npm registry, pinned by
# package-lock.json; no install scripts run (swagger-ui-dist's analytics dependency would report the install)
VENDOR := src/propcrm/web/static/vendor
VENDOR_STAMP := $(VENDOR)/.installed
# `make lock` resolves pyproject.toml into the lock files with uv (itself pinned by requirements/lock-tool.txt)
LOCK_VENV := .cache/lock-tool
LOCK_FLAGS := --quiet --universal --python-version 3.11 --generate-hashes
LOCK_INPUTS := pyproject.toml requirements/install-tools.in

.PHONY: run test bench clean browser lock lock-upgrade lock-tool

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(RUN_STAMP): $(RUN_LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(RUN_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(TEST_STAMP): $(TEST_LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(TEST_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(VENDOR_STAMP): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	mkdir -p $(VENDOR)
	cp node_modules/chart.js/dist/chart.umd.min.js $(VENDOR)/chart.umd.js
	cp node_modules/chart.js/LICENSE.md $(VENDOR)/chart.js.LICENSE.md
	cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css $(VENDOR)/
	cp node_modules/swagger-ui-dist/favicon-32x32.png $(VENDOR)/swagger-ui-favicon.png
	cp node_modules/swagger-ui-dist/LICENSE $(VENDOR)/swagger-ui.LICENSE
	cp node_modules/swagger-ui-dist/NOTICE $(VENDOR)/swagger-ui.NOTICE
	touch $(VENDOR_STAMP)

# the browser tests drive Debian's Chromium (no browser download is possible); installed when missing
browser:
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  (apt-get install -y -q chromium >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)); } || \
	  echo "note: /usr/bin/chromium is missing and could not be installed; the browser tests will skip (fail under CI=true)"

run: $(RUN_STAMP) $(VENDOR_STAMP)
	$(BIN)/propcrm serve --demo --host $(HOST) --port $(PORT)

test: $(TEST_STAMP) $(VENDOR_STAMP) browser
	$(BIN)/python -m pytest -q

bench: $(RUN_STAMP)
	$(BIN)/propcrm bench engine

# Re-resolve the lock files after a change to pyproject.toml's dependencies, keeping every pin that still fits;
# `make lock-upgrade` moves every pin to the newest release that fits. Commit pyproject.toml and requirements/ together.
$(LOCK_VENV)/bin/uv: requirements/lock-tool.txt
	$(PY) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --require-hashes -r requirements/lock-tool.txt
	touch $@

lock: $(LOCK_VENV)/bin/uv
	$(LOCK_VENV)/bin/uv pip compile $(LOCK_FLAGS) --custom-compile-command "make lock" $(UPGRADE) $(LOCK_INPUTS) -o $(RUN_LOCK)
	$(LOCK_VENV)/bin/uv pip compile $(LOCK_FLAGS) --custom-compile-command "make lock" $(UPGRADE) --extra test $(LOCK_INPUTS) -c $(RUN_LOCK) -o $(TEST_LOCK)

lock-upgrade:
	$(MAKE) lock UPGRADE=--upgrade

# uv's own pin: edit requirements/lock-tool.in, then `make lock-tool`
lock-tool: $(LOCK_VENV)/bin/uv
	$(LOCK_VENV)/bin/uv pip compile $(LOCK_FLAGS) --custom-compile-command "make lock-tool" requirements/lock-tool.in -o requirements/lock-tool.txt

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .cache node_modules $(VENDOR)
