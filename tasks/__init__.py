"""Tasks: each samples batches on device and scores outputs; none knows about models."""
import dataclasses
from typing import Any

from tasks.argmax import Argmax
from tasks.associative_recall import AssociativeRecall
from tasks.base import Batch, Candidates, ClosedLoop, SearchTask, SupervisedLoop, TapeHints, Task, WriteHints, feedback_of
from tasks.copy import Copy
from tasks.modsquare import ModSquare
from tasks.modsquare_serial import ModSquareSerial
from tasks.polymax import PolyMax
from tasks.priority_sort import PrioritySort
from tasks.repeat_copy import RepeatCopy

REGISTRY: dict[str, type] = {
    "copy": Copy,
    "repeat_copy": RepeatCopy,
    "associative_recall": AssociativeRecall,
    "priority_sort": PrioritySort,
    "argmax": Argmax,
    "modsquare": ModSquare,
    "modsquare_serial": ModSquareSerial,
    "polymax": PolyMax,
}


def make_task(name: str, training: dict[str, Any] | None = None, **options: Any) -> Task:
    """The task ``name`` with ``options`` (what every evaluation sees) and, for training, ``training``: options
    of its training distribution (the class's ``training_options``: harder lists, random values, blank steps),
    which are refused among ``options``. Unknown and wrongly typed options are a ValueError."""
    if name not in REGISTRY:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(REGISTRY)}")
    cls = REGISTRY[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    training = dict(training or {})
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(f"task {name!r} has no option {unknown}; its options: "
                         f"{sorted(set(fields) - cls.training_options)}")
    if set(options) & cls.training_options:
        raise ValueError(f"task {name!r}: {sorted(set(options) & cls.training_options)} shape the training "
                         "distribution only; set them as training options (train.py --train-option KEY=VALUE, or "
                         "a preset's train_distribution), so that evaluation never sees them")
    if set(training) - cls.training_options:
        raise ValueError(f"task {name!r}: {sorted(set(training) - cls.training_options)} are not options of its "
                         f"training distribution; those are: {sorted(cls.training_options) or 'none'}")
    for key, value in {**options, **training}.items():  # a typed option: an int field an int, a float a number
        kind = str(fields[key].type)
        if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"task {name!r}: option {key} must be an integer, got {value!r}")
        if kind == "float" and (not isinstance(value, (int, float)) or isinstance(value, bool) or value != value
                                or value in (float("inf"), float("-inf"))):
            raise ValueError(f"task {name!r}: option {key} must be a finite number, got {value!r}")
    return cls(**options, **training)


__all__ = ["Batch", "Task", "SearchTask", "SupervisedLoop", "TapeHints", "WriteHints", "ClosedLoop", "feedback_of", "Candidates", "REGISTRY", "make_task", "Copy", "RepeatCopy", "AssociativeRecall", "PrioritySort",
           "Argmax", "ModSquare", "ModSquareSerial", "PolyMax"]
