# Two commands set everything up: `make train` and `make test` create and reuse .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train test bench install clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Small default: the NTM on copy (lengths 1-20) until 0.1 bits per sequence; a few minutes at most on 2 CPU cores.
train: $(STAMP)
	$(BIN)/python train.py --task copy --model ntm --seed 0 --workdir runs/make-train --target 0.1 --steps 3000 --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest tests

bench: $(STAMP)
	$(BIN)/python -m lab.bench --batch-sizes 1 16 64 --out bench.json

clean-venv:
	rm -rf $(VENV)
