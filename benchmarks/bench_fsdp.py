"""Benchmark: sharded (``--strategy fsdp``) against data-parallel (``ddp``) training of ``full`` on 2 CPU
processes (gloo), side by side in one run.

The model, blocks and optimizer settings are bench_train.py's (a seeded random Qwen3-architecture
model: 8 layers, hidden 512, vocabulary 32,000, untied head; 4 x 256 tokens per step, the global
batch, split over the two ranks). Each strategy runs as two fresh rank processes (one torch thread
each), twice, alternating ddp, fsdp, ddp, fsdp so both see the same machine. Each rank reports:

- peak RSS during ``train`` (the kernel's high-water mark, reset just before; glibc's mmap threshold
  fixed at 128 KiB for both strategies, so that freed buffers leave RSS), and the same minus the
  rank's RSS before the model was built (the training's own memory: weights, gradients, AdamW state,
  activations, the communication buffers). Target: fsdp at most 60% of ddp's.
- tokens/s over the timed steps (after one warm-up step), counted over both ranks. Target: fsdp at
  least 80% of ddp's on the CPU (its all-gathers and reduce-scatters go through gloo).
- the per-step losses, which must agree between the strategies (the same global batch).

    .venv/bin/python benchmarks/bench_fsdp.py            # 8 timed steps per run
    .venv/bin/python benchmarks/bench_fsdp.py --quick    # bench_train's quick model, 3 steps
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT), str(HERE), str(ROOT / "tests")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from bench_train import BenchConfig, build_model, make_blocks  # noqa: E402
from machine import current_rss_mib, peak_rss_mib, reset_peak_rss  # noqa: E402

STRATEGIES = ("ddp", "fsdp")
WORLD = 2


def worker(strategy: str, config_json: str, out: str) -> None:
    import torch

    torch.set_num_threads(1)
    from layertracer.models import wrap_model
    from layertracer.training import TrainConfig, resolve_allocation, train
    from layertracer.training import distributed as dist_utils

    cfg = BenchConfig(**json.loads(config_json))
    before_model = current_rss_mib()
    loaded = wrap_model(build_model(cfg), None)
    blocks = make_blocks(cfg)
    config = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup_steps=0, weight_decay=0.0,
                         checkpoint_every=0, strategy=strategy)
    worked = reset_peak_rss()
    result = train(loaded, blocks, resolve_allocation("full", cfg.num_layers), config, distributed=True)
    peak = peak_rss_mib(worked)
    timed = result.history[cfg.warmup_steps:]
    report = {"rank": dist_utils.rank(), "peak_mib": peak, "own_mib": peak - before_model,
              "tokens_per_s": statistics.median(m.tokens_per_s for m in timed),
              "losses": [m.loss for m in result.history], "peak_reset": worked}
    Path(out).write_text(json.dumps(report))
    dist_utils.shutdown()


def run(strategy: str, cfg: BenchConfig, folder: Path) -> list[dict]:
    from launch_ranks import launch

    tag = f"{strategy}-{time.monotonic_ns()}"
    args = ["--worker", strategy, "--config", json.dumps(asdict(cfg)), "--out", str(folder / tag)]
    launch(Path(__file__), args, folder, WORLD, timeout_s=1800, log_name=tag)
    return [json.loads(p.read_text()) for p in sorted(folder.glob(f"{tag}.rank*"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="bench_train's quick model and 3 steps")
    parser.add_argument("--rounds", type=int, default=2, help="ddp/fsdp pairs (default 2)")
    parser.add_argument("--worker", choices=STRATEGIES, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.config, f"{args.out}.rank{os.environ['RANK']}")
        return
    # glibc raises its mmap threshold as large buffers are freed, after which freed buffers stay resident
    # (FSDP's gathered parameters and gradients are freed and allocated again every step): a fixed
    # threshold makes RSS the live memory for both strategies alike.
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    cfg = BenchConfig.quick() if args.quick else BenchConfig()
    print(f"model: {cfg.num_layers} layers, hidden {cfg.hidden_size}, vocabulary {cfg.vocab_size}; "
          f"{cfg.batch_size} x {cfg.block_size} tokens per step over {WORLD} gloo processes; "
          f"{cfg.timed_steps} timed steps; load average {os.getloadavg()[0]:.1f}")
    runs: dict[str, list[list[dict]]] = {s: [] for s in STRATEGIES}
    with tempfile.TemporaryDirectory(prefix="bench-fsdp-") as tmp:
        for _ in range(args.rounds):
            for strategy in STRATEGIES:
                runs[strategy].append(run(strategy, cfg, Path(tmp)))
    summary = {}
    for strategy, rounds in runs.items():
        summary[strategy] = {
            "peak_mib": statistics.mean(max(r["peak_mib"] for r in ranks) for ranks in rounds),
            "own_mib": statistics.mean(max(r["own_mib"] for r in ranks) for ranks in rounds),
            "tokens_per_s": statistics.median(ranks[0]["tokens_per_s"] for ranks in rounds),
            "losses": rounds[0][0]["losses"],
        }
        s = summary[strategy]
        print(f"{strategy:5s}: peak RSS per rank {s['peak_mib']:.0f} MiB (training's own {s['own_mib']:.0f} MiB), "
              f"{s['tokens_per_s']:.0f} tokens/s")
    ddp, fsdp = summary["ddp"], summary["fsdp"]
    worst = max(abs(a - b) for a, b in zip(ddp["losses"], fsdp["losses"]))
    print(f"fsdp / ddp: peak {fsdp['peak_mib'] / ddp['peak_mib']:.2f} (training's own "
          f"{fsdp['own_mib'] / ddp['own_mib']:.2f}; target <= 0.60), tokens/s "
          f"{fsdp['tokens_per_s'] / ddp['tokens_per_s']:.2f} (target >= 0.80); losses agree to {worst:.1e}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
