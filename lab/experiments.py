"""Named experiments: one task, several models trained on the same budget, one comparison.

``python train.py --experiment NAME`` trains every (model, seed) of a preset into
``runs/NAME/<label>-s<seed>``; ``python eval.py --experiment NAME`` compares them (see
lab/compare.py). Baselines are swapped by name through the same trainer:

- ``ntm``: the NTM, steps tied to problem size;
- ``lstm``: an LSTM with the same inputs and steps and no external memory (hidden size = the
  NTM's controller size, so it is the NTM minus its memory);
- ``mlp``: sees the whole problem at once, inputs padded to the largest size and step multiplier
  evaluated, and emits one answer (repeated at every step; the search tasks score only the last),
  hidden width chosen so its parameter count matches the NTM's (to within one hidden unit);
  ``mlp-10x`` has ten times as many parameters.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lab import models
from lab.config import TrainConfig
from lab.models import ModelConfig
from lab.rundir import run_dir
from tasks import Task, make_task


@dataclasses.dataclass(frozen=True)
class Stage:
    """One model of one preset: a curriculum stage, and the parent a later stage starts from. Its run for a
    seed is ``<runs root>/<experiment>/<model>-s<seed>``."""
    experiment: str
    model: str  # a ModelSpec label of that experiment

    def run_dir(self, seed: int, runs_root: str | Path = "runs") -> Path:
        return run_dir(runs_root, self.experiment, self.model, seed)

    def __str__(self) -> str:
        return f"{self.experiment}/{self.model}"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    label: str
    model: str  # a name in lab.models.MODELS
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # ModelConfig fields
    match_ntm_params: float = 0.0  # MLP only: hidden width for this multiple of the NTM's parameters
    # start from another preset's run of the same seed (a curriculum stage); it must have finished
    parent: Stage | None = None
    head_entropy: float = 0.0  # NTM only: TrainConfig.head_entropy (a penalty for diffuse heads)
    head_hint: float = 0.0  # NTM only: TrainConfig.head_hint (heads trained toward the task's tape rows)
    write_hint: float = 0.0  # NTM only: TrainConfig.write_hint (how strongly it writes, trained toward the task's writes)
    progressive_loss: float = 0.0  # NTM / LSTM: TrainConfig.progressive_loss (Bansal et al. 2022)


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    task: str
    task_options: dict[str, Any]  # the task as every evaluation sees it
    train_sizes: tuple[int, int]
    eval_sizes: tuple[int, ...]  # metric vs size; sizes beyond train_sizes are extrapolation
    ntm: ModelConfig
    models: tuple[ModelSpec, ...]
    steps: int
    batch_size: int = 32
    lr: float = 3e-3
    lr_half_life: int = 0  # optimizer steps; 0: constant learning rate
    size_buckets: int = 1  # TrainConfig.size_buckets
    seeds: tuple[int, ...] = (0, 1, 2)
    scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)  # test-time step multipliers
    in_range_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # eval at training sizes
    beyond_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # eval beyond them
    log_every: int = 100
    # training signals (TrainConfig): the training distribution (the task's training_options) and the weight
    # of step supervision
    train_distribution: dict[str, Any] = dataclasses.field(default_factory=dict)
    trace_loss: float = 0.0

    def base_task(self) -> Task:
        lo, hi = self.train_sizes
        return make_task(self.task, **self.task_options).with_sizes(lo, hi)

    def eval_task(self, size: int, scale: float = 1.0) -> Task:
        """The task for evaluating at one size (and step multiplier): held-out instances inside the
        training range, any instance beyond it."""
        lo, hi = self.train_sizes
        extra = self.in_range_options if size <= hi else self.beyond_options
        task = make_task(self.task, **{**self.task_options, **extra}).with_sizes(size, size)
        return dataclasses.replace(task, step_scale=scale) if scale != 1.0 else task

    def largest_steps(self) -> int:
        """The longest sequence any evaluation uses: the MLP's input is padded to it."""
        return max(self.eval_task(s, c).max_steps() for s in self.eval_sizes for c in self.scales)

    def ntm_params(self) -> int:
        task = self.base_task()
        m = models.make_model("ntm", task.input_size, task.output_size, self.ntm, task.max_steps(), 0)
        return models.count_params(m)

    def config(self, spec: ModelSpec, seed: int, runs_root: str = "runs") -> TrainConfig:
        task = self.base_task()
        mc = dataclasses.replace(self.ntm, hidden_size=self.ntm.controller_size)
        if spec.model == "mlp":
            T = self.largest_steps()
            # search tasks are scored once, at the last step: one output vector, repeated over time
            mc = dataclasses.replace(mc, mlp_max_steps=T, mlp_one_output=True)
            if spec.match_ntm_params:
                mc = dataclasses.replace(mc, hidden_size=models.mlp_hidden_for(
                    int(spec.match_ntm_params * self.ntm_params()), task.input_size, task.output_size, T,
                    mc.mlp_layers, one_output=True))
        mc = dataclasses.replace(mc, **spec.overrides).for_model(spec.model)
        return TrainConfig(task=self.task, model=spec.model, seed=seed, batch_size=self.batch_size, steps=self.steps,
                           lr=self.lr, lr_half_life=self.lr_half_life, size_buckets=self.size_buckets,
                           min_size=self.train_sizes[0], max_size=self.train_sizes[1],
                           task_options=dict(self.task_options), train_distribution=dict(self.train_distribution),
                           trace_loss=self.trace_loss, model_config=mc, log_every=self.log_every,
                           checkpoint_every=max(self.log_every, self.steps // 4),
                           init_from=str(spec.parent.run_dir(seed, runs_root)) if spec.parent else "",
                           head_entropy=spec.head_entropy, head_hint=spec.head_hint, write_hint=spec.write_hint,
                           progressive_loss=spec.progressive_loss)

    def runs(self, models_: list[str] | None = None, seeds: list[int] | None = None,
             runs_root: str = "runs") -> list[tuple[str, TrainConfig]]:
        """(run name, config) for every model and seed, optionally restricted; ``runs_root`` locates the runs
        that ``init_from`` names."""
        specs = [s for s in self.models if not models_ or s.label in models_]
        if models_:
            unknown = set(models_) - {s.label for s in self.models}
            if unknown:
                raise ValueError(f"experiment {self.name} has no model {sorted(unknown)}; "
                                 f"choose from {[s.label for s in self.models]}")
        return [(f"{s.label}-s{seed}", self.config(s, seed, runs_root)) for s in specs for seed in (seeds or self.seeds)]


BASELINES = (
    ModelSpec("ntm", "ntm"),
    ModelSpec("lstm", "lstm"),
    ModelSpec("mlp", "mlp", match_ntm_params=1.0),
    ModelSpec("mlp-10x", "mlp", match_ntm_params=10.0),
)
SMALL_NTM = ModelConfig(memory_rows=32, memory_width=16, controller="lstm", controller_size=64)
# the argmax-direct NTM: SMALL_NTM with a write gate (trained toward the loop's writes by the write hint) whose logit
# is scaled by 10, so that it can switch on a one-level gap (docs/argmax.md, "The write gate")
GATED_NTM = dataclasses.replace(SMALL_NTM, write_gate=True, write_gate_gain=10.0)
# argmax with 8-bit random labels and values on a 256-level grid (the argmax-search and argmax-direct chains)
_ARGMAX = {"index_bits": 8, "labels": "random", "levels": 256}

def _continues(experiment: str, ntm: str = "ntm", head_entropy: float = 0.0, progressive_loss: float = 0.0,
               write_hint: float = 0.0) -> tuple[ModelSpec, ModelSpec]:
    """The NTM and the LSTM of a later stage, each starting from its own run of ``experiment`` (the NTM's
    label there: ``ntm``)."""
    return (ModelSpec("ntm", "ntm", parent=Stage(experiment, ntm), head_entropy=head_entropy,
                      progressive_loss=progressive_loss, write_hint=write_hint),
            ModelSpec("lstm", "lstm", parent=Stage(experiment, "lstm"), progressive_loss=progressive_loss))


def _argmax_hard_stage(name: str, description: str, models_: tuple[ModelSpec, ...], steps: int, lr: float,
                       hard: dict[str, Any] | None = None, trace_loss: float = 0.0, batch_size: int = 32,
                       lr_half_life: int = 12000, ntm: ModelConfig = SMALL_NTM) -> Experiment:
    """A later stage of argmax-long's models trained on hard lists (min_spread 1/16 and 0-4 extra steps unless
    ``hard`` says otherwise), evaluated on the task's own uniform lists."""
    return Experiment(
        name=name, description=description,
        task="argmax", task_options=_ARGMAX, train_distribution={"extra_steps": 4, "min_spread": 1 / 16, **(hard or {})},
        trace_loss=trace_loss, train_sizes=(2, 16), eval_sizes=(8, 16, 32, 64), ntm=ntm, models=models_,
        steps=steps, batch_size=batch_size, lr=lr, lr_half_life=lr_half_life, size_buckets=3, seeds=(0,),
    )


def _modsquare_trace(name: str, what: str, parent: str = "", lr: float = 1e-2) -> Experiment:
    """Keep-the-best on random values uniform on [0, n) (the real task's value widths) with the loop's running k
    supervised at every step (trace_loss 1), n of 4-8 bits; evaluated on the real values of held-out n at 4-8
    bits and every n at 10-12. ``parent``: the preset whose models this one continues (a later stage)."""
    models_ = _continues(parent, head_entropy=0.3) if parent else (
        ModelSpec("ntm", "ntm", head_entropy=0.3), ModelSpec("lstm", "lstm"))
    return Experiment(
        name=name,
        description=f"{what}; keep-the-best on random values uniform on [0, n) with the loop's running k supervised "
                    "at every step (trace_loss 1), n of 4-8 bits (up to 48 candidates), the NTM with a head-entropy "
                    "penalty of 0.3; evaluated on the real values (i*i mod n, last step only) of held-out n at 4-8 "
                    "bits and every n at 10 and 12 bits",
        task="modsquare", task_options={"hint": "value", "bits": 12}, train_distribution={"values": "random"},
        trace_loss=1.0, train_sizes=(4, 8), eval_sizes=(4, 6, 8, 10, 12), ntm=SMALL_NTM, models=models_,
        steps=24000, batch_size=32, lr=lr, lr_half_life=8000, size_buckets=3, seeds=(0,),
        in_range_options={"split": "holdout"}, beyond_options={"split": "all"}, scales=(0.5, 1.0, 2.0),
    )


# the bit-serial modsquare loop: 20 memory rows (numbers of up to 20 bits, one bit per row), 4 columns, write gate
SERIAL_NTM = ModelConfig(memory_rows=20, memory_width=4, controller="lstm", controller_size=64, write_gate=True)


def _modsquare_serial(name: str, what: str, loops: dict[str, int], steps: int, lr: float, lr_half_life: int = 0,
                      parent: str = "", batch_size: int = 32, pad: int = 4, write_hint: float = 0.0) -> Experiment:
    """A stage of the bit-serial modsquare loop: random values with random labels, n of 3-8 bits written with 0-``pad``
    extra high zero bits, loops as ``loops`` says (max_candidates: cut to that many; loop_length: U{1..C} candidates
    whatever n), each comparison's outcome supervised (trace_loss 1), the NTM's heads hinted toward the tape
    machine's rows (head_hint 1) and, with ``write_hint``, its write gate toward the steps that machine writes on;
    evaluated on the real values (i*i mod n, labels i) of held-out n at 6 and 8 bits and of every n at 10-16 bits."""
    ntm = ModelSpec("ntm", "ntm", head_hint=1.0, write_hint=write_hint, parent=Stage(parent, "ntm") if parent else None)
    lstm = ModelSpec("lstm", "lstm", parent=Stage(parent, "lstm") if parent else None)
    loop_text = (f"loops cut to {loops['max_candidates']} candidates" if "max_candidates" in loops
                 else f"loops of 1-{loops['loop_length']} candidates whatever n")
    return Experiment(
        name=name,
        description=f"{what}: the modsquare loop with every number one bit per step (modsquare_serial), learnt on random "
                    f"values with random labels, n of 3-8 bits" + (f" written with 0-{pad} extra high zero bits" if pad else "")
                    + f", {loop_text}, each comparison's outcome supervised (trace_loss 1), the NTM's heads hinted "
                    "toward the rows of the tape machine (head_hint 1)"
                    + (f" and its write gate toward that machine's write steps (write_hint {write_hint:g})" if write_hint
                       else "") + f", {steps:,} steps x {batch_size} at lr {lr:g}; "
                    "evaluated on the real values (i*i mod n, labels i, every candidate) of held-out n at 6-8 bits and "
                    "every n at 10-16 bits",
        task="modsquare_serial", task_options={},
        train_distribution={"values": "random", "labels": "random", "pad": pad, **loops},
        trace_loss=1.0, train_sizes=(3, 8), eval_sizes=(6, 8, 10, 12, 16), ntm=SERIAL_NTM, models=(ntm, lstm),
        steps=steps, batch_size=batch_size, lr=lr, lr_half_life=lr_half_life, seeds=(0, 1, 2, 3, 4), scales=(1.0,),
        in_range_options={"split": "holdout"}, beyond_options={"split": "all"}, log_every=500,
    )


# Presets that a result of the README or docs/ depends on; the findings of retired ones are in docs/.
EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment(
        name="argmax-quick",
        description="stage 1 of make train (recipe argmax-quick): the NTM and a parameter-matched MLP on argmax over "
                    "lists of 2-8 with random distinct labels (every answer bit seen in training), 12,000 steps x 64 at "
                    "lr 1e-2 halved every 4,000",
        task="argmax", task_options={"index_bits": 5, "labels": "random"}, train_sizes=(2, 8), eval_sizes=(4, 8, 16, 32),
        ntm=SMALL_NTM, models=(ModelSpec("ntm", "ntm"), ModelSpec("mlp", "mlp", match_ntm_params=1.0)),
        steps=12000, batch_size=64, lr=1e-2, lr_half_life=4000, seeds=(0,), scales=(0.5, 1.0, 2.0), log_every=100,
    ),
    Experiment(
        name="argmax-quick-hard",
        description="stage 2 of make train: argmax-quick's models, 6,000 more steps x 64 at lr 3e-3 (halved every "
                    "3,000) on hard lists (values squeezed into the top w of [0, 1], w log-uniform on [1/8, 1]: close "
                    "values at lengths up to 8); evaluated on uniform lists",
        task="argmax", task_options={"index_bits": 5, "labels": "random"}, train_distribution={"min_spread": 0.125},
        train_sizes=(2, 8),
        eval_sizes=(4, 8, 16, 32), ntm=SMALL_NTM,
        models=(ModelSpec("ntm", "ntm", parent=Stage("argmax-quick", "ntm")),
                ModelSpec("mlp", "mlp", match_ntm_params=1.0, parent=Stage("argmax-quick", "mlp"))),
        steps=6000, batch_size=64, lr=3e-3, lr_half_life=3000, seeds=(0,), scales=(0.5, 1.0, 2.0), log_every=100,
    ),
    Experiment(
        name="argmax-long",
        description="stage 1 of argmax-search: argmax over lists of 2-16 with random distinct labels, values on a "
                    "256-level grid, 0-4 extra steps, 36,000 steps x 32, the learning rate halved every 12,000 steps "
                    "and 3 size buckets; the NTM with 128 memory rows, ntm-r32 with the usual 32 (the one later "
                    "stages continue), and the LSTM",
        task="argmax", task_options=_ARGMAX, train_distribution={"extra_steps": 4},
        train_sizes=(2, 16), eval_sizes=(8, 16, 32, 64), ntm=SMALL_NTM,
        models=(ModelSpec("ntm", "ntm", {"memory_rows": 128}), ModelSpec("ntm-r32", "ntm"), ModelSpec("lstm", "lstm")),
        steps=36000,
        batch_size=32, lr=1e-2, lr_half_life=12000, size_buckets=3, seeds=(0,),
    ),
    _argmax_hard_stage(
        "argmax-spread", "stage 2 of argmax-search: 36,000 more steps on hard lists (each list's values squeezed into "
        "the top w of the grid, w log-uniform on [1/16, 1]: the near and exact ties of long lists, at lengths up to "
        "16); evaluated on uniform lists", _continues("argmax-long", ntm="ntm-r32"), steps=36000, lr=3e-3),
    _argmax_hard_stage(
        "argmax-sharp", "stage 3 of argmax-search: 72,000 more steps on the same hard lists at lr 1e-3 (halved every "
        "12,000), the NTM with a head-entropy penalty of 0.3 (sharp heads: a purer register row); evaluated on "
        "uniform lists", _continues("argmax-spread", head_entropy=0.3), steps=72000, lr=1e-3),
    _argmax_hard_stage(
        "argmax-trace", "stage 4 of argmax-search: 36,000 more steps on the same hard lists at lr 1e-3 (halved every "
        "12,000) with the loop's running answer supervised at every step (trace_loss 1), the NTM keeping its "
        "head-entropy penalty; evaluated on uniform lists, last step only",
        _continues("argmax-sharp", head_entropy=0.3), steps=36000, lr=1e-3, trace_loss=1.0),
    _argmax_hard_stage(
        "argmax-ties", "stage 5 of argmax-search: 18,000 more steps of 128 lists at lr 3e-4 (halved every 12,000), "
        "half the lists with a tie or one-level gap planted at their top (near_ties 0.5: the comparisons long lists "
        "get wrong), step supervision and the NTM's head-entropy penalty kept; evaluated on uniform lists, last step "
        "only", _continues("argmax-trace", head_entropy=0.3), steps=18000, lr=3e-4,
        hard={"near_ties": 0.5}, trace_loss=1.0, batch_size=128),
    _argmax_hard_stage(
        "argmax-ties2", "stage 6 of argmax-search: 18,000 more steps of 128 lists at lr 3e-4 on wider lists "
        "(min_spread 1/4) with more planted near ties (near_ties 0.75): more ties after a large jump, the ones "
        "argmax-ties still gets wrong; evaluated on uniform lists, last step only",
        _continues("argmax-ties", head_entropy=0.3), steps=18000, lr=3e-4,
        hard={"near_ties": 0.75, "min_spread": 0.25}, trace_loss=1.0, batch_size=128),
    Experiment(
        name="argmax-direct",
        description="stage 1 of argmax-direct: argmax over lists of 2-16 (random distinct labels, values on a "
                    "256-level grid, 0-4 extra steps) with the loop's running answer supervised at every step "
                    "(trace_loss 1) from the first step, 24,000 steps x 32 at lr 1e-2 halved every 8,000, 3 size "
                    "buckets; the NTM has a write gate (logit x 10) trained toward the steps that improve the best "
                    "(write_hint 1); evaluated on uniform lists, last step only",
        task="argmax", task_options=_ARGMAX, train_distribution={"extra_steps": 4}, trace_loss=1.0,
        train_sizes=(2, 16), eval_sizes=(8, 16, 32, 64), ntm=GATED_NTM,
        models=(ModelSpec("ntm", "ntm", write_hint=1.0), ModelSpec("lstm", "lstm")),
        steps=24000, batch_size=32, lr=1e-2, lr_half_life=8000, size_buckets=3, seeds=(0,),
    ),
    _argmax_hard_stage(
        "argmax-direct-hard", "stage 2 of argmax-direct: 72,000 more steps at lr 1e-3 (halved every 24,000) on hard "
        "lists (min_spread 1/16) with half of them given a planted tie or one-level gap at the top (near_ties 0.5), "
        "step supervision and the NTM's write hint kept and its head-entropy penalty 0.3 added; evaluated on uniform "
        "lists, last step only", _continues("argmax-direct", head_entropy=0.3, write_hint=1.0), steps=72000, lr=1e-3,
        hard={"near_ties": 0.5}, trace_loss=1.0, lr_half_life=24000, ntm=GATED_NTM),
    Experiment(
        name="modsquare-value",
        description="modsquare with hint=value (step i shows i and i*i mod n: only keep-the-best is left to learn); "
                    "n of 4-8 bits, held-out n inside, 9-10 bits beyond",
        task="modsquare", task_options={"hint": "value", "bits": 10}, train_sizes=(4, 8), eval_sizes=(6, 8, 9, 10),
        ntm=SMALL_NTM, models=BASELINES, steps=3000, batch_size=32, lr=3e-3,
        in_range_options={"split": "holdout"}, beyond_options={"split": "all"}, scales=(0.5, 1.0, 2.0),
    ),
    _modsquare_trace("modsquare-trace-n", "stage 1 of modsquare-search"),
    _modsquare_trace("modsquare-trace-n2", "stage 2 of modsquare-search: 24,000 more steps at lr 3e-3",
                     parent="modsquare-trace-n", lr=3e-3),
    _modsquare_trace("modsquare-trace-n3", "stage 3 of modsquare-search: 24,000 more steps at lr 1e-3",
                     parent="modsquare-trace-n2", lr=1e-3),
    _modsquare_trace("modsquare-trace-n4", "stage 4 of modsquare-search: 24,000 more steps at lr 3e-4",
                     parent="modsquare-trace-n3", lr=3e-4),
    _modsquare_serial("modsquare-serial", "stage 1 of modsquare-serial", {"max_candidates": 6}, steps=6000, lr=3e-3),
    _modsquare_serial("modsquare-serial-2", "stage 2 of modsquare-serial", {"max_candidates": 16}, steps=8000,
                      lr=1e-3, lr_half_life=3000, parent="modsquare-serial"),
    _modsquare_serial("modsquare-serial-3", "stage 3 of modsquare-serial", {"loop_length": 64}, steps=4000, lr=1e-3,
                      lr_half_life=2000, parent="modsquare-serial-2", pad=0, write_hint=1.0),
    _modsquare_serial("modsquare-serial-4", "stage 4 of modsquare-serial", {"loop_length": 160}, steps=3000,
                      lr=5e-4, lr_half_life=1500, parent="modsquare-serial-3", batch_size=16, pad=0, write_hint=1.0),
    Experiment(
        name="polymax",
        description="maximise a polynomial of degree 2-6 on [0, 1] (gap loss), evaluated up to degree 24",
        task="polymax", task_options={"index_bits": 5}, train_sizes=(2, 6), eval_sizes=(4, 6, 12, 24),
        ntm=SMALL_NTM, models=BASELINES, steps=3000, batch_size=32, lr=3e-3,
    ),
    Experiment(
        name="polymax-oracle",
        description="polymax with a query oracle: after the d + 1 coefficients, d + 1 steps on which the model's last "
                    "output x comes back with P(x) and asinh P'(x) (in training 0-14 more, so that extra queries occur), "
                    "the answer its output at the last step, gap loss plus the same gap on every output from the last "
                    "coefficient on (trace_loss 1: an anytime loss), degrees 2-6, 20,000 steps x 32 at lr 3e-3 halved "
                    "every 7,000; the MLP sees the coefficients only; evaluated at degrees 2-12 with 0.5x-4x the queries "
                    "(python -m lab.optimisers compares the same queries spent by classical optimisers)",
        task="polymax", task_options={"index_bits": 4, "think": 1.0, "oracle": "slope", "step_offset": 0},
        train_distribution={"extra_steps": 14}, trace_loss=1.0, train_sizes=(2, 6), eval_sizes=(2, 4, 6, 8, 12),
        ntm=SMALL_NTM,
        models=(ModelSpec("ntm", "ntm"), ModelSpec("lstm", "lstm"), ModelSpec("mlp-10x", "mlp", match_ntm_params=10.0)),
        steps=20000, batch_size=32, lr=3e-3, lr_half_life=7000, seeds=(0, 1, 2, 3, 4), scales=(0.5, 1.0, 2.0, 4.0),
    ),
]}


