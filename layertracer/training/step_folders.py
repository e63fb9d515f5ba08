"""The folder layout every kind of training checkpoint shares: ``step-000123/`` folders, each written
whole (as a temp folder, renamed when complete), ``state.json`` last; one is complete when it holds
``state.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional


class StepFolders:
    """A checkpoint folder: the base of ``loop.Checkpoints`` and ``sharded.ShardedCheckpoints``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def latest(self) -> Optional[Path]:
        """The complete checkpoint of the highest step, or None."""
        if not self.folder.is_dir():
            return None
        done = sorted(p for p in self.folder.glob("step-*") if (p / "state.json").is_file())
        return done[-1] if done else None
