"""A run directory, the one place that knows its layout and files:

    <runs root>/<experiment>/<model label>-s<seed>[-c<candidate>]/   (``run_dir``; train.py --workdir: any path)
        config.json     the TrainConfig (``read_config``; written by the trainer)
        metrics.jsonl   one JSON object per logged step (``read_metrics``; the record every tool reads)
        checkpoints/    Orbax checkpoints of {params, opt_state} (``Checkpointer``); a crash mid-write leaves
                        the previous one usable (Orbax writes a temporary directory and renames it)
        done.json       written when a training call finishes (``finished``), removed when another starts
        tb/             TensorBoard event files (optional)

Evaluation, comparison, diagnosis, detection and the recipes read runs through ``load_run``, which restores
the parameters alone (no optimizer is built).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from flax import nnx

from lab import models
from lab.config import TrainConfig, migrate
from lab.parallel import resolve_microbatches
from tasks import SupervisedLoop, TapeHints, Task, WriteHints, feedback_of, make_task


# Fields that may change when a run is resumed: they steer the loop, not what is computed.
RUN_CONTROL_FIELDS = frozenset({"steps", "target", "log_every", "checkpoint_every", "keep_checkpoints",
                                "max_nonfinite", "steps_per_dispatch", "devices"})
# ModelConfig fields of the same kind (how the model runs: the same function to float32 rounding).
MODEL_CONTROL_FIELDS = frozenset({"fused_memory"})
CONFIG, METRICS, CHECKPOINTS = "config.json", "metrics.jsonl", "checkpoints"


class RunDirError(RuntimeError):
    """A run directory that is missing, damaged, or holds something we must not overwrite."""


def run_dir(runs_root: str | Path, experiment: str, label: str, seed: int, candidate: int | None = None) -> Path:
    """Where a preset's model ``label`` trained with ``seed`` lives (candidate c of a recipe's selection: ``-c<c>``)."""
    return Path(runs_root) / experiment / (f"{label}-s{seed}" + ("" if candidate is None else f"-c{candidate}"))


def same_shapes(a: Any, b: Any) -> bool:
    """Whether two parameter trees have the same structure and array shapes."""
    got, want = (jax.tree.map(lambda x: tuple(x.shape), t) for t in (a, b))
    return jax.tree.structure(got) == jax.tree.structure(want) and got == want


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or cannot be read."""


class Checkpointer:
    def __init__(self, directory: str | Path, keep: int = 3):
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )

    def save(self, step: int, state: Any) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def _restore(self, step: int | None, read: Callable[[int], Any]) -> tuple[int, Any]:
        """(step, ``read(step)``) for ``step`` or the newest one; anything unreadable is a CheckpointError."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        try:
            return step, read(step)
        except Exception as e:  # orbax raises many types for unreadable or mismatched data
            raise CheckpointError(f"checkpoint {step} in {self.directory} cannot be restored: {type(e).__name__}: {str(e)[:200]}") from e

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[int, Any]:
        """Restore into the structure of ``abstract_state``; newest step by default."""
        return self._restore(step, lambda s: self.manager.restore(s, args=ocp.args.StandardRestore(abstract_state)))

    def restore_params(self, like: Any, step: int | None = None) -> tuple[int, Any]:
        """The parameters alone (shapes and structure of ``like``), without building an optimizer state."""
        item = {"params": like}
        args = ocp.args.PyTreeRestore(item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                                      partial_restore=True)
        step, restored = self._restore(step, lambda s: ocp.PyTreeCheckpointer().restore(
            self.directory / str(s) / "default", args=args))
        if not same_shapes(restored["params"], like):
            raise CheckpointError(f"checkpoint {step} in {self.directory} holds other parameter shapes than its config builds")
        return step, restored["params"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def build_task(cfg: TrainConfig, training: bool = False) -> Task:
    """The task a config names, as every evaluation sees it; ``training``: with the run's training distribution
    (``train_distribution``), as the trainer samples it. A task option of the wrong type or out of range, or
    step supervision the task cannot give, is a ValueError."""
    task = make_task(cfg.task, training=cfg.train_distribution if training else None, **cfg.task_options)
    try:
        if cfg.min_size is not None or cfg.max_size is not None:
            task = task.with_sizes(cfg.min_size if cfg.min_size is not None else task.min_size,
                                   cfg.max_size if cfg.max_size is not None else task.max_size)
        task.max_steps()  # options whose types only fail once used (e.g. a string where a number belongs)
    except (TypeError, ArithmeticError) as e:
        raise ValueError(f"task {cfg.task} with options {cfg.task_options}: {e}") from None
    if cfg.trace_loss:
        if not isinstance(task, SupervisedLoop):
            raise ValueError(f"trace_loss: task {cfg.task} has no loop whose running answer could be supervised")
        task.check_trace_loss()
    if cfg.write_hint and not isinstance(task, WriteHints):
        raise ValueError(f"write_hint: task {cfg.task} has no algorithm whose writes could be supervised")
    if cfg.head_hint:
        if not isinstance(task, TapeHints):
            raise ValueError(f"head_hint: task {cfg.task} has no tape algorithm whose heads could be supervised")
        mc = cfg.model_config
        if task.tape_rows() > mc.memory_rows or mc.num_read_heads < 1 or mc.num_write_heads < 1:
            raise ValueError(f"head_hint: the tape machine uses {task.tape_rows()} memory rows and one "
                             f"read and one write head; the NTM has {mc.memory_rows} rows, {mc.num_read_heads} read "
                             f"and {mc.num_write_heads} write heads")
    return task


def build_model(cfg: TrainConfig, task: Task, max_steps: int | None = None) -> nnx.Module:
    return models.make_model(cfg.model, task.input_size, task.output_size, cfg.model_config,
                             max_steps or task.max_steps(), cfg.seed, feedback=feedback_of(task))


def read_config(workdir: str | Path) -> TrainConfig:
    """The TrainConfig of a run directory; a missing or damaged config.json is a RunDirError."""
    path = Path(workdir) / CONFIG
    if not path.exists():
        raise RunDirError(f"{workdir} is not a run directory (no {CONFIG})")
    try:
        return TrainConfig.load(path)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise RunDirError(f"{path} is not a valid config: {' '.join(str(e).split())}") from None


def read_metrics(workdir: str | Path) -> list[dict[str, Any]]:
    """Every record of a run's metrics.jsonl (none when it has no log); a damaged line is a RunDirError."""
    path = Path(workdir) / METRICS
    if not path.exists():
        return []
    try:
        return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    except ValueError as e:
        raise RunDirError(f"{path} is damaged ({' '.join(str(e).split())})") from None


