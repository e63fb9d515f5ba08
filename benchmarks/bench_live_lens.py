"""The live lens's worker path: a lens job on a model the worker keeps loaded against one that loads the
model first, side by side in one run, with the trace's own per-position view of the same prompt as the
reference of the numbers.

    python benchmarks/bench_live_lens.py [--layers 8] [--hidden 512] [--vocab 151936] [--tokens 64] [--repeats 5]

The model is random (a Qwen3 configuration, seeded; the real Qwen vocabulary by default, so the head is
as costly as a real model's), saved to a temporary folder with a byte-level tokenizer trained on the
built-in task texts; the prompt is a few-shot prompt of ``--tokens`` tokens or so. Each repeat runs
``worker.lens.run_lens`` twice: once after ``forget`` (what the first lens of a model costs: load +
lens) and once more with the model kept (what every next prompt costs). The job's own overhead in the
service (claim, heartbeat, the broker's 0.1 s poll, the page's 0.3 s poll) comes on top of both.
Prints the medians and their ratio; exit status 1 when the lens differs from the trace's view.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def build(folder: Path, layers: int, hidden: int, vocab: int) -> None:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from layertracer.demo.tokenizer import train_tokenizer
    from layertracer.tasks.sets import iter_texts, load_tasks

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
                         num_attention_heads=8, num_key_value_heads=4, head_dim=hidden // 8, tie_word_embeddings=False,
                         max_position_embeddings=4096)
    Qwen3ForCausalLM(config).save_pretrained(folder)
    train_tokenizer(iter_texts(load_tasks("all", shots=0)), 2048).save_pretrained(folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--tokens", type=int, default=64, help="about this many prompt tokens (few-shot lines)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import numpy as np
    import torch

    import layertracer as lt
    from layertracer.tasks.sets import Task, TaskItem
    from worker import lens as worker_lens

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        build(folder, args.layers, args.hidden, args.vocab)
        lines = [f"The opposite of {a} is {b}" for a, b in (("big", "small"), ("hot", "cold"), ("fast", "slow"))] * 20
        prompt, target = "", " small"
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        for line in lines:
            if len(tokenizer(prompt + line + "\nThe opposite of big is")["input_ids"]) > args.tokens:
                break
            prompt += line + "\n"
        prompt += "The opposite of big is"
        spec = {"model": str(folder), "prompt": prompt, "target": target, "device": "cpu", "dtype": "float32"}
        fresh, kept = [], []
        for _ in range(args.repeats):
            worker_lens.forget()
            tick = time.perf_counter()
            first = worker_lens.run_lens(spec, roots=[tmp])
            fresh.append(time.perf_counter() - tick)
            tick = time.perf_counter()
            again = worker_lens.run_lens(spec, roots=[tmp])
            kept.append(time.perf_counter() - tick)
            assert not first["reused_model"] and again["reused_model"]
        loaded = lt.load_model(str(folder), device="cpu", dtype="float32")
        view = lt.trace(loaded, [Task(name="bench", items=[TaskItem(prompt, target)])], perturbations=[],
                        options=lt.TraceOptions(similarity=False, bootstrap_resamples=10)).position_view
        same = (again["tokens"] == view.tokens and again["top1_tokens"] == view.top1_tokens
                and np.array_equal(again["target_prob"], view.target_prob))
        worker_lens.forget()
    figures = {
        "model": {"layers": args.layers, "hidden": args.hidden, "vocab": args.vocab,
                  "parameters": sum(p.numel() for p in loaded.model.parameters())},
        "prompt_tokens": len(again["tokens"]), "threads": torch.get_num_threads(), "repeats": args.repeats,
        "load_and_lens_s": statistics.median(fresh), "kept_model_lens_s": statistics.median(kept),
        "ratio": statistics.median(fresh) / statistics.median(kept), "same_as_trace_position_view": same,
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
