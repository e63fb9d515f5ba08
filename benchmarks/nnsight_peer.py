"""The peer: the same workload as ``layertracer trace`` in bench_trace.py's whole-process comparison,
written with nnsight 0.8 the way its tutorials write a logit lens and an ablation.

Per batch of prompts: one trace reads every block's output and applies the final norm and the head
to it (the lens); then, for each block, one trace whose block output is replaced by its input (the
``skip`` perturbation), reading the model's logits. Target probabilities, top-1 probabilities and the
Jensen-Shannon divergence are taken at the answer position (the last prompt token).

    python benchmarks/nnsight_peer.py MODEL_DIR TASKS.jsonl OUT.json [--batch-size 8]

``lens_and_skip`` is the workload itself, also run by gpu_check.py on a model already on the GPU.

Run it in an environment with nnsight (it is not one of LayerTracer's dependencies): e.g.
``python -m venv .venv-bench && .venv-bench/bin/pip install -c constraints.txt torch==2.13.0
transformers nnsight==0.8.0``.
"""

from __future__ import annotations

import argparse
import json


def js_divergence(log_p, log_q):
    """Jensen-Shannon divergence (nats) between rows of log-probabilities, in float64."""
    import torch

    p, q = log_p.double().exp(), log_q.double().exp()
    m = 0.5 * (p + q)
    return 0.5 * ((torch.xlogy(p, p) - torch.xlogy(p, m)).sum(-1) + (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(-1))


def lens_and_skip(model, items: list[dict], batch_size: int) -> dict:
    """The workload on an nnsight ``LanguageModel`` of a Llama/Qwen-layout model (``model.model.layers``,
    ``model.model.norm``, ``model.lm_head``). items: dicts with "prompt" and "target" (prompts of one
    token length: no padding). Returns {"target_prob": (P, L), "top1_prob": (P, L), "js": (P, L)} as
    lists, JS in nats."""
    import torch

    layers = model.model.layers
    result = {"target_prob": [], "top1_prob": [], "js": []}
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        prompts = [item["prompt"] for item in batch]
        targets = torch.tensor([model.tokenizer(item["target"], add_special_tokens=False)["input_ids"][0]
                                for item in batch])
        rows = torch.arange(len(batch))
        with model.trace(prompts):
            lens = list().save()  # nnsight: save the container, append the raw values
            for layer in layers:
                lens.append(model.lm_head(model.model.norm(layer.output))[:, -1, :])
        clean = torch.log_softmax(lens[-1].float(), dim=-1)
        probs = [torch.log_softmax(logits.float(), dim=-1).exp().cpu() for logits in lens]
        result["target_prob"] += torch.stack([p[rows, targets] for p in probs], dim=1).tolist()
        result["top1_prob"] += torch.stack([p.max(dim=-1).values for p in probs], dim=1).tolist()
        scan = []
        for layer in layers:
            with model.trace(prompts):
                layer.output = layer.input
                logits = model.output.logits[:, -1, :].save()
            scan.append(js_divergence(clean, torch.log_softmax(logits.float(), dim=-1)).cpu())
        result["js"] += torch.stack(scan, dim=1).tolist()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("tasks")
    parser.add_argument("out")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    import torch
    from nnsight import LanguageModel

    torch.set_grad_enabled(False)
    model = LanguageModel(args.model, device_map="cpu", dispatch=True, torch_dtype=torch.float32)
    items = [json.loads(line) for line in open(args.tasks, encoding="utf-8") if line.strip()]
    result = lens_and_skip(model, items, args.batch_size)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
