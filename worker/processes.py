"""Whether a process of this host is still alive, by pid: one rule for the reaper (a worker of this
host whose process is gone) and for the ranks of a group (their worker is gone)."""

from __future__ import annotations

import os


def process_gone(pid: int) -> bool:
    """Whether no live process has ``pid`` here. A zombie (exited, not yet reaped by its parent) counts
    as gone: it runs nothing and holds nothing, and its parent may never reap it. A process of another
    user (``PermissionError``) is alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in status)
    except OSError:
        return False
