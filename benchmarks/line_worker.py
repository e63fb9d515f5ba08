"""The parent side of a benchmark's worker subprocess: JSON messages on lines of stdout that start
with ``PROTOCOL`` (anything else the worker prints is ignored), commands as lines on its stdin."""

from __future__ import annotations

import json
import subprocess
import sys

PROTOCOL = "@@bench "


class LineWorker:
    """A started worker process; ``name`` names it in errors, ``stderr`` is an open file it writes to."""

    def __init__(self, name: str, cmd: list[str], env: dict, stderr) -> None:
        self.name = name
        self.stderr = stderr
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=stderr, text=True, bufsize=1)

    def _fail(self) -> None:
        self.proc.kill()
        self.stderr.seek(0)
        sys.stderr.write(self.stderr.read()[-5000:])
        raise SystemExit(f"the {self.name} worker failed (exit {self.proc.wait()})")

    def receive(self) -> dict:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PROTOCOL):
                return json.loads(line[len(PROTOCOL):])
        self._fail()
        raise AssertionError

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._fail()
