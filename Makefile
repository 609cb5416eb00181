# The two commands a newcomer needs: `make run` (the service with a live demo firm) and `make test`
# (the whole suite; the PostgreSQL tests use 127.0.0.1:5432/test and skip without it, except under CI=true).
# Both create ./.venv with everything the project needs; nothing else has to be installed first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the web application's front-end libraries (Chart.js) from the npm registry, pinned by package-lock.json
VENDOR := src/propcrm/web/static/vendor
VENDOR_STAMP := $(VENDOR)/.installed

.PHONY: run test bench clean browser

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

$(VENDOR_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(VENDOR)
	cp node_modules/chart.js/dist/chart.umd.min.js $(VENDOR)/chart.umd.js
	cp node_modules/chart.js/LICENSE.md $(VENDOR)/chart.js.LICENSE.md
	touch $(VENDOR_STAMP)

# the browser tests drive Debian's Chromium (no browser download is possible); installed when missing
browser:
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  (apt-get install -y -q chromium >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)); } || \
	  echo "note: /usr/bin/chromium is missing and could not be installed; the browser tests will skip (fail under CI=true)"

run: $(STAMP) $(VENDOR_STAMP)
	$(BIN)/propcrm serve --demo

test: $(STAMP) $(VENDOR_STAMP) browser
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/propcrm bench engine

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .cache node_modules $(VENDOR)
