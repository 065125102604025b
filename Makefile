# Two commands set everything up: `make train` and `make test` create and reuse .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train train-copy test bench install clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Small default: the NTM and a parameter-matched MLP on argmax (lists of 2-8), then their in-range
# and extrapolation error side by side; a few minutes on 2 CPU cores. Finished runs are reused.
train: $(STAMP)
	$(BIN)/python train.py --experiment argmax-quick
	$(BIN)/python eval.py --experiment argmax-quick

# The classic anchor: the NTM on copy (lengths 1-20) until < 0.1 bits per sequence.
train-copy: $(STAMP)
	$(BIN)/python train.py --task copy --model ntm --seed 0 --workdir runs/copy-s0 --target 0.1 --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest tests

bench: $(STAMP)
	$(BIN)/python -m lab.bench --batch-sizes 1 16 64 --out bench.json

clean-venv:
	rm -rf $(VENV)
