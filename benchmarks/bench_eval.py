"""Benchmark: multiple-choice scoring with one forward pass per question against one per choice.

Both sides score the same questions with the same prompts (lm-eval's ``cmmlu`` template, 5 shots by
default) and the same token ids:

- **engine** (``layertracer.evaluation.score_requests``): the context once per question, the four
  next-token log-probs of " A".." D" read at its last position (a choice of several tokens would get
  its own row); the output head only at the read positions.
- **naive** (what lm-evaluation-harness does for ``multiple_choice``): one sequence per choice,
  context + continuation, batched and right-padded; the model's full logits (B, T, vocab) from
  ``model(ids).logits``; the log-softmax taken at the continuation positions only (kinder to the naive
  side than lm-eval, which takes it over every position).

The model is a seeded random Qwen3-architecture model (6 layers, hidden 256, a 32,000-token
vocabulary by default; ``--vocab 151936`` for Qwen's own size). Its norms are randomised and the final
norm scaled so output distributions are peaked like a trained model's, which makes "identical
predictions" a real check rather than a comparison of near-uniform distributions. The tokenizer is a
byte-level BPE trained on the benchmark's own text. Questions are the real CMMLU test questions (the
first of each subject) when ``../shared/benchmarks/cmmlu`` exists, else generated arithmetic questions
in the same layout.

    .venv/bin/python benchmarks/bench_eval.py                  # ~1-2 minutes on one core
    .venv/bin/python benchmarks/bench_eval.py --questions 16   # quicker
    .venv/bin/python benchmarks/bench_eval.py --json out.json

Exit status 1 when the predictions differ or the log-probs disagree beyond ``--tolerance``.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the working tree's layertracer, also when it is not installed

import torch  # noqa: E402

from layertracer.demo.tokenizer import train_tokenizer  # noqa: E402
from layertracer.evaluation import (  # noqa: E402
    TEMPLATES,
    ScoringRequest,
    encode_question,
    load_benchmark,
    score_requests,
)
from layertracer.models import wrap_model  # noqa: E402

CMMLU = ROOT.parent / "shared" / "benchmarks" / "cmmlu"


def generated_benchmark(folder: Path, subjects: int, seed: int) -> str:
    """A CMMLU-layout folder of arithmetic questions (used when the real data is absent)."""
    rng = random.Random(seed)
    header = ["", "Question", "A", "B", "C", "D", "Answer"]
    for s in range(subjects):
        for split, count in (("dev", 5), ("test", 2)):
            rows = []
            for i in range(count):
                a, b = rng.randint(10, 999), rng.randint(10, 999)
                right = a + b
                options = [right, right + rng.randint(1, 9), right - rng.randint(1, 9), right + 10 * rng.randint(1, 9)]
                rng.shuffle(options)
                rows.append([i, f"计算：{a}加{b}等于多少？", *options, "ABCD"[options.index(right)]])
            path = folder / split / f"arithmetic_{s:02d}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                writer.writerows(rows)
    return f"cmmlu:{folder}"


def build_model(vocab: int, layers: int, hidden: int, final_norm_scale: float, seed: int) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, Qwen3Config

    config = Qwen3Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=4096,
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1.0 + 0.5 * torch.randn(param.shape, generator=generator))
        model.model.norm.weight.mul_(final_norm_scale)
    return model


def naive_scores(model, requests, batch_size: int, pad_id: int) -> list[list[float]]:
    """One right-padded sequence per (question, choice), full logits, continuation log-probs summed."""
    rows = [(q, c, r.context_ids + k) for q, r in enumerate(requests) for c, k in enumerate(r.continuations)]
    scores = [[0.0] * len(r.continuations) for r in requests]
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            length = max(len(ids) for _, _, ids in batch)
            ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
            for b, (_, _, seq) in enumerate(batch):
                ids[b, : len(seq)] = torch.tensor(seq)
            logits = model(input_ids=ids).logits  # (B, T, vocab): what a plain forward gives
            for b, (q, c, _) in enumerate(batch):
                context = len(requests[q].context_ids)
                continuation = requests[q].continuations[c]
                positions = torch.arange(context - 1, context - 1 + len(continuation))
                log_probs = torch.log_softmax(logits[b, positions].float(), dim=-1)
                picked = log_probs[torch.arange(len(continuation)), torch.tensor(continuation)]
                scores[q][c] = float(picked.double().sum())
    return scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=40, help="questions scored (default 40)")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32_000)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max abs log-prob difference allowed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="a cmmlu:DIR or ceval:DIR spec (default: the shared CMMLU)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            spec, source = args.data, args.data
        elif (CMMLU / "test").is_dir():
            spec, source = f"cmmlu:{CMMLU}", "real CMMLU test questions (first of each subject)"
        else:
            spec = generated_benchmark(Path(tmp), subjects=args.questions, seed=args.seed)
            source = "generated arithmetic questions (CMMLU not found)"
        bench = load_benchmark(spec, limit=max(1, -(-args.questions // 67)))
        items = [(s, q) for s in bench.subjects for q in s.questions][: args.questions]

        t0 = time.perf_counter()
        template = TEMPLATES["lm-eval:cmmlu" if bench.name == "cmmlu" else "lm-eval:ceval-valid"]
        # The tokenizer learns from every question of the set (not only the scored ones), so prompt
        # lengths are those of a tokenizer that knows the language, not of one fitted to 40 prompts.
        corpus = load_benchmark(spec)
        texts = [q.question + "\n" + "\n".join(q.choices) for s in corpus.subjects for q in s.questions + s.fewshot]
        texts += [template.render(s, q, s.fewshot) for s, q in items]
        tokenizer = train_tokenizer(texts, args.vocab)
        model = build_model(args.vocab, args.layers, args.hidden, 10.0, args.seed)
        loaded = wrap_model(model, tokenizer, source="random-qwen3")
        encoded = [
            encode_question(tokenizer, template, bench, s, q, shots=args.shots, mode="loglikelihood", max_length=4096)
            for s, q in items
        ]
        requests = [ScoringRequest(e.context_ids, e.continuations) for e in encoded]
        setup = time.perf_counter() - t0
        lengths = [len(r.context_ids) for r in requests]
        multi = sum(any(len(k) > 1 for k in r.continuations) for r in requests)
        pad_id = tokenizer.pad_token_id

        # Warm-up (allocator, kernels) on one question for both sides.
        score_requests(model, loaded.adapter, requests[:1], batch_size=1, pad_id=pad_id)
        naive_scores(model, requests[:1], 4, pad_id)

        t0 = time.perf_counter()
        fast = score_requests(model, loaded.adapter, requests, batch_size=args.batch_size, pad_id=pad_id)
        fast_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        slow = naive_scores(model, requests, args.batch_size, pad_id)
        slow_s = time.perf_counter() - t0

    n = len(requests)
    fast_pred = [max(range(4), key=lambda c: row[c]) for row in fast]
    slow_pred = [max(range(4), key=lambda c: row[c]) for row in slow]
    max_diff = max(abs(fast[q][c] - slow[q][c]) for q in range(n) for c in range(4))
    identical = fast_pred == slow_pred
    params = sum(p.numel() for p in model.parameters())
    figures = {
        "source": source,
        "questions": n,
        "shots": args.shots,
        "batch_size": args.batch_size,
        "prompt_tokens_mean": sum(lengths) / n,
        "prompt_tokens_max": max(lengths),
        "questions_with_multi_token_choices": multi,
        "model": f"Qwen3 config, {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}, "
                 f"{params / 1e6:.1f}M parameters",
        "tokenizer_size": len(tokenizer),
        "threads": args.threads,
        "setup_s": setup,
        "engine_s": fast_s,
        "naive_s": slow_s,
        "engine_questions_per_s": n / fast_s,
        "naive_questions_per_s": n / slow_s,
        "speedup": slow_s / fast_s,
        "predictions_identical": identical,
        "max_abs_logprob_diff": max_diff,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
    }
    print(f"data       {source}: {n} questions, {args.shots} shots, "
          f"prompts {figures['prompt_tokens_mean']:.0f} tokens on average (max {max(lengths)}), "
          f"{multi} with multi-token choices")
    print(f"model      {figures['model']}; tokenizer {len(tokenizer)} tokens; {args.threads} thread(s)")
    print(f"engine     one forward per question : {fast_s:7.2f} s  {n / fast_s:7.2f} questions/s")
    print(f"naive      one forward per choice   : {slow_s:7.2f} s  {n / slow_s:7.2f} questions/s")
    print(f"speed-up   {slow_s / fast_s:.1f}x (target >= 3x)")
    print(f"agreement  predictions identical: {identical}; max |log-prob diff| {max_diff:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0 if identical and max_diff <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
