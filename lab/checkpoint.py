"""Orbax checkpoints holding the training state; the run's config.json sits beside them.

Orbax writes each step into a temporary directory and renames it when complete, so a crash
mid-write leaves the previous checkpoint usable; ``keep`` bounds how many are kept.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    pass


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

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[int, Any]:
        """Restore into the structure of ``abstract_state``; newest step by default."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        try:
            return step, self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
        except Exception as e:  # orbax raises many types for unreadable or mismatched data
            raise CheckpointError(f"checkpoint {step} in {self.directory} cannot be restored: {type(e).__name__}: {str(e)[:200]}") from e

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
