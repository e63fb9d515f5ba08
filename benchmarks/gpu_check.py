"""The GPU check of the real-models and trials-at-scale issues, as one command (at most ~8 minutes on
one H200), with random weights from real configs (no hub needed):

1. trace a Qwen3-8B-shaped model in bf16 on 200 prompts x 128 tokens with all five perturbation
   kinds: prompts/s and tokens/s of the whole trace, peak GPU memory, and how well the last layer's
   lens agrees with the model's own output (max |p_lens - p_model| of the target token);
2. the lens at every layer + the skip scan written the nnsight tutorial way (``nnsight_peer.py``, when
   nnsight is installed) against the same work by the engine, on the same prompts: the time ratio and
   the largest difference of their target probabilities and JS;
3. a bf16 evaluation of 500 generated C-Eval-layout questions (questions/s);
4. 50 optimizer steps of train-shallow and of full on a Qwen3-1.7B-shaped model under bf16 autocast
   (tokens/s, MFU against the GPU's bf16 peak with the model FLOPs of ``training_flops_per_token``,
   peak memory).

    python benchmarks/gpu_check.py                 # on the GPU machine; prints one JSON line per part
    python benchmarks/gpu_check.py --tiny --device cpu   # a minute on a CPU: keeps the script runnable

A part that fails prints {"part": ..., "error": ...} and the others still run; once ``--budget-s`` is
spent the parts left print {"skipped": ...}, so one call of the device tool always brings figures
back. How to run it on the lent GPU machine (whose image lacks some packages): benchmarks/README.md,
"GPU check", and ``scripts/gpu-wheels``. Put the printed figures in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

QWEN3_8B = dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, vocab_size=151936)
QWEN3_1_7B = dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=128, vocab_size=151936)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=4096)
H200_BF16_FLOPS = 989e12  # dense bf16 tensor-core peak (NVIDIA's H200 SXM figure)
WORDS = ("river mountain city road light water stone green market teacher window garden letter "
         "number music north summer paper animal morning").split()


def report(part: str, **figures) -> None:
    print(json.dumps({"part": part, **figures}), flush=True)


def tokenizer_for(vocab: int):
    from layertracer.demo.tokenizer import train_tokenizer

    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(40)) for _ in range(400)]
    texts += ["答案是 A B C D 选项 问题 的 了 是 不 在 有 人 这 中 大 为 上 个 国"] * 50
    return train_tokenizer(texts, vocab_size=min(vocab, 2048))


def build(shape: dict, device: str, dtype: torch.dtype, tokenizer):
    from transformers import AutoModelForCausalLM, Qwen3Config

    import layertracer as lt

    config = Qwen3Config(**shape, tie_word_embeddings=False, max_position_embeddings=4096)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return lt.wrap_model(model.eval(), tokenizer)


def tasks_of(tokenizer, prompts: int, tokens: int):
    """``prompts`` items whose prompts are exactly ``tokens`` tokens long (a batch needs no padding, so
    nnsight's last position is every prompt's answer position) and whose targets are one token."""
    import layertracer as lt

    rng = random.Random(1)
    items = []
    while len(items) < prompts:
        words = []
        while len(tokenizer(" ".join(words))["input_ids"]) < tokens:
            words.append(rng.choice(WORDS))
        prompt = " ".join(words)
        if len(tokenizer(prompt)["input_ids"]) == tokens:  # else a merge overshot: draw again
            items.append(lt.TaskItem(prompt=prompt, target=" " + rng.choice(WORDS)))
    return [lt.Task(name="long", items=items, language="en")]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_gib(device: str):
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None


def part_trace(args, tokenizer) -> tuple:
    import layertracer as lt

    shape = TINY if args.tiny else QWEN3_8B
    prompts, tokens = (20, 32) if args.tiny else (200, 128)
    loaded = build(shape, args.device, torch.bfloat16 if args.device.startswith("cuda") else torch.float32, tokenizer)
    tasks = tasks_of(tokenizer, prompts, tokens)
    kinds = ["skip", "zero-attn", "zero-mlp", "noise:scale=1,draws=2", "mask:keep=0.5,draws=2"]
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sync(args.device)
    start = time.perf_counter()
    result = lt.trace(loaded, tasks, perturbations=kinds,
                      options=lt.TraceOptions(batch_size=args.batch_size, similarity=True, position_view=False))
    sync(args.device)
    seconds = time.perf_counter() - start
    # the last layer's lens against the model's own output distribution at the answer position
    task = result.tasks["long"]
    worst = 0.0
    with torch.no_grad():
        for index, item in enumerate(tasks[0].items[:16]):
            ids = tokenizer(item.prompt, return_tensors="pt")["input_ids"].to(args.device)
            logits = loaded.model(ids).logits[0, -1].float()
            p_model = torch.softmax(logits, -1)[task.target_token_ids[index]].item()
            worst = max(worst, abs(p_model - task.target_prob[index][-1]))
    report("trace", model="Qwen3-8B-shaped" if not args.tiny else "tiny", dtype=str(loaded.info.dtype),
           prompts=prompts, tokens_per_prompt=tokens, perturbations=kinds, seconds=round(seconds, 2),
           prompts_per_s=round(prompts / seconds, 2), tokens_per_s=round(prompts * tokens / seconds, 1),
           peak_gpu_gib=peak_gib(args.device), last_layer_vs_model_max_abs_dp=worst)
    return loaded, tasks


def part_nnsight(args, loaded, tasks) -> None:
    """nnsight's tutorial way (``nnsight_peer.lens_and_skip``) against ``lt.trace`` with the lens and
    the skip scan alone, on the same first ``--nnsight-prompts`` prompts and batch size."""
    try:
        from nnsight import LanguageModel
    except ImportError:
        report("nnsight", skipped="nnsight is not installed (pip install nnsight)")
        return
    import numpy as np

    import layertracer as lt
    import nnsight_peer

    items = tasks[0].items[: args.nnsight_prompts]
    subset = [lt.Task(name="subset", items=items, language="en")]
    sync(args.device)
    start = time.perf_counter()
    ours = lt.trace(loaded, subset, perturbations=["skip"],
                    options=lt.TraceOptions(batch_size=args.batch_size, similarity=False, position_view=False))
    sync(args.device)
    engine = time.perf_counter() - start
    model = LanguageModel(loaded.model, tokenizer=loaded.tokenizer)
    sync(args.device)
    start = time.perf_counter()
    with torch.no_grad():
        peer = nnsight_peer.lens_and_skip(model, [{"prompt": i.prompt, "target": i.target} for i in items],
                                          args.batch_size)
    sync(args.device)
    seconds = time.perf_counter() - start
    gap_p = float(np.max(np.abs(np.array(ours.tasks["subset"].target_prob) - np.array(peer["target_prob"]))))
    gap_js = float(np.max(np.abs(np.array(ours.sensitivity.js) - np.array(peer["js"]))))
    report("nnsight", work="lens at every layer + skip scan", prompts=len(items), batch_size=args.batch_size,
           engine_seconds=round(engine, 2), nnsight_seconds=round(seconds, 2),
           nnsight_over_engine_time=round(seconds / engine, 2),
           max_abs_diff_target_prob=gap_p, max_abs_diff_js=gap_js)


def write_ceval(folder: Path, questions: int) -> None:
    rng = random.Random(2)
    for split, count in (("dev", 5), ("val", questions)):
        (folder / split).mkdir(parents=True, exist_ok=True)
        with open(folder / split / f"high_school_physics_{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "question", "A", "B", "C", "D", "answer", "explanation"])
            for i in range(count):
                writer.writerow([i, " ".join(rng.choice(WORDS) for _ in range(30)) + " 的 问题",
                                 *(rng.choice(WORDS) for _ in range(4)), "ABCD"[i % 4], ""])


def part_eval(args, loaded) -> None:
    from layertracer.evaluation import evaluate

    questions = 20 if args.tiny else 500
    with tempfile.TemporaryDirectory() as tmp:
        write_ceval(Path(tmp), questions)
        sync(args.device)
        start = time.perf_counter()
        result = evaluate(loaded, f"ceval:{tmp}", shots=5, batch_size=args.batch_size)
        sync(args.device)
        seconds = time.perf_counter() - start
    report("eval", questions=result.overall.n, seconds=round(seconds, 2),
           questions_per_s=round(result.overall.n / seconds, 1), accuracy=result.overall.accuracy)


def training_flops_per_token(shape: dict, allocation, context: int) -> float:
    """Model FLOPs of one training token of a Qwen3-layout model (untied head, gated MLP), PaLM's way
    (``full`` is its 6 N + 12 L H Q T, N the weight matrices' parameters): each weight matrix costs
    2 FLOPs per parameter forward, 2 for its input gradient and 2 for its weight gradient; attention's
    scores and values 4 T (heads x head_dim) per block forward (the full T x T, as PaLM counts it),
    twice that backward. Input gradients run from the head down through the lowest trained block
    (frozen blocks above it too; that block's own, not needed, is counted: at most 1/L too much);
    weight gradients only for trained matrices. The embedding lookup is no product; norms and the
    optimizer are not counted."""
    if allocation.part != "all":
        raise ValueError("the FLOP count covers whole blocks only")
    d, f, L = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    q = shape["num_attention_heads"] * shape["head_dim"]
    kv = shape["num_key_value_heads"] * shape["head_dim"]
    block = d * q + 2 * d * kv + q * d + 3 * d * f  # q, k, v, o and gate, up, down
    head = d * shape["vocab_size"]
    attention = 4 * context * q  # per block and token, forward
    trained = sorted(allocation.layers)
    lowest = 0 if allocation.embeddings else (trained[0] if trained else None)
    forward = L * (2 * block + attention) + 2 * head
    inputs = 0 if lowest is None else (L - lowest) * (2 * block + 2 * attention) + 2 * head
    weights = 2 * block * len(trained) + (2 * head if allocation.head else 0)
    return float(forward + inputs + weights)


def part_train(args, tokenizer) -> None:
    from layertracer.training.allocation import resolve_allocation
    from layertracer.training.loop import TrainConfig, train

    shape = TINY if args.tiny else QWEN3_1_7B
    steps, batch, block = (3, 2, 32) if args.tiny else (50, 8, 1024)
    for allocation_name in ("train-shallow", "full"):
        # fp32 weights (the master copy), bf16 autocast on CUDA
        loaded = build(shape, args.device, torch.float32, tokenizer)
        blocks = torch.randint(3, tokenizer.vocab_size, (steps * batch, block))
        allocation = resolve_allocation(allocation_name, loaded.adapter.num_layers)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        result = train(loaded, blocks, allocation, TrainConfig(steps=steps, batch_size=batch, warmup_steps=1,
                                                               checkpoint_every=0))
        per_s = [m.tokens_per_s for m in result.history[1:]] or [result.history[-1].tokens_per_s]
        tokens_per_s = sum(per_s) / len(per_s)
        flops_per_token = training_flops_per_token(shape, allocation, block)
        report("train", model="Qwen3-1.7B-shaped" if not args.tiny else "tiny", allocation=allocation_name,
               steps=steps, tokens_per_step=batch * block, tokens_per_s=round(tokens_per_s, 1),
               model_gflop_per_token=round(flops_per_token / 1e9, 3),
               mfu=round(tokens_per_s * flops_per_token / H200_BF16_FLOPS, 4) if args.device.startswith("cuda") else None,
               peak_gpu_gib=peak_gib(args.device), final_loss=round(result.history[-1].loss, 4))
        del loaded
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()


class Parts:
    """Runs the parts one after another: a part's error is reported as a line and the check goes on;
    once ``budget_s`` seconds are spent, the parts left are reported as skipped."""

    def __init__(self, device: str, budget_s: float) -> None:
        self.device, self.budget_s, self.started = device, budget_s, time.perf_counter()

    def run(self, name: str, part):
        """part() -> its value, or None when it failed or was skipped."""
        spent = time.perf_counter() - self.started
        if spent > self.budget_s:
            report(name, skipped=f"the budget of {self.budget_s:.0f} s is spent ({spent:.0f} s)")
            return None
        try:
            return part()
        except Exception as error:  # noqa: BLE001 - one part's failure must not lose the others' figures
            traceback.print_exc()
            report(name, error=f"{type(error).__name__}: {error}"[:2000])
            return None
        finally:
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: a smoke run that fits a CPU")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--parts", default="trace,nnsight,eval,train")
    parser.add_argument("--nnsight-prompts", type=int, default=64,
                        help="prompts of the nnsight comparison (the tutorial way runs one trace per layer)")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="no part starts after this many seconds (the device tool's call allows 600)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: no CUDA device here (use --tiny --device cpu for a smoke run)")
    runner = Parts(args.device, args.budget_s)
    run = runner.run
    parts = set(args.parts.split(","))
    torch.manual_seed(0)
    import transformers

    report("machine", device=torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
           torch=torch.__version__, transformers=transformers.__version__)
    tokenizer = tokenizer_for(QWEN3_8B["vocab_size"])
    traced = None
    if parts & {"trace", "nnsight", "eval"}:
        traced = run("trace", lambda: part_trace(args, tokenizer))
    if traced is not None:
        loaded, tasks = traced
        if "nnsight" in parts:
            run("nnsight", lambda: part_nnsight(args, loaded, tasks))
        if "eval" in parts:
            run("eval", lambda: part_eval(args, loaded))
        del loaded, traced
    else:
        for name in sorted(parts & {"nnsight", "eval"}):
            report(name, skipped="it runs on the trace part's model, which is not there")
    if "train" in parts:
        run("train", lambda: part_train(args, tokenizer))
    report("done", seconds=round(time.perf_counter() - runner.started, 1))


if __name__ == "__main__":
    main()
