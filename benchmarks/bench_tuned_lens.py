"""The tuned lens on the demo model: train translators on a corpus, then trace the demo's tasks with the
logit lens and with the tuned lens, side by side in one run, and print how the task particles and the
freeze plan change, with the held-out KL to the model's output of both lenses per layer.

    python benchmarks/bench_tuned_lens.py [--model DIR] [--steps 250] [--limit 40] [--json out.json]

The model is the demo model (``layertracer demo-model``: trained into DATA_DIR/demo-model when it is
not cached, about 2 minutes on 2 cores). The corpus is the demo model's own training text
(``layertracer.demo.model.demo_corpus``: the distribution it was trained on, as tuned-lens trains on
the pretraining data), cut into blocks; 10% of the blocks are held out, and the KL is measured on
them. The trace is the demo's (``service.demo.FULL``: every built-in task, 40 prompts a task) with the
skip perturbation alone by default (the plan reads the primary one; ``--perturbations skip,mask:keep=0.5``
for the demo's pair, three times slower on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def demo_model(folder: Path) -> Path:
    from layertracer.demo.model import DemoRecipe, build_demo_model, cached_demo_model

    if cached_demo_model(folder, DemoRecipe()):
        return folder
    print(f"training the demo model into {folder} ...", file=sys.stderr)
    build_demo_model(folder, recipe=DemoRecipe(), force=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a demo model folder (default DATA_DIR/demo-model)")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=64, help="the demo model's own training block size")
    parser.add_argument("--limit", type=int, default=None, help="prompts per task (default: the demo's)")
    parser.add_argument("--perturbations", default="skip", help="comma-separated; the first is primary")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    import layertracer as lt
    from layertracer.demo.model import DemoRecipe, demo_corpus
    from layertracer.experiments.runner import split_blocks
    from layertracer.training.corpus import pack
    from layertracer.tuned_lens import Translators, held_out_kl, train_translators
    from service.demo import FULL

    data_dir = Path(os.environ.get("LAYERTRACER_DATA_DIR", "data"))
    folder = args.model or demo_model(data_dir / "demo-model")
    loaded = lt.load_model(str(folder), device="cpu", dtype="float32")
    torch.manual_seed(0)
    blocks = pack(loaded.tokenizer, demo_corpus(DemoRecipe()), args.block_size)
    train, held = split_blocks(blocks, 0.1, seed=0)
    print(f"model {folder} ({loaded.info.num_layers} blocks, hidden {loaded.info.hidden_size}); corpus: "
          f"{len(train)} training and {len(held)} held-out blocks of {args.block_size} tokens; "
          f"load (1 min) {os.getloadavg()[0]:.2f}")

    started = time.perf_counter()
    translators = train_translators(loaded, train, steps=args.steps, batch_size=args.batch_size)
    train_s = time.perf_counter() - started
    identity = Translators(translators.count, loaded.info.hidden_size)
    kl_logit, kl_tuned = held_out_kl(loaded, identity, held), held_out_kl(loaded, translators, held)
    translators.source = {"fingerprint": loaded.info.fingerprint, "steps": str(args.steps)}

    limit = args.limit or FULL.trace_limit
    tasks = lt.load_tasks("all", limit=limit)
    options = dict(batch_size=16, seed=0)
    timings = {}
    results = {}
    for lens in ("logit", "tuned"):
        started = time.perf_counter()
        results[lens] = lt.trace(loaded, tasks, perturbations=args.perturbations.split(","),
                                 options=lt.TraceOptions(lens=lens, **options),
                                 translators=translators if lens == "tuned" else None)
        timings[lens] = time.perf_counter() - started

    print(f"\ntrained {args.steps} steps x {args.batch_size} blocks in {train_s:.1f} s; traces: logit "
          f"{timings['logit']:.1f} s, tuned {timings['tuned']:.1f} s ({limit} prompts x {len(tasks)} tasks)")
    print("\nheld-out KL(model output || lens), nats, per residual state")
    print(f"{'state':<10} {'logit':>8} {'tuned':>8}")
    for index, (a, b) in enumerate(zip(kl_logit, kl_tuned)):
        print(f"{'embedding' if index == 0 else f'block {index - 1}':<10} {a:8.3f} {b:8.3f}")
    print(f"{'mean':<10} {sum(kl_logit) / len(kl_logit):8.3f} {sum(kl_tuned) / len(kl_tuned):8.3f}")

    print("\nmean KL to the output on the task prompts (answer position), per block")
    means = {}
    for lens, result in results.items():
        rows = [row for task in result.tasks.values() for row in task.kl_to_final]
        means[lens] = [sum(r[layer] for r in rows) / len(rows) for layer in range(result.num_layers)]
    print(" ".join(f"{layer:>6}" for layer in range(loaded.info.num_layers)) + "   block")
    for lens in results:
        print(" ".join(f"{v:6.3f}" for v in means[lens]) + f"   {lens}")

    print("\ntask particles (interval; share of resamples that agree), logit -> tuned")
    changed = 0
    particles = {}
    for name in results["logit"].tasks:
        cells = []
        for lens in ("logit", "tuned"):
            task = results[lens].tasks[name]
            boot = task.particle_bootstrap or {}
            agreement = boot.get("agreement")
            cells.append(f"{'—' if task.task_particle is None else task.task_particle} {boot.get('interval')} "
                         f"{'' if agreement is None else f'{agreement:.0%}'}")
        before, after = results["logit"].tasks[name].task_particle, results["tuned"].tasks[name].task_particle
        particles[name] = {"logit": before, "tuned": after}
        changed += before != after
        print(f"  {name:<20} {cells[0]:<22} -> {cells[1]}")
    print(f"  {changed} of {len(particles)} task particles change")

    print("\nfreeze plan")
    plans = {}
    for lens, result in results.items():
        plan = result.freeze_plan
        share = (plan.stability or {}).get("share")
        plans[lens] = {"train": plan.train_ranges, "freeze": plan.freeze_ranges, "stability": share,
                       "vulnerable_layer": result.vulnerable_layer}
        print(f"  {lens:<6} train {plan.train_ranges or '—':<6} freeze {plan.freeze_ranges or '—':<8} "
              f"same plan in {'—' if share is None else f'{share:.0%}'} of resamples; "
              f"vulnerable layer {result.vulnerable_layer}")

    if args.json:
        args.json.write_text(json.dumps({
            "model": str(folder), "steps": args.steps, "batch_size": args.batch_size, "block_size": args.block_size,
            "train_seconds": train_s, "trace_seconds": timings, "held_out_kl": {"logit": kl_logit, "tuned": kl_tuned},
            "task_kl_to_final": means, "particles": particles, "plans": plans, "limit": limit,
        }, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
