# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO := .driftloop/demo
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: install demo test bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Simulate two weeks of support traffic with a product launch on day 10, land it in
# the lake twice (the second run must land nothing), then say what is there.
demo: install
	rm -rf $(DEMO)
	$(BIN)/driftloop simulate --out $(DEMO)/logs --days 14 --per-day 2000 \
		--scenario new-topic --drift-day 10 --seed 7 \
		--model support-assistant --model sales-assistant
	$(BIN)/driftloop ingest --source $(DEMO)/logs
	$(BIN)/driftloop ingest --source $(DEMO)/logs
	$(BIN)/driftloop status

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf .driftloop
