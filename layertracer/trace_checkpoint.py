"""A trace's partial results on disk, so a trace that was stopped (a killed worker, a lost lease, Ctrl-C)
resumes where it stopped instead of from scratch.

One ``.npz`` file of numpy arrays (read back with ``allow_pickle=False``: no pickle on disk), written
atomically after a batch once ``CHECKPOINT_EVERY_S`` seconds have passed since the last write (and long
enough that writing takes at most ``MAX_WRITE_SHARE`` of the time), and when the trace is stopped by an
exception; removed when the trace has finished. It carries a key, the sha256 of everything the numbers depend on
(the model's fingerprint, the encoded prompts and targets, the perturbations, the options); a file with
another key, or one that cannot be read, is ignored and overwritten. The perturbations are seeded per
prompt, so which batch a prompt falls in does not change its numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zipfile
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 30.0  # at most one write per this many seconds
# ... and at most this share of the time in writes: the CKA states of a large model are hundreds of MB.
MAX_WRITE_SHARE = 0.05
KEY = "checkpoint_key"


def checkpoint_key(parts: Iterable[Any]) -> str:
    """sha256 of the JSON of ``parts`` (strings, numbers, lists and dicts of them)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()


class TraceCheckpoint:
    """Save and load a trace's partial arrays at ``path`` under ``key``."""

    def __init__(self, path: str | os.PathLike, key: str, every_s: Optional[float] = None) -> None:
        self.path = Path(path)
        self.key = key
        self.every_s = every_s  # None: CHECKPOINT_EVERY_S
        self._last_write = time.monotonic()
        self._write_seconds = 0.0  # how long the last write took

    def load(self) -> Optional[dict[str, np.ndarray]]:
        """The saved arrays if the file holds this key's checkpoint, else None."""
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:  # a torn or foreign file: start again
            log.warning("ignoring the unreadable trace checkpoint %s: %s", self.path, exc)
            return None
        if str(arrays.pop(KEY, "")) != self.key:
            log.info("ignoring the trace checkpoint %s: it belongs to another trace", self.path)
            return None
        return arrays

    def due(self) -> bool:
        every = CHECKPOINT_EVERY_S if self.every_s is None else self.every_s
        return time.monotonic() - self._last_write >= max(every, self._write_seconds / MAX_WRITE_SHARE)

    def save(self, arrays: dict[str, np.ndarray]) -> None:
        """Write ``arrays`` atomically (a temp file renamed over the checkpoint)."""
        started = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(self.path.name + ".tmp")
        with open(temp, "wb") as handle:
            np.savez(handle, **arrays, **{KEY: np.array(self.key)})
        os.replace(temp, self.path)
        self._last_write = time.monotonic()
        self._write_seconds = self._last_write - started

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.path.with_name(self.path.name + ".tmp").unlink(missing_ok=True)
