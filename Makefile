# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test clean

$(BIN)/delf: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq --upgrade pip
	$(BIN)/pip install -qq -e '.[test]'
	touch $@

install: $(BIN)/delf

demo: install
	$(BIN)/delf demo --out out/demo

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out
