"""worker/processes.py: a live process is alive, an exited one is gone, and so is a zombie (exited,
not reaped by its parent), which still answers kill(pid, 0)."""

from __future__ import annotations

import os
import subprocess
import sys

from worker.processes import process_gone


def test_live_exited_and_zombie_processes():
    assert not process_gone(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert not process_gone(child.pid)
        child.stdin.close()  # it exits; nobody reaps it yet: a zombie
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # wait for the exit, leave it unreaped
        os.kill(child.pid, 0)  # the zombie still answers a signal 0: that alone would call it alive
        assert process_gone(child.pid)
    finally:
        child.wait()
    assert process_gone(child.pid)  # reaped: no such process
