# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO := .driftloop/demo
TORCH ?= torch==2.13.0
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: install demo test bench lint clean up down

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first: left to the resolver, pip fetches gigabytes of CUDA.
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Simulate two weeks of traffic with a product launch on 2026-11-11, land it in the
# lake twice (the second run must land nothing), monitor the days around the launch,
# curate the pre-launch traffic into a first dataset version, then the launch days
# focused by the monitor's verdict into a second, show how they differ, train a LoRA
# adapter on it (over a small base pre-trained on the pre-launch traffic), let the
# gate judge it against that champion, trace the champion back to the logs, and say
# what is there and where to look.
# The demo has a home of its own, fresh each time but for its embedding cache, so a
# second `make demo` behaves as the first and your own .driftloop is left alone.
demo: export DRIFTLOOP_HOME = $(CURDIR)/$(DEMO)
demo: install
	mkdir -p $(DEMO)
	find $(DEMO) -mindepth 1 -maxdepth 1 ! -name cache -exec rm -rf {} +
	$(BIN)/driftloop simulate --out $(DEMO)/logs --days 14 --per-day 2000 \
		--scenario new-topic --drift-day 10 --seed 7 \
		--model support-assistant --model sales-assistant
	$(BIN)/driftloop ingest --source $(DEMO)/logs
	$(BIN)/driftloop ingest --source $(DEMO)/logs
	DRIFTLOOP_MONITOR_SAMPLE_SIZE=500 $(BIN)/driftloop monitor --end 2026-11-13 --windows 4
	$(BIN)/driftloop curate --end 2026-11-11
	$(BIN)/driftloop curate --start 2026-11-11 --end 2026-11-15 --monitor-run latest
	$(BIN)/driftloop datasets list
	$(BIN)/driftloop datasets diff --name support-assistant
	$(BIN)/driftloop finetune --dataset support-assistant@latest
	$(BIN)/driftloop evaluate --model support-assistant
	$(BIN)/driftloop lineage champion --model support-assistant
	$(BIN)/driftloop status

# A Prefect server and an MLflow server with their UIs, a worker, and prefect.yaml
# deployed: the loop then runs by itself. `make down` stops what `make up` started.
# They serve the demo's home unless DRIFTLOOP_HOME names another.
up: install
	DRIFTLOOP_HOME=$${DRIFTLOOP_HOME:-$(CURDIR)/$(DEMO)} $(BIN)/driftloop up

down:
	DRIFTLOOP_HOME=$${DRIFTLOOP_HOME:-$(CURDIR)/$(DEMO)} $(BIN)/driftloop down

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf .driftloop
