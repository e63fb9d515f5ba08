"""Measurements of the machine shared by the benchmarks: resident memory (current and peak, from
/proc/self) and the CPU other processes use while a piece of work runs (from /proc/stat). Linux only;
elsewhere the figures come back as NaN / None.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Optional


def _status_kib(field_name: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def current_rss_mib() -> float:
    kib = _status_kib("VmRSS")
    return kib / 1024 if kib is not None else float("nan")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib(reset_worked: bool) -> float:
    kib = _status_kib("VmHWM") if reset_worked else None
    if kib is None:  # fall back to ru_maxrss (KiB on Linux), which also covers model building
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024


class CpuMeter:
    """CPU used by *other* processes while a piece of work runs, in cores (from /proc/stat).

    Another process on a 2-core machine does not just take its share: with OpenMP threads spinning at
    barriers, small kernels can get several times slower. Every timed run records this figure.
    """

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @staticmethod
    def _busy_jiffies() -> Optional[int]:
        try:
            with open("/proc/stat") as handle:
                values = [int(v) for v in handle.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        return sum(values) - values[3] - values[4]  # all but idle and iowait (steal counts as busy)

    @staticmethod
    def _own_cpu_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def start(self) -> tuple:
        return (time.perf_counter(), self._busy_jiffies(), self._own_cpu_s())

    def foreign_cores(self, started: tuple) -> Optional[float]:
        wall0, busy0, own0 = started
        busy1, wall = self._busy_jiffies(), time.perf_counter() - wall0
        if busy0 is None or busy1 is None or wall <= 0:
            return None
        return max(0.0, ((busy1 - busy0) / self.tick - (self._own_cpu_s() - own0)) / wall)

    def wait_idle(self, max_wait_s: float, threshold: float) -> tuple[float, Optional[float]]:
        """Wait (up to max_wait_s) for a 1-second window with less than ``threshold`` foreign cores busy.
        Returns (seconds waited, the last window's foreign load)."""
        began = time.perf_counter()
        while True:
            started = self.start()
            time.sleep(1.0)
            load = self.foreign_cores(started)
            waited = time.perf_counter() - began
            if load is None or load < threshold or waited >= max_wait_s:
                return waited, load
            time.sleep(min(4.0, max(0.0, max_wait_s - waited)))
