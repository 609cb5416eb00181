# The two commands a newcomer needs: `make run` (the product) and `make test` (the whole suite).
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
	$(BIN)/propcrm demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/propcrm bench engine

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .cache