def get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose from {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def spec(stage: Stage) -> ModelSpec:
    """The ModelSpec a stage names."""
    exp = get(stage.experiment)
    for s in exp.models:
        if s.label == stage.model:
            return s
    raise ValueError(f"experiment {exp.name} has no model {stage.model!r}; choose from {[s.label for s in exp.models]}")


def lineage(stage: Stage) -> list[Stage]:
    """Every stage ``stage`` chains back to, first stage first, ending with ``stage`` itself."""
    chain = [stage]
    while (parent := spec(chain[0]).parent) is not None:
        if parent in chain:
            raise ValueError(f"{stage}: its parents form a cycle through {parent}")
        chain.insert(0, parent)
    return chain


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A named result: chains of stages (each chain ends at one model of a preset and starts where its parents
    do), trained for every seed by ``train.py --recipe NAME``, then reported on fresh evaluation batches whose
    keys (``eval_keys``) no training run and no choice between runs ever used."""
    name: str
    description: str
    final: tuple[Stage, ...]  # one per model; the first is the headline model
    sizes: tuple[int, ...]  # problem sizes of the report (the final preset's evaluation tasks at each size)
    headline_size: int
    success_error: float  # a seed succeeds when its headline model's error at headline_size is at most this
    also: tuple[tuple[int, float], ...] = ()  # and at each of these (size, error), its error is at most that
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    eval_keys: tuple[int, ...] = (2, 3)  # lab.diagnose --seed 2 / --seed 3: never used to choose anything
    eval_batch: int = 8192  # examples per key and size
    # population-style selection at the first stage of every chain: this many runs per seed (training seeds
    # seed, seed + 1000, seed + 2000, ...), the one with the lowest error on a validation batch of the stage's
    # largest training size given select_scale x its steps (key select_key, select_batch examples; no longer
    # problem is ever seen: a loop that holds its answer for 4x the steps, where a walking head or a leaky
    # register does not) kept and continued; 1: no selection. Every candidate's training time counts.
    candidates: int = 1
    select_key: int = 1
    select_batch: int = 4096
    select_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.candidates < 1:
            raise ValueError(f"recipe {self.name}: candidates must be >= 1, got {self.candidates}")
        missing = sorted({n for n, _ in self.criteria()} - set(self.sizes))
        if missing:
            raise ValueError(f"recipe {self.name}: success sizes {missing} are not among its sizes {self.sizes}")
        if self.select_key in self.eval_keys:
            raise ValueError(f"recipe {self.name}: the validation key {self.select_key} is an evaluation key")

    def criteria(self) -> list[tuple[int, float]]:
        """(size, largest error) pairs a seed must all meet to succeed: the headline, then ``also``."""
        return [(self.headline_size, self.success_error), *self.also]

    def stages(self) -> list[Stage]:
        """Every stage of every chain, parents first, each once (the headline model's chain first)."""
        out: list[Stage] = []
        for final in self.final:
            out += [s for s in lineage(final) if s not in out]
        return out


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe(
        name="argmax-quick",
        description="make train: argmax over lists of 2-8, two stages (argmax-quick: uniform lists; argmax-quick-hard: "
                    "close values), the NTM and a parameter-matched MLP; error (1 - exact match) on uniform lists of 8, "
                    "16 (2x) and 32 (4x) with steps = length + 1; a seed succeeds when its NTM errs on at most 10% of the "
                    "lists of 16",
        final=(Stage("argmax-quick-hard", "ntm"), Stage("argmax-quick-hard", "mlp")), sizes=(8, 16, 32),
        headline_size=16, success_error=0.1, seeds=(0,)),
    Recipe(
        name="argmax-search",
        description="argmax over lists of at most 16, six stages (argmax-long -> argmax-spread -> argmax-sharp -> "
                    "argmax-trace -> argmax-ties -> argmax-ties2), the NTM and the LSTM; error (1 - exact match) on "
                    "uniform lists of 64, 128 and 256 with steps = length + 1; a seed succeeds at >= 99% exact at 64",
        final=(Stage("argmax-ties2", "ntm"), Stage("argmax-ties2", "lstm")), sizes=(16, 64, 128, 256),
        headline_size=64, success_error=0.01),
    Recipe(
        name="argmax-direct",
        description="argmax over lists of at most 16, two stages with every training signal early (argmax-direct: "
                    "uniform lists with the running answer supervised, the best of 3 runs per seed kept by its error "
                    "on lists of 16 given 4x the steps; argmax-direct-hard: hard lists, planted near ties, sharp "
                    "heads), the NTM (a write gate, its logit x 10, trained toward the loop's writes) and the LSTM; "
                    "error (1 - exact match) on uniform lists of 64, 128 and 256 with steps = length + 1; a seed "
                    "succeeds at >= 99% exact at 64",
        final=(Stage("argmax-direct-hard", "ntm"), Stage("argmax-direct-hard", "lstm")), sizes=(16, 64, 128, 256),
        headline_size=64, success_error=0.01, candidates=3, select_scale=4.0),
    Recipe(
        name="modsquare-search",
        description="the modsquare loop (hint=value) learnt on random values of the real widths with step "
                    "supervision, four stages (modsquare-trace-n -> -n2 -> -n3 -> -n4), the NTM and the LSTM; error "
                    "(exact match of k) on the real values of held-out n at 6 and 8 bits and of every n at 10 and 12 "
                    "bits; a seed succeeds when its NTM finds k on every held-out 6-bit n",
        final=(Stage("modsquare-trace-n4", "ntm"), Stage("modsquare-trace-n4", "lstm")), sizes=(6, 8, 10, 12),
        headline_size=6, success_error=0.0, seeds=(0,)),
    Recipe(
        name="modsquare-serial",
        description="the modsquare loop with every number one bit per step (modsquare_serial), four stages "
                    "(modsquare-serial: loops of at most 6 candidates; -2: at most 16; -3: 1-64; -4: 1-160), "
                    "trained on n of at most 8 bits, the NTM (heads hinted toward the tape machine's rows, and "
                    "from the third stage its write gate toward its write steps, in training) and the LSTM; error "
                    "(exact match of k, every answer bit) on the real values of held-out n at 8 bits and "
                    "of every n at 10, 12, 14 and 16 bits; a seed succeeds at <= 1% error at 12 bits, <= 5% at 16 "
                    "and <= 1% on held-out 8-bit n",
        final=(Stage("modsquare-serial-4", "ntm"), Stage("modsquare-serial-4", "lstm")),
        sizes=(8, 10, 12, 14, 16), headline_size=12, success_error=0.01, also=((16, 0.05), (8, 0.01)),
        eval_batch=128),
]}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    return RECIPES[name]
