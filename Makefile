# The two commands a newcomer needs: `make run` (the service with a live demo firm) and `make test`
# (the whole suite; the PostgreSQL tests use 127.0.0.1:5432/test and skip without it, except under CI=true).
# Both create ./.venv with everything the project needs; nothing else has to be installed first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/propcrm serve --demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/propcrm bench engine

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .cache
