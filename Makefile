# Two commands after cloning: `make demo` and `make test`. Both bootstrap everything.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup sysdeps test lint demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

sysdeps:
	@bash scripts/ensure-apt.sh jq curl systemd postgresql chromium

setup: sysdeps $(STAMP)

lint: setup
	$(VENV)/bin/ruff check watchd tests $(wildcard bench)
	$(VENV)/bin/ruff format --check watchd tests $(wildcard bench)
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/watchd demo

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
