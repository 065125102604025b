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

# The default job, the argmax-quick recipe: the NTM and a parameter-matched MLP trained on argmax over lists of
# 2-8 (two stages), then both on fresh lists of 8, 16 and 32: a table and a figure. ~3 min on 2 CPU cores;
# finished runs are reused.
train: $(STAMP)
	$(BIN)/python train.py --recipe argmax-quick

# The classic anchor: the NTM on copy (lengths 1-20) until < 0.1 bits per sequence.
train-copy: $(STAMP)
	$(BIN)/python train.py --task copy --model ntm --seed 0 --workdir runs/copy-s0 --target 0.1 --overwrite

# README "Copy": 10 seeds of the paper's set-up to < 0.1 bits per sequence, then the summary table.
copy-seeds: $(STAMP)
	for s in 0 1 2 3 4 5 6 7 8 9; do $(BIN)/python train.py --task copy --seed $$s --target 0.1 --log-every 80 \
		--workdir runs/copy10/s$$s --overwrite --no-progress || exit 1; done
	$(BIN)/python -m lab.summary runs/copy10/s* --target 0.1 --json runs/copy10/summary.json

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup tests

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

# Every figure and table of the README (lab/reproduce.py): argmax-quick trained and compared (1 seed), the
# detector on its models and the zoo, the compiled NTM's figures; one call from scratch is timed in
# docs/results/timings.json ("one_call"). Runs in runs/figures-small (finished runs are reused).
figures: $(STAMP)
	$(BIN)/python -m lab.reproduce --preset small

# Every recipe over five seeds (train.py --recipe NAME --seeds 0 1 2 3 4), the other kept presets at their
# whole budget with detection, copy 10 seeds, associative recall, the compiled NTM's sweep and the CPU
# benchmark; runs in runs/, outputs in docs/full/. Runtime: docs/reproducing.md.
figures-full: $(STAMP)
	$(BIN)/python -m lab.reproduce --preset full

clean-venv:
	rm -rf $(VENV)
