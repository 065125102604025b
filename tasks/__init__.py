"""Tasks: each samples batches on device and scores outputs; none knows about models."""
import dataclasses

from tasks.argmax import Argmax
from tasks.associative_recall import AssociativeRecall
from tasks.base import Batch, Candidates, SearchTask, Task
from tasks.copy import Copy
from tasks.modsquare import ModSquare
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
    "polymax": PolyMax,
}


def make_task(name: str, **kwargs) -> Task:
    if name not in REGISTRY:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(REGISTRY)}")
    cls = REGISTRY[name]
    unknown = sorted(set(kwargs) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"task {name!r} has no option {unknown}; its options: "
                         f"{sorted(f.name for f in dataclasses.fields(cls))}")
    for f in dataclasses.fields(cls):  # a typed option: an int field takes an int, a float field a number
        if f.name not in kwargs:
            continue
        value, kind = kwargs[f.name], str(f.type)
        if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"task {name!r}: option {f.name} must be an integer, got {value!r}")
        if kind == "float" and (not isinstance(value, (int, float)) or isinstance(value, bool) or value != value
                                or value in (float("inf"), float("-inf"))):
            raise ValueError(f"task {name!r}: option {f.name} must be a finite number, got {value!r}")
    return cls(**kwargs)


__all__ = ["Batch", "Task", "SearchTask", "Candidates", "REGISTRY", "make_task", "Copy", "RepeatCopy", "AssociativeRecall", "PrioritySort",
           "Argmax", "ModSquare", "PolyMax"]
