# Two commands set everything up: `make train` and `make test` create and reuse .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train train-copy copy-seeds test bench bench-gpu figures figures-full install clean-venv

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
	$(BIN)/python -m pytest -n 2 tests

# Training throughput of what train.py runs by default (NTM, LSTM, MLP on copy and argmax, batch 1-1024),
# against the machine's measured matmul peak, with the PyTorch reference NTM beside it when it is set up
# in .bench-reference/ (lab/reference.py says how). Writes bench.json and bench.md; ~10 min on 2 CPU cores.
bench: $(STAMP)
	$(BIN)/python -m lab.bench

# The same on one GPU (batch 1-4096, copy): installs JAX's CUDA plugin for the installed JAX, then writes
# docs/results/bench-gpu.json and docs/results/bench-gpu.md.
bench-gpu: $(STAMP)
	$(BIN)/python -m pip install -q "jax[cuda12]==$$($(BIN)/python -c 'import jax; print(jax.__version__)')"
	$(BIN)/python -m lab.bench --preset gpu

# Every figure and table of the README (lab/reproduce.py): one seed per search experiment at half its
# budget, copy 10 seeds, detection + calibration, compiled NTM figures, the CPU benchmark. ~40 min on
# 2 CPU cores; finished runs in runs/figures-small are reused. Outputs: docs/figures, docs/results.
figures: $(STAMP)
	$(BIN)/python -m lab.reproduce --preset small

# The same at every preset's full budget and seeds (+ associative recall, the compiled NTM's exhaustive
# sweep); runs in runs/, outputs in docs/full. Expected runtime: see README "Reproducing".
figures-full: $(STAMP)
	$(BIN)/python -m lab.reproduce --preset full

clean-venv:
	rm -rf $(VENV)
