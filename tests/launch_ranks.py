"""Start N ranks of a test's worker script with the environment torchrun would give them (gloo on the
loopback), and wait for them: the multi-process tests' launcher (test_distributed, test_fsdp)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(script: Path, args: Sequence[str], folder: Path, world: int, timeout_s: float,
           expect_success: bool = True, log_name: str = "rank") -> list[int]:
    """Run ``python script *args`` as ``world`` ranks; returns their exit codes. With ``expect_success``
    a rank that fails fails the test (its log's tail shown); a run past the deadline always does.
    Every rank still running is killed in any case."""
    port = free_port()
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        for rank in range(world):
            env = dict(
                os.environ, WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
            )
            if sys.platform.startswith("linux") and Path("/sys/class/net/lo").exists():
                env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the loopback, whatever the hostname resolves to
            log = open(folder / f"{log_name}{rank}.log", "w+")
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, str(script), *args], env=env, cwd=str(REPO),
                                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout_s
        codes: dict[int, int] = {}
        while len(codes) < world:
            for rank in range(world):
                if rank in codes:
                    continue
                try:
                    codes[rank] = procs[rank].wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                if codes[rank] != 0 and expect_success:
                    logs[rank].seek(0)
                    pytest.fail(f"rank {rank} exited with {codes[rank]}:\n{logs[rank].read()[-4000:]}")
            if len(codes) < world and time.monotonic() > deadline:
                tails = []
                for rank in sorted(set(range(world)) - set(codes)):
                    logs[rank].seek(0)
                    tails.append(f"--- rank {rank} ---\n{logs[rank].read()[-2000:]}")
                pytest.fail(f"ranks still running after {timeout_s:.0f} s\n" + "\n".join(tails))
        return [codes[r] for r in range(world)]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for log in logs:
            log.close()
