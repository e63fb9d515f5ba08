"""Inspection without weights at 70B scale: ``layertracer inspect`` of a Llama-3-70B-shaped model
(config only: 80 blocks, hidden 8192, MLP 28672, vocabulary 128256, no weight files) as a whole
process, against the targets of the real-models issue (under 3 s, under 1 GB peak memory) and beside
``layertracer --version`` (the interpreter and CLI start-up alone), measured side by side.

    python benchmarks/bench_inspect.py [--runs 3]

Before this change ``inspect`` loaded every weight in fp32 on the CPU: 280 GB for this model, which
cannot run on this machine at all (and on a machine that has the memory, reads 140 GB from disk).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LLAMA_70B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
    "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False,
    "hidden_act": "silu", "dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": 128001,
}
TARGET_SECONDS, TARGET_MIB = 3.0, 1024.0


def run(args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB of the child, stdout) of one whole process."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "layertracer", *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    # ru_maxrss of the children waited for so far: the largest of them (KiB on Linux)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, peak, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "llama-70b-shaped"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(LLAMA_70B))
        version, inspect = [], []
        info = {}
        for _ in range(runs):  # interleaved, so that the machine's load falls on both alike
            version.append(run(["--version"])[0])
            wall, _, stdout = run(["inspect", "--model", str(folder), "--json"])
            inspect.append(wall)
            info = json.loads(stdout)
        # RUSAGE_CHILDREN's peak is the largest child so far: the inspect runs dominate it
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    load = os.getloadavg()[0]
    median_version, median_inspect = statistics.median(version), statistics.median(inspect)
    print(f"model: {info['architecture']}, {info['num_layers']} blocks, {info['num_parameters'] / 1e9:.2f}B parameters "
          f"(declared dtype {info['dtype']}; fp32 weights would be {info['num_parameters'] * 4 / 2**30:.0f} GiB)")
    print(f"machine load (1 min): {load:.2f}; runs: {runs}")
    print(f"layertracer --version         median {median_version:.2f} s  (min {min(version):.2f}, max {max(version):.2f})")
    print(f"layertracer inspect (70B)     median {median_inspect:.2f} s  (min {min(inspect):.2f}, max {max(inspect):.2f})")
    print(f"inspect / start-up            {median_inspect / median_version:.1f}x")
    print(f"peak RSS of inspect           {peak:.0f} MiB")
    ok_time, ok_memory = median_inspect < TARGET_SECONDS, peak < TARGET_MIB
    print(f"targets: under {TARGET_SECONDS:.0f} s {'met' if ok_time else 'MISSED'}; "
          f"under {TARGET_MIB:.0f} MiB {'met' if ok_memory else 'MISSED'}")


if __name__ == "__main__":
    main()
