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
from tasks import Task, make_task


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    label: str
    model: str  # a name in lab.models.MODELS
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # ModelConfig fields
    match_ntm_params: float = 0.0  # MLP only: hidden width for this multiple of the NTM's parameters
    # start from another preset's run (a curriculum stage): "<experiment>/<label>-s{seed}" under the runs root
    init_from: str = ""
    head_entropy: float = 0.0  # NTM only: TrainConfig.head_entropy (a penalty for diffuse heads)
    progressive_loss: float = 0.0  # NTM / LSTM: TrainConfig.progressive_loss (Bansal et al. 2022)


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    task: str
    task_options: dict[str, Any]
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
        mc = dataclasses.replace(mc, **spec.overrides)
        return TrainConfig(task=self.task, model=spec.model, seed=seed, batch_size=self.batch_size, steps=self.steps,
                           lr=self.lr, lr_half_life=self.lr_half_life, size_buckets=self.size_buckets,
                           min_size=self.train_sizes[0], max_size=self.train_sizes[1],
                           task_options=dict(self.task_options), model_config=mc, log_every=self.log_every,
                           checkpoint_every=max(self.log_every, self.steps // 4),
                           init_from=str(Path(runs_root) / spec.init_from.format(seed=seed)) if spec.init_from else "",
                           head_entropy=spec.head_entropy, progressive_loss=spec.progressive_loss)

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

def _modsquare(hint: str, what: str) -> Experiment:
    """The modsquare loop with one rung of the hint ladder; n of 4-8 bits with 10% of n held out
    (evaluated on those), 9-10 bits beyond (every n)."""
    return Experiment(
        name=f"modsquare-{hint}", description=f"modsquare with hint={hint} ({what}); n of 4-8 bits, held-out n "
                                              "inside, 9-10 bits beyond",
        task="modsquare", task_options={"hint": hint, "bits": 10}, train_sizes=(4, 8), eval_sizes=(6, 8, 9, 10),
        ntm=SMALL_NTM, models=BASELINES, steps=3000, batch_size=32, lr=3e-3,
        in_range_options={"split": "holdout"}, beyond_options={"split": "all"}, scales=(0.5, 1.0, 2.0),
    )


def _modsquare_many(name: str, what: str, options: dict[str, Any] | None = None, steps: int = 36000,
                    lr: float = 1e-2, init_from: str = "") -> Experiment:
    """hint=value over n of 4-10 bits (about 900 training n, 10% held out), by default with 12x
    modsquare-value's budget; held-out n at 6-10 bits, every n at 11-12 bits."""
    return Experiment(
        name=name, description=f"modsquare with hint=value, {what}: n of 4-10 bits (about 900 training n, 10% held "
                               f"out), {steps:,} steps x 32, learning rate {lr:g} halved every 12,000 steps, 4 size "
                               "buckets; held-out n at 6-10 bits, every n at 11-12 bits",
        task="modsquare", task_options={"hint": "value", "bits": 12, **(options or {})},
        train_sizes=(4, 10), eval_sizes=(6, 8, 10, 11, 12), ntm=SMALL_NTM,
        models=tuple(ModelSpec(label, label, init_from=f"{init_from}/{label}-s{{seed}}" if init_from else "")
                     for label in ("ntm", "lstm")),
        steps=steps, batch_size=32, lr=lr, lr_half_life=12000, size_buckets=4, seeds=(0,),
        in_range_options={"split": "holdout"}, beyond_options={"split": "all"}, scales=(0.5, 1.0, 2.0),
    )


# evaluation: uniform lists; no trace_loss (metrics never include it, and it refuses step scales < 1)
_ARGMAX_UNIFORM = {"min_spread": 1.0, "near_ties": 0.0, "trace_loss": 0.0}


def _argmax_hard_stage(name: str, description: str, models_: tuple[ModelSpec, ...], steps: int, lr: float,
                       options: dict[str, Any] | None = None, batch_size: int = 32) -> Experiment:
    """A later stage of argmax-long's models on hard lists (min_spread 1/16 unless ``options`` say otherwise),
    evaluated on uniform lists."""
    return Experiment(
        name=name, description=description,
        task="argmax", task_options={"index_bits": 8, "labels": "random", "levels": 256, "extra_steps": 4,
                                     "min_spread": 1 / 16, **(options or {})},
        in_range_options=_ARGMAX_UNIFORM, beyond_options=_ARGMAX_UNIFORM,
        train_sizes=(2, 16), eval_sizes=(8, 16, 32, 64), ntm=SMALL_NTM, models=models_,
        steps=steps, batch_size=batch_size, lr=lr, lr_half_life=12000, size_buckets=3, seeds=(0,),
    )


def _modsquare_trace(name: str, what: str, values: str = "random-wide", progressive_loss: float = 0.0,
                     init_from: str = "", lr: float = 1e-2) -> Experiment:
    """Keep-the-best on random values (``values``) with the loop's running k supervised at every step
    (trace_loss 1), n of 4-8 bits; evaluated on the real values of held-out n at 4-8 bits and every n at 10-12.
    ``init_from``: another such preset whose models this one continues (a second stage)."""
    start = lambda label: f"{init_from}/{label}-s{{seed}}" if init_from else ""  # noqa: E731
    return Experiment(
        name=name,
        description=f"{what}; the loop's running k supervised at every step (trace_loss 1), n of 4-8 bits (up to 48 "
                    "candidates), the NTM with a head-entropy penalty of 0.3; evaluated on the real values (i*i mod "
                    "n, last step only) of held-out n at 4-8 bits and every n at 10 and 12 bits",
        task="modsquare", task_options={"hint": "value", "bits": 12, "values": values, "trace_loss": 1.0},
        train_sizes=(4, 8), eval_sizes=(4, 6, 8, 10, 12), ntm=SMALL_NTM,
        models=(ModelSpec("ntm", "ntm", head_entropy=0.3, progressive_loss=progressive_loss, init_from=start("ntm")),
                ModelSpec("lstm", "lstm", progressive_loss=progressive_loss, init_from=start("lstm"))),
        steps=24000, batch_size=32, lr=lr, lr_half_life=8000, size_buckets=3, seeds=(0,),
        in_range_options={"split": "holdout", "values": "modsquare", "trace_loss": 0.0},
        beyond_options={"split": "all", "values": "modsquare", "trace_loss": 0.0}, scales=(0.5, 1.0, 2.0),
    )


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment(
        name="argmax-quick",
        description="make train: the NTM and a parameter-matched MLP on argmax, lists of 2-8, a few minutes on 2 CPU cores",
        task="argmax", task_options={"index_bits": 5}, train_sizes=(2, 8), eval_sizes=(4, 8, 16, 32),
        ntm=SMALL_NTM, models=(ModelSpec("ntm", "ntm"), ModelSpec("mlp", "mlp", match_ntm_params=1.0)),
        steps=800, batch_size=32, lr=1e-2, seeds=(0,), scales=(0.5, 1.0, 2.0), log_every=50,
    ),
    Experiment(
        name="argmax-extrapolation",
        description="argmax over lists of 2-16, evaluated up to 64 with steps scaled",
        task="argmax", task_options={"index_bits": 8}, train_sizes=(2, 16), eval_sizes=(8, 16, 32, 64),
        ntm=SMALL_NTM, models=BASELINES, steps=6000, batch_size=32, lr=1e-2,
    ),
    Experiment(
        name="argmax-labels",
        description="argmax over lists of 2-16 with random distinct labels (every answer bit seen in training), "
                    "values on a 256-level grid, 0-4 extra steps; evaluated up to 64",
        task="argmax", task_options={"index_bits": 8, "labels": "random", "levels": 256, "extra_steps": 4},
        train_sizes=(2, 16), eval_sizes=(8, 16, 32, 64), ntm=SMALL_NTM, models=BASELINES, steps=6000,
        batch_size=32, lr=1e-2,
    ),
    Experiment(
        name="argmax-long",
        description="argmax-labels for the NTM (memory of 128 rows; ntm-r32: the usual 32) and the LSTM with 6x the "
                    "budget, the learning rate halved every 12,000 steps and 3 size buckets",
        task="argmax", task_options={"index_bits": 8, "labels": "random", "levels": 256, "extra_steps": 4},
        train_sizes=(2, 16), eval_sizes=(8, 16, 32, 64), ntm=SMALL_NTM,
        models=(ModelSpec("ntm", "ntm", {"memory_rows": 128}), ModelSpec("ntm-r32", "ntm"), ModelSpec("lstm", "lstm")),
        steps=36000,
        batch_size=32, lr=1e-2, lr_half_life=12000, size_buckets=3, seeds=(0,),
    ),
    _argmax_hard_stage(
        "argmax-spread", "a second stage for argmax-long's ntm-r32 and lstm: 36,000 more steps on hard lists (each "
        "list's values squeezed into the top w of the grid, w log-uniform on [1/16, 1]: the near and exact ties of "
        "long lists, at lengths up to 16); evaluated on uniform lists",
        (ModelSpec("ntm", "ntm", init_from="argmax-long/ntm-r32-s{seed}"),
         ModelSpec("lstm", "lstm", init_from="argmax-long/lstm-s{seed}")), steps=36000, lr=3e-3),
    _argmax_hard_stage(
        "argmax-sharp", "a third stage for argmax-spread's models: 72,000 more steps on the same hard lists at lr "
        "1e-3 (halved every 12,000), the NTM with a head-entropy penalty of 0.3 (sharp heads: a purer register row); "
        "evaluated on uniform lists",
        (ModelSpec("ntm", "ntm", init_from="argmax-spread/ntm-s{seed}", head_entropy=0.3),
         ModelSpec("lstm", "lstm", init_from="argmax-spread/lstm-s{seed}")), steps=72000, lr=1e-3),
    _argmax_hard_stage(
        "argmax-trace", "a fourth stage for argmax-sharp's models: 36,000 more steps on the same hard lists at lr 1e-3 "
        "(halved every 12,000) with the loop's running answer supervised at every step (trace_loss 1), the NTM "
        "keeping its head-entropy penalty; evaluated on uniform lists, last step only",
        (ModelSpec("ntm", "ntm", init_from="argmax-sharp/ntm-s{seed}", head_entropy=0.3),
         ModelSpec("lstm", "lstm", init_from="argmax-sharp/lstm-s{seed}")), steps=36000, lr=1e-3,
        options={"trace_loss": 1.0}),
    _argmax_hard_stage(
        "argmax-ties", "a fifth stage for argmax-trace's models: 18,000 more steps of 128 lists (2,304,000 examples) at "
        "lr 3e-4 (halved every 12,000), half the lists with a tie or one-level gap planted at their top (near_ties "
        "0.5: the comparisons long lists get wrong), step supervision and the NTM's head-entropy penalty kept; "
        "evaluated on uniform lists, last step only",
        (ModelSpec("ntm", "ntm", init_from="argmax-trace/ntm-s{seed}", head_entropy=0.3),
         ModelSpec("lstm", "lstm", init_from="argmax-trace/lstm-s{seed}")), steps=18000, lr=3e-4,
        options={"trace_loss": 1.0, "near_ties": 0.5}, batch_size=128),
    _argmax_hard_stage(
        "argmax-ties2", "a sixth stage for argmax-ties's models: 18,000 more steps of 128 lists at lr 3e-4 on wider "
        "lists (min_spread 1/4) with more planted near ties (near_ties 0.75): more ties after a large jump, the ones "
        "argmax-ties still gets wrong; evaluated on uniform lists, last step only",
        (ModelSpec("ntm", "ntm", init_from="argmax-ties/ntm-s{seed}", head_entropy=0.3),
         ModelSpec("lstm", "lstm", init_from="argmax-ties/lstm-s{seed}")), steps=18000, lr=3e-4,
        options={"trace_loss": 1.0, "near_ties": 0.75, "min_spread": 0.25}, batch_size=128),
    *[_modsquare(hint, what) for hint, what in (
        ("value", "step i shows i and i*i mod n: only keep-the-best is left to learn"),
        ("index", "step i shows i: evaluate candidates and keep the best"),
        ("none", "only n: count, evaluate and keep the best"))],
    _modsquare_many("modsquare-many", "more n than a small model can memorise"),
    _modsquare_many("modsquare-hidden-n", "n itself hidden (only i and i*i mod n shown: nothing to look up, only "
                    "keep-the-best to learn)", {"show_n": False}),
    _modsquare_many("modsquare-random", "random values (candidate i's value uniform on [0, n) instead of i*i mod n: "
                    "the same keep-the-best over sequences that cannot be memorised; stage 1 of modsquare-curriculum)",
                    {"values": "random"}),
    _modsquare_many("modsquare-curriculum", "starting from modsquare-random's models (stage 2: the real values)",
                    steps=18000, lr=3e-3, init_from="modsquare-random"),
    Experiment(
        name="modsquare-short-random",
        description="keep-the-best on random values only (candidate i's value uniform on [0, n)), short loops (n of "
                    "4-6 bits: at most 18 candidates), the NTM with a head-entropy penalty of 0.3; evaluated on the "
                    "real modsquare values (i*i mod n) of held-out n at 4-6 bits and of every n at 8 and 10 bits",
        task="modsquare", task_options={"hint": "value", "bits": 12, "values": "random"},
        train_sizes=(4, 6), eval_sizes=(4, 5, 6, 8, 10), ntm=SMALL_NTM,
        models=(ModelSpec("ntm", "ntm", head_entropy=0.3), ModelSpec("lstm", "lstm")),
        steps=12000, batch_size=32, lr=1e-2, lr_half_life=12000, size_buckets=2, seeds=(0,),
        in_range_options={"split": "holdout", "values": "modsquare"},
        beyond_options={"split": "all", "values": "modsquare"}, scales=(0.5, 1.0, 2.0),
    ),
    _modsquare_trace(
        "modsquare-trace", "keep-the-best on random values of every width (values uniform on [0, 2^e), e uniform on "
        "2..12 per example, whatever n: every value bit at every loop length)"),
    _modsquare_trace(
        "modsquare-progressive", "modsquare-trace with the progressive loss of Bansal et al. 2022 (weight 0.5: a second "
        "pass with each example's state detached before a random step)", progressive_loss=0.5),
    _modsquare_trace(
        "modsquare-runs", "modsquare-trace on random-wide values rearranged into ascending runs of random length "
        "(values=random-runs: from random-like lists to one long climb, like i*i mod n's runs of improvements)",
        values="random-runs"),
    _modsquare_trace(
        "modsquare-trace-n", "modsquare-trace on values uniform on [0, n) (values=random: the value widths of the real "
        "task, whose values lie below n, so that the low bits of a value matter at every loop length)",
        values="random"),
    _modsquare_trace(
        "modsquare-trace-mixed", "modsquare-trace on values=random-mixed (half the lists on [0, n), the real task's "
        "widths, half random-wide: every width)", values="random-mixed"),
    _modsquare_trace(
        "modsquare-trace-n2", "a second stage for modsquare-trace-n's models: 24,000 more steps on the same values at "
        "lr 3e-3", values="random", init_from="modsquare-trace-n", lr=3e-3),
    _modsquare_trace(
        "modsquare-trace-n3", "a third stage for modsquare-trace-n2's models: 24,000 more steps on the same values at "
        "lr 1e-3", values="random", init_from="modsquare-trace-n2", lr=1e-3),
    _modsquare_trace(
        "modsquare-trace-n4", "a fourth stage for modsquare-trace-n3's models: 24,000 more steps on the same values at "
        "lr 3e-4", values="random", init_from="modsquare-trace-n3", lr=3e-4),
    Experiment(
        name="polymax",
        description="maximise a polynomial of degree 2-6 on [0, 1] (gap loss), evaluated up to degree 24",
        task="polymax", task_options={"index_bits": 5}, train_sizes=(2, 6), eval_sizes=(4, 6, 12, 24),
        ntm=SMALL_NTM, models=BASELINES, steps=3000, batch_size=32, lr=3e-3,
    ),
]}


def get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose from {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]
