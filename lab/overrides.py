"""``--set KEY=VALUE``: typed overrides of any field of a preset (lab/experiments.py ``Experiment``) or, for a
single run, of its ``TrainConfig``, through OmegaConf's structured configs: the dataclass is the schema, a
value is parsed as YAML and converted to the field's type, and an unknown field or a value of the wrong type
is a ValueError of one line. Nested fields take dots: ``ntm.memory_rows=64``, ``train_distribution.near_ties=0.5``,
``model_config.controller_size=32``; lists in brackets: ``train_sizes=[2,8]``."""
from __future__ import annotations

import dataclasses
from typing import Sequence, TypeVar

T = TypeVar("T")

FIXED = {"name", "description", "models"}  # what makes a preset that preset, and its chain of parents


def apply(obj: T, items: Sequence[str]) -> T:
    """``obj`` (a dataclass instance) with every KEY=VALUE of ``items`` applied, type-checked."""
    if not items:
        return obj
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    fields = {f.name for f in dataclasses.fields(obj)}  # type: ignore[arg-type]
    for item in items:
        key, sep, value = item.partition("=")
        top = key.split(".")[0]
        if not sep or not key or any(not part for part in key.split(".")):
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. lr=1e-3 or train_distribution.near_ties=0.5")
        if top in FIXED and top in fields:
            raise ValueError(f"--set {key}: a preset's {top} cannot be changed; choose another preset")
        if top not in fields:
            raise ValueError(f"--set {key}: {type(obj).__name__} has no field {top!r}; fields: "
                             f"{', '.join(sorted(fields - FIXED))}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(obj), OmegaConf.from_dotlist(list(items)))
        out = OmegaConf.to_object(merged)
    except (OmegaConfBaseException, yaml.YAMLError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"--set {' '.join(items)}: {first}") from None
    if type(out) is not type(obj):  # pragma: no cover - OmegaConf returns the schema's own class
        raise ValueError(f"--set: could not rebuild {type(obj).__name__}")
    return out  # type: ignore[return-value]
