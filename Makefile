# The two commands a newcomer runs: `make demo` and `make test`. Each sets up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-reliability bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

# The flagship job on the embedded default: a local Ray instance and synthetic UNBC data.
demo: $(STAMP)
	$(BIN)/python jobs/unbc_cv.py --synthetic --output runs/demo_unbc_cv --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest tests -m "not reliability"

# Killed workers, lost nodes, killed drivers, full disks, crashed replicas and a soak
# (docs/reliability.md): minutes of real faults on a local multi-node cluster.
test-reliability: $(STAMP)
	$(BIN)/python -m pytest tests -m reliability

bench: $(STAMP)
	$(BIN)/python bench/run.py --output bench/results/bench.json

clean:
	rm -rf runs bench/results