def prepare_workdir(workdir: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber another run; --overwrite moves the old run aside instead of deleting it."""
    cfg_path = workdir / "config.json"
    if not workdir.exists() or not any(workdir.iterdir()):
        return
    if resume:
        if not cfg_path.exists():
            raise RunDirError(f"{workdir} has no config.json to resume from")
        try:
            old = json.loads(cfg_path.read_text())
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
            old = migrate(old)  # written before the training signals left the task options: the same run
            TrainConfig.from_dict(old)  # every field known and of its type
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise RunDirError(f"{cfg_path} is not a valid config: {e}") from e
        new = json.loads(cfg.to_json())
        default = json.loads(TrainConfig().to_json())  # fields added since the old run was written
        if isinstance(old.get("model_config"), dict):  # the same for the model's fields
            old["model_config"] = {**default["model_config"], **old["model_config"]}
            for k in MODEL_CONTROL_FIELDS:
                old["model_config"][k] = new["model_config"][k]
        # micro-batches: "auto" (0) and the count it resolved to are the same run; before auto existed it was 1
        old_k = old.get("microbatches", 1) or resolve_microbatches(dataclasses.replace(cfg, microbatches=0))
        if old_k == resolve_microbatches(cfg):
            old["microbatches"] = new["microbatches"]
        # with size buckets the dispatch length decides which steps share a bucket: not a free choice on resume
        control = RUN_CONTROL_FIELDS - ({"steps_per_dispatch"} if cfg.size_buckets > 1 else set())
        diff = {k for k in new if k not in control and old.get(k, default.get(k)) != new[k]}
        if diff:
            raise RunDirError(f"{workdir} holds a run with a different configuration ({', '.join(sorted(diff))}); "
                              "use the same options to resume, or --overwrite")
        return
    if not overwrite:
        raise RunDirError(f"{workdir} already holds a run; pass --resume to continue it or --overwrite to start anew "
                          "(the old run is moved aside, not deleted)")
    backup = workdir.with_name(f"{workdir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.move(str(workdir), str(backup))
    print(f"moved the previous run to {backup}", file=sys.stderr)


DONE = "done.json"  # in a run directory: written when its training call finishes, removed when another starts


def finished(workdir: str | Path, steps: int | None = None) -> dict[str, Any] | None:
    """The done record of a run that finished (``steps``: and reached at least that many steps, or its target),
    else None: never started, interrupted, or still running."""
    path = Path(workdir) / DONE
    try:
        done = json.loads(path.read_text())
        step, stopped = int(done["step"]), str(done["stopped"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if steps is not None and step < steps and stopped != "target":
        return None
    return done


def truncate_metrics(path: Path, step: int, check_only: bool = False) -> float:
    """On resume, drop log lines written after the checkpoint we restart from (``check_only``: only check that
    the log can be read). Returns the training seconds the kept lines record (0 for a fresh run)."""
    if not path.exists():
        return 0.0
    try:
        records = [(l, json.loads(l)) for l in path.read_text().splitlines() if l.strip()]
        keep = [(l, r) for l, r in records if r["step"] <= step]
        wall = max((float(r.get("wall_s", 0.0)) for _, r in keep), default=0.0)
    except (ValueError, TypeError, KeyError) as e:
        raise RunDirError(f"{path} is damaged ({' '.join(str(e).split())}); nothing was changed") from None
    if not check_only:
        path.write_text("".join(l + "\n" for l, _ in keep))
    return wall


def params_from(workdir: str | Path, like: Any) -> Any:
    """The newest parameters of the run in ``workdir``, checked against the shapes of ``like``; the run must
    have finished (a later stage never starts from an interrupted one)."""
    cfg, _, model, step = load_run(workdir)
    if finished(workdir) is None:
        raise RunDirError(f"--init-from {workdir}: that run did not finish (newest checkpoint: step {step} of "
                          f"{cfg.steps}); finish it first (train.py --resume --workdir {workdir}, or the recipe)")
    params = models.split(model)[1]
    if not same_shapes(params, like):
        raise RunDirError(f"--init-from {workdir}: its model (step {step}) has other parameter shapes than this run's; "
                          "the model options must match")
    return params


def examples_before(cfg: TrainConfig) -> int:
    """Examples the runs that ``cfg.init_from`` chains back to had seen (0 for a fresh start), so that a
    curriculum stage reports its whole budget. A source that is gone counts as 0."""
    total, src, seen = 0, cfg.init_from, set()
    while src and src not in seen and (Path(src) / CONFIG).exists():
        seen.add(src)
        prev = read_config(src)
        if (Path(src) / CHECKPOINTS).is_dir():
            ckpt = Checkpointer(Path(src) / CHECKPOINTS, keep=prev.keep_checkpoints)
            try:
                total += (ckpt.latest_step() or 0) * prev.batch_size
            finally:
                ckpt.close()
        src = prev.init_from
    return total


def load_run(workdir: str | Path, step: int | None = None) -> tuple[TrainConfig, Task, nnx.Module, int]:
    """(config, task, model, step): the model of a run directory rebuilt from its config.json and its newest
    checkpoint (or ``step``), parameters alone; the task as evaluation sees it (no training distribution)."""
    workdir = Path(workdir)
    cfg = read_config(workdir)
    try:
        task, trained_on = build_task(cfg), build_task(cfg, training=True)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise RunDirError(f"{workdir / CONFIG} is not a valid config: {' '.join(str(e).split())}") from None
    if not (workdir / CHECKPOINTS).is_dir():
        raise RunDirError(f"{workdir} has no checkpoints (a run that never saved one)")
    graphdef, params = models.split(build_model(cfg, trained_on))
    ckpt = Checkpointer(workdir / CHECKPOINTS, keep=cfg.keep_checkpoints)
    try:
        step, params = ckpt.restore_params(params, step)
    finally:
        ckpt.close()
    return cfg, task, nnx.merge(graphdef, params), step


class RunLog:
    """Where each logged record goes: a line of metrics.jsonl (the record every tool reads), TensorBoard event
    files in <workdir>/tb when tensorboardX is installed (``pip install -e .[tensorboard]``) and, when a
    project is named, Weights & Biases (imported only then)."""

    def __init__(self, workdir: Path, cfg: TrainConfig, wandb_project: str | None):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            SummaryWriter = None

        self.wandb = None
        if wandb_project:
            try:
                import wandb
            except ImportError as e:
                raise ValueError("--wandb needs the wandb package: pip install wandb") from e
            self.wandb = wandb.init(project=wandb_project, config=dataclasses.asdict(cfg), dir=str(workdir),
                                    name=workdir.name, resume="allow")
        self.tb = SummaryWriter(str(workdir / "tb"), flush_secs=30) if SummaryWriter is not None else None
        self.metrics = workdir / METRICS

    def log(self, record: dict[str, Any]) -> None:
        with self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")
        values = {k: v for k, v in record.items() if k != "step"}
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(k, float(v), record["step"])
        if self.wandb is not None:
            self.wandb.log(values, step=record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
