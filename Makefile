# Two commands set everything up: `make train` and `make test` create and reuse .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train train-copy copy-seeds test bench install clean-venv

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

# README "Copy": 10 seeds of the paper's set-up to < 0.1 bits per sequence, then the summary table.
copy-seeds: $(STAMP)
	for s in 0 1 2 3 4 5 6 7 8 9; do $(BIN)/python train.py --task copy --seed $$s --target 0.1 --log-every 80 \
		--workdir runs/copy10/s$$s --overwrite --no-progress || exit 1; done
	$(BIN)/python -m lab.summary runs/copy10/s* --target 0.1 --json runs/copy10/summary.json

test: $(STAMP)
	$(BIN)/python -m pytest tests

bench: $(STAMP)
	$(BIN)/python -m lab.bench --batch-sizes 1 16 64 256 1024 --tasks copy argmax --models ntm lstm mlp --out bench.json

clean-venv:
	rm -rf $(VENV)
