"""Tasks: each samples batches on device and scores outputs; none knows about models."""
from tasks.base import Batch, Task
from tasks.copy import Copy

REGISTRY: dict[str, type] = {"copy": Copy}


def make_task(name: str, **kwargs) -> Task:
    if name not in REGISTRY:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(REGISTRY)}")
    return REGISTRY[name](**kwargs)


__all__ = ["Batch", "Task", "REGISTRY", "make_task", "Copy"]
