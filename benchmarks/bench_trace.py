"""Benchmark: ``layertracer.trace`` (logit lens + ``skip`` sensitivity) against the naive way.

The naive way, as people write it today, per batch of prompts:
  * one forward with ``output_hidden_states=True``; logits at every position for the model output, and
    the final norm + lm_head applied to every hidden state at every position (the lens at all positions);
  * for each layer l, a full forward of the whole model with block l skipped (a forward hook that
    returns the block's input), logits at every position;
  * then the answer position is taken and the log-softmax / JS computed there.

The engine records one clean pass, projects only the answer position, and for the skip of layer l
replays blocks l+1.. only from the recorded state.

Each implementation runs in its own fresh subprocess (so peak RSS is its own), on the same seeded
random Qwen3-architecture model (real Qwen vocabulary of 151,936) and the same random prompts. The
parent alternates the two processes' timed runs (naive, engine, engine, naive, ...) so both see the
same machine conditions, then compares the numbers, the wall times, the peak memory and the FLOPs.

    .venv/bin/python benchmarks/bench_trace.py            # full configuration (2-4 minutes idle)
    .venv/bin/python benchmarks/bench_trace.py --quick    # smaller configuration, under a minute
    .venv/bin/python benchmarks/bench_trace.py --json out.json
    .venv/bin/python benchmarks/bench_trace.py --whole-process --peer-python .venv-bench/bin/python

``--whole-process`` times whole processes instead, side by side (engine, peer, engine, peer, ...):
``layertracer trace`` on the model saved to disk with a word-level tokenizer of the same vocabulary,
against ``benchmarks/nnsight_peer.py`` (nnsight 0.8 written the tutorial way, in the environment of
``--peer-python``, which needs nnsight: ``python -m venv .venv-bench && .venv-bench/bin/pip install
-c constraints.txt torch==2.13.0 transformers accelerate nnsight==0.8.0``; nnsight loads the
model with a device map, which needs accelerate), each from its start to its exit
(imports, loading, the trace, writing the result), and prints the ratio of the medians and the
numbers' agreement. Target: the whole process at least 8x faster than nnsight.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the working tree's layertracer, also when it is not installed
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/machine.py, also when imported from elsewhere
from line_worker import PROTOCOL, LineWorker  # noqa: E402
from machine import CpuMeter, current_rss_mib, peak_rss_mib, reset_peak_rss  # noqa: E402

TASK_NAME = "random_tokens"


# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class BenchConfig:
    vocab_size: int = 151_936
    hidden_size: int = 512
    intermediate_size: int = 1536
    num_layers: int = 8
    num_heads: int = 8
    num_kv_heads: int = 4
    head_dim: int = 64
    prompts: int = 32
    tokens: int = 32
    batch_size: int = 8
    repeats: int = 2
    threads: int = 2
    seed: int = 0
    # Random init gives near-uniform output distributions over 151,936 tokens (every probability
    # ~1/V), which would make a 1e-5 agreement check vacuous. Norm weights are randomised (a norm of
    # weight 1 would hide a doubled final norm) and the final norm is scaled so the distributions are
    # peaked like a trained model's (top-1 probabilities of order 0.1-0.9).
    final_norm_scale: float = 10.0
    # Before each timed run, wait up to this long for the other cores to be idle (another process
    # on the machine makes the timings meaningless); 0 disables the wait.
    max_wait_idle_s: float = 120.0
    idle_threshold: float = 0.25  # cores busy with other processes counted as "idle"
    max_runs: int = 4  # runs allowed to reach ``repeats`` uncontended ones
    floor_pairs: int = 6  # back-to-back pairs of an engine run and the floor's products alone

    @classmethod
    def quick(cls, **overrides) -> "BenchConfig":
        return cls(**{**dict(num_layers=4, prompts=8, tokens=16, batch_size=8, repeats=1, max_runs=1, max_wait_idle_s=10.0,
                             floor_pairs=2),
                      **overrides})


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------------
# Model, prompts, memory probes (used inside the workers)


def build_model(cfg: BenchConfig):
    """The seeded random Qwen3 model, float32 on CPU; identical in every process."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        tie_word_embeddings=False,
        max_position_embeddings=max(4096, cfg.tokens),
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    try:  # transformers' own init of 180M parameters takes seconds; ours below is seeded and faster
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        model = Qwen3ForCausalLM(config)
    model = model.to(torch.float32).eval()
    generator = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:  # random norm weights: a norm of weight 1 would hide a doubled final norm
                param.copy_(1.0 + 0.5 * torch.randn(param.shape, generator=generator))
            else:  # embeddings and projections, as Qwen3's initializer_range
                param.normal_(0.0, config.initializer_range, generator=generator)
        model.model.norm.weight.mul_(cfg.final_norm_scale)
    return model


def make_prompts(cfg: BenchConfig):
    """(N, T) random token ids and (N,) random target ids (ids 0-2 are reserved as special tokens)."""
    import torch

    generator = torch.Generator().manual_seed(cfg.seed + 2)
    ids = torch.randint(3, cfg.vocab_size, (cfg.prompts, cfg.tokens), generator=generator)
    targets = torch.randint(3, cfg.vocab_size, (cfg.prompts,), generator=generator)
    return ids, targets


def param_checksum(model) -> float:
    import torch

    with torch.no_grad():  # a strided sample of every parameter: enough to tell two builds apart
        return float(sum(p.detach().flatten()[::997].double().sum() * (i + 1) for i, p in enumerate(model.parameters())))


# --------------------------------------------------------------------------------------------------
# The two implementations. Each returns (N, L) target probabilities, (N, L) JS of the skip scan and
# (N, L) top-1 probabilities of the lens, as numpy arrays.


class StubTokenizer:
    """Maps the benchmark's placeholder texts to pre-built token ids.

    ``trace`` only accepts text tasks and tokenizes them itself (there is no way to hand it
    ``EncodedItem``s), so the random token ids go in through this object: ``prompt_i`` encodes to
    prompt i's ids, ``prompt_i + target_i`` to those ids plus the target id.
    """

    pad_token_id = 0
    eos_token_id = 2

    def __init__(self, ids, targets) -> None:
        self.table: dict[str, list[int]] = {}
        self.items = []
        for i, (row, target) in enumerate(zip(ids.tolist(), targets.tolist())):
            prompt, answer = f"<prompt {i}>", f" <target {i}>"
            self.table[prompt] = row
            self.table[prompt + answer] = row + [target]
            self.items.append((prompt, answer))

    def __call__(self, text: str, **_):
        return {"input_ids": list(self.table[text])}

    def decode(self, ids, **_) -> str:
        return "".join(f"<{int(i)}>" for i in ids)


def run_engine(model, ids, targets, cfg: BenchConfig):
    import numpy as np

    import layertracer as lt

    tokenizer = StubTokenizer(ids, targets)
    loaded = lt.wrap_model(model, tokenizer, source="bench:qwen3-random")
    task = lt.Task(
        name=TASK_NAME, items=[lt.TaskItem(prompt=p, target=t) for p, t in tokenizer.items], source="bench"
    )
    options = lt.TraceOptions(batch_size=cfg.batch_size, similarity=False, position_view=False, seed=cfg.seed)
    result = lt.trace(loaded, [task], perturbations=["skip"], options=options)
    trace_ = result.tasks[TASK_NAME]
    if [int(i) for i in trace_.target_token_ids] != targets.tolist():
        raise RuntimeError("the engine scored other target ids than the benchmark's")
    return {
        "target_prob": np.asarray(trace_.target_prob, dtype=np.float64),
        "js": np.asarray(result.sensitivity.js, dtype=np.float64),
        "top1_prob": np.asarray(trace_.top_probs, dtype=np.float64)[:, :, 0],
        "engine_timings": dict(result.timings),
    }


def _naive_js(log_p, log_q):
    """Jensen-Shannon divergence (nats) between rows of log-probabilities, in float64."""
    import torch

    p, q = log_p.double().exp(), log_q.double().exp()
    m = 0.5 * (p + q)
    kl_pm = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(-1)
    kl_qm = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(-1)
    return 0.5 * (kl_pm + kl_qm)


def run_naive(model, ids, targets, cfg: BenchConfig):
    import numpy as np
    import torch

    layers, norm, head = model.model.layers, model.model.norm, model.lm_head
    n_layers = len(layers)
    n = ids.shape[0]
    target_prob = np.zeros((n, n_layers))
    top1_prob = np.zeros((n, n_layers))
    js = np.zeros((n, n_layers))

    def skip_hook(module, args, kwargs, output):
        return kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    with torch.inference_mode():
        for start in range(0, n, cfg.batch_size):
            batch_ids = ids[start : start + cfg.batch_size]
            b = batch_ids.shape[0]
            rows = slice(start, start + b)
            arange = torch.arange(b)
            last = torch.full((b,), batch_ids.shape[1] - 1)  # every prompt is T tokens: no padding
            batch_targets = targets[start : start + b]

            out = model(input_ids=batch_ids, output_hidden_states=True, use_cache=False)
            # hidden_states[0] is the embedding output, [l + 1] block l's output. The last entry is
            # already through the final norm (its lens is out.logits): norming it again would be wrong.
            clean = None
            for layer in range(n_layers):
                if layer == n_layers - 1:
                    logits = out.logits  # (B, T, V)
                else:
                    logits = head(norm(out.hidden_states[layer + 1]))  # (B, T, V): lens at every position
                log_p = torch.log_softmax(logits[arange, last].float(), dim=-1)
                del logits
                target_prob[rows, layer] = log_p[arange, batch_targets].double().exp().numpy()
                top1_prob[rows, layer] = log_p.max(dim=-1).values.double().exp().numpy()
                clean = log_p
            del out

            for layer in range(n_layers):
                handle = layers[layer].register_forward_hook(skip_hook, with_kwargs=True)
                try:
                    logits = model(input_ids=batch_ids, use_cache=False).logits  # (B, T, V)
                finally:
                    handle.remove()
                log_q = torch.log_softmax(logits[arange, last].float(), dim=-1)
                del logits
                js[rows, layer] = _naive_js(clean, log_q).numpy()
    return {"target_prob": target_prob, "js": js, "top1_prob": top1_prob}


IMPLEMENTATIONS = {"engine": run_engine, "naive": run_naive}


def floor_products(model, cfg: BenchConfig):
    """The floor's matrix products alone, as plain torch calls on the model's own weights, batch by
    batch as the workload is batched: per batch of B prompts, every block pass of the floor (the clean
    forward's L and the skip replays' L(L-1)/2) as its seven projections over the B*T token rows plus
    the attention products (both full T x T, a little over the floor's causal half), and the floor's
    2 L B head rows as one ``W @ X^T`` (the fastest form measured here). No norms, no softmax, no
    statistics: how long the floor takes at this machine's GEMM throughput. Returns a function that
    runs them once; the inputs are random (the speed of a product does not depend on its values)."""
    import torch

    block = model.model.layers[0]
    attention, mlp = block.self_attn, block.mlp
    weights = [attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight, mlp.gate_proj.weight,
               mlp.up_proj.weight]
    head = model.lm_head.weight
    L, T = cfg.num_layers, cfg.tokens
    passes = L + L * (L - 1) // 2
    generator = torch.Generator().manual_seed(cfg.seed + 3)
    sizes = [min(cfg.batch_size, cfg.prompts - start) for start in range(0, cfg.prompts, cfg.batch_size)]
    inputs = {}
    for b in set(sizes):
        inputs[b] = {
            "tokens": torch.randn(b * T, cfg.hidden_size, generator=generator),
            "heads_out": torch.randn(b * T, cfg.num_heads * cfg.head_dim, generator=generator),
            "ffn": torch.randn(b * T, cfg.intermediate_size, generator=generator),
            "qk": torch.randn(b * cfg.num_heads, T, cfg.head_dim, generator=generator),
            "head_rows": torch.randn(2 * L * b, cfg.hidden_size, generator=generator),
        }

    def run() -> None:
        with torch.inference_mode():
            for b in sizes:
                x = inputs[b]
                for _ in range(passes):
                    for weight in weights:
                        torch.nn.functional.linear(x["tokens"], weight)
                    torch.nn.functional.linear(x["heads_out"], attention.o_proj.weight)
                    torch.nn.functional.linear(x["ffn"], mlp.down_proj.weight)
                    scores = torch.bmm(x["qk"], x["qk"].transpose(1, 2))  # (B*heads, T, T)
                    torch.bmm(scores, x["qk"])
                head @ x["head_rows"].T

    return run


class WorkCounter:
    """Counts the work that actually ran, through hooks on the decoder blocks and the head: token rows
    through blocks (and the causal attention context of each call) and rows through the head. Turned
    into MACs with the same per-token costs as the analytical floor (see ``flop_counts``)."""

    def __init__(self, model, cfg: BenchConfig, impl: str) -> None:
        self.cfg = cfg
        self.block_calls = self.block_tokens = self.attention_macs = 0
        self.head_calls = self.head_rows = 0
        self.handles = [block.register_forward_pre_hook(self._block, with_kwargs=True) for block in model.model.layers]
        self.restore = None
        if impl == "engine":
            # The engine's CPU head is a product with the head's weight, not a call of the module (a hook
            # on it would see nothing): its rows are counted where the engine projects them.
            from layertracer.models.adapters import ModelAdapter

            project = ModelAdapter.project

            def counted(adapter, hidden, out=None):
                self._head(None, (hidden,))
                return project(adapter, hidden, out=out)

            ModelAdapter.project = counted
            self.restore = lambda: setattr(ModelAdapter, "project", project)
        else:
            self.handles.append(model.lm_head.register_forward_pre_hook(self._head))

    def _block(self, module, args, kwargs) -> None:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        batch, length = hidden.shape[0], hidden.shape[1]
        self.block_calls += 1
        self.block_tokens += batch * length
        self.attention_macs += batch * attention_macs(self.cfg, length)

    def _head(self, module, args) -> None:
        self.head_calls += 1
        self.head_rows += args[0].numel() // args[0].shape[-1]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        if self.restore is not None:
            self.restore()

    def summary(self) -> dict:
        per = per_token_macs(self.cfg)
        return {
            "block_calls": self.block_calls,
            "block_tokens": self.block_tokens,
            "head_calls": self.head_calls,
            "head_rows": self.head_rows,
            "macs": {
                "blocks (linear layers)": self.block_tokens * per["block_linear"],
                "blocks (attention over the causal context)": self.attention_macs,
                "head projections": self.head_rows * per["head"],
            },
        }




def _say(**message) -> None:
    sys.stdout.write(PROTOCOL + json.dumps(message) + "\n")
    sys.stdout.flush()


def worker(impl: str, cfg: BenchConfig, out_path: str) -> None:
    """One implementation in its own process: build the model, warm up, reset the peak-RSS mark, then
    obey the parent on stdin: ``run`` (wait for an idle machine, time one run, report it) or ``finish``
    (write the JSON payload and exit). The parent alternates the two workers' runs, so both are timed
    under the same machine conditions (this VM's speed drifts by tens of percent over minutes)."""
    import numpy as np
    import torch

    torch.set_num_threads(cfg.threads)
    source = None
    if impl == "engine":
        import layertracer.tracer  # noqa: F401  (imported now: the fingerprint is of the code that runs)

        source = engine_source_fingerprint()
    built = time.perf_counter()
    model = build_model(cfg)
    build_s = time.perf_counter() - built
    ids, targets = make_prompts(cfg)
    rss_model_loaded = current_rss_mib()
    ru_after_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.inference_mode():  # first-call set-up (kernels, thread pool); one prompt, little memory
        model(input_ids=ids[:1], use_cache=False)
    # The engine's worker also times the floor's products alone (their (V, 2LB) result is smaller than
    # the engine's own peak above the baseline, so the peak stays the engine's).
    floor_run = floor_products(model, cfg) if impl == "engine" else None
    if floor_run is not None:
        floor_run()  # warm-up
    reset_worked = reset_peak_rss()
    baseline = current_rss_mib()
    runner = IMPLEMENTATIONS[impl]
    floor_pairs: list = []
    meter = CpuMeter()
    times, loads, waits, result, counted = [], [], [], None, None
    _say(event="ready")
    for line in sys.stdin:
        command = line.strip()
        if command == "finish":
            break
        if command.startswith("pairs ") and floor_run is not None:
            # Engine runs and the floor's products alone, back to back, in alternating order (ABBA):
            # the machine's drift over a pair cancels out of its ratio.
            for index in range(int(command.split()[1])):
                timed = {}
                for part in (("engine", "floor") if index % 2 == 0 else ("floor", "engine")):
                    started = meter.start()
                    tick = time.perf_counter()
                    runner(model, ids, targets, cfg) if part == "engine" else floor_run()
                    timed[part] = time.perf_counter() - tick
                    timed[f"{part}_foreign_cores"] = meter.foreign_cores(started)
                floor_pairs.append(timed)
            _say(event="paired", pairs=floor_pairs)
            continue
        if command != "run":
            continue
        waited, _ = (
            meter.wait_idle(cfg.max_wait_idle_s, cfg.idle_threshold) if cfg.max_wait_idle_s > 0 else (0.0, None)
        )
        counter = WorkCounter(model, cfg, impl) if counted is None else None  # count during the first run only
        result = None
        started = meter.start()
        tick = time.perf_counter()
        result = runner(model, ids, targets, cfg)
        elapsed = time.perf_counter() - tick
        load = meter.foreign_cores(started)
        if counter is not None:
            counter.remove()
            counted = counter.summary()
        times.append(elapsed)
        loads.append(load)
        waits.append(waited)
        _say(event="ran", seconds=elapsed, foreign_cores=load, waited=waited)
    peak = peak_rss_mib(reset_worked)
    if result is None or counted is None:
        raise SystemExit("the worker was told to finish before any run")
    clean_idx = [i for i, load in enumerate(loads) if load is not None and load < cfg.idle_threshold]
    pool = clean_idx or list(range(len(times)))
    best = min(pool, key=lambda i: times[i])
    payload = {
        "impl": impl,
        "times_s": times,
        "best_s": times[best],
        "best_run_uncontended": bool(clean_idx),
        "foreign_cores_per_run": loads,
        "foreign_cores_best_run": loads[best],
        "idle_wait_s_per_run": waits,
        "build_s": build_s,
        "rss_model_loaded_mib": rss_model_loaded,
        "rss_baseline_mib": baseline,
        "peak_rss_mib": peak,
        "peak_minus_baseline_mib": peak - baseline,
        "ru_maxrss_incl_build_mib": max(ru_after_build, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_method": "VmHWM after clear_refs reset" if reset_worked else "ru_maxrss",
        "threads": torch.get_num_threads(),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "param_checksum": param_checksum(model),
        "counted": counted,
        "floor_pairs": floor_pairs,
        "source": source,
        "engine_timings": result.pop("engine_timings", None),
        "arrays": {k: np.asarray(v).tolist() for k, v in result.items()},
    }
    with open(out_path, "w") as handle:
        json.dump(payload, handle)


# --------------------------------------------------------------------------------------------------
# FLOP accounting (multiply-accumulates, from the config; elementwise work — norms, rotary, softmax,
# activations, residual adds — is not counted: it is < 1% here)


def per_token_macs(cfg: BenchConfig) -> dict:
    d = cfg.hidden_size
    qd, kvd = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    return {
        # q, k, v, o projections and the gated MLP's three matrices
        "block_linear": d * qd + 2 * d * kvd + qd * d + 3 * d * cfg.intermediate_size,
        "head": d * cfg.vocab_size,
    }


def attention_macs(cfg: BenchConfig, length: int) -> int:
    """Scores and weighted sum over the causal context of one sequence: sum_t t = T(T+1)/2 per head."""
    return 2 * cfg.num_heads * cfg.head_dim * length * (length + 1) // 2


def flop_counts(cfg: BenchConfig) -> dict:
    """Analytical MAC counts: the floor, and what the naive way is expected to do."""
    per = per_token_macs(cfg)
    L, n, t = cfg.num_layers, cfg.prompts, cfg.tokens
    block_pass = n * (t * per["block_linear"] + attention_macs(cfg, t))  # one block over all N*T tokens
    head = per["head"]
    floor = {
        "clean forward, blocks (N*T tokens)": L * block_pass,
        "lens heads (answer position, L per prompt)": L * n * head,
        "skip replays, blocks l+1.. (N*T tokens)": (L * (L - 1) // 2) * block_pass,
        "skip heads (answer position, L per prompt)": L * n * head,
    }
    naive = {
        "clean forward, blocks (N*T tokens)": L * block_pass,
        "clean forward, head (N*T tokens)": n * t * head,
        "lens heads (all positions, L-1 more)": (L - 1) * n * t * head,
        # a forward hook replaces block l's output after the block ran: all L blocks run every time
        "skip forwards, blocks (L x L blocks, N*T tokens)": L * L * block_pass,
        "skip forwards, head (L x N*T tokens)": L * n * t * head,
    }
    return {
        "macs_per_token_block_linear": per["block_linear"],
        "macs_per_head_projection": head,
        "floor": floor,
        "naive_expected": naive,
        "floor_total": sum(floor.values()),
        "naive_expected_total": sum(naive.values()),
    }


# --------------------------------------------------------------------------------------------------
# Parent: run the workers, compare, report


class WorkerProcess(LineWorker):
    """A worker subprocess driven line by line (see ``worker``)."""

    def __init__(self, impl: str, cfg: BenchConfig, folder: str) -> None:
        self.impl = impl
        self.out = os.path.join(folder, f"{impl}.json")
        self.stderr = open(os.path.join(folder, f"{impl}.stderr"), "w+")
        env = dict(os.environ, OMP_NUM_THREADS=str(cfg.threads), MKL_NUM_THREADS=str(cfg.threads))
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, "--config", json.dumps(asdict(cfg)),
               "--out", self.out]
        self.started = time.perf_counter()
        super().__init__(impl, cmd, env, self.stderr)

    def finish(self) -> dict:
        self.send("finish")
        if self.proc.wait() != 0:
            self._fail()
        with open(self.out) as handle:
            payload = json.load(handle)
        payload["process_wall_s"] = time.perf_counter() - self.started
        self.stderr.close()
        return payload


def run_pair(cfg: BenchConfig) -> tuple[dict, dict, list]:
    """Both workers alive, their runs alternated (naive, engine, engine, naive, ...) until each has
    ``repeats`` uncontended runs or ``max_runs`` runs. Returns (engine, naive, rounds)."""
    with tempfile.TemporaryDirectory(prefix="bench_trace_") as tmp:
        workers = {impl: WorkerProcess(impl, cfg, tmp) for impl in ("naive", "engine")}
        try:
            for w in workers.values():  # both build concurrently: untimed
                w.receive()
            print("  both workers ready (model built and warmed up in each)", flush=True)
            clean = {impl: 0 for impl in workers}
            runs = {impl: 0 for impl in workers}
            rounds: list = []
            max_runs = max(cfg.repeats, cfg.max_runs)
            order = ["naive", "engine"]
            while any(runs[i] < max_runs and clean[i] < cfg.repeats for i in workers) or any(
                runs[i] < cfg.repeats for i in workers
            ):
                row = {}
                for impl in order:
                    if runs[impl] >= max_runs or (clean[impl] >= cfg.repeats and runs[impl] >= cfg.repeats):
                        continue
                    workers[impl].send("run")
                    message = workers[impl].receive()
                    runs[impl] += 1
                    load = message.get("foreign_cores")
                    if load is not None and load < cfg.idle_threshold:
                        clean[impl] += 1
                    row[impl] = message
                    print(f"  round {len(rounds) + 1}: {impl:<6} {message['seconds']:7.2f} s  "
                          f"(other processes {fmt_load(load)} cores, waited {message['waited']:.0f} s for idle)",
                          flush=True)
                rounds.append(row)
                order.reverse()  # ABBA: neither implementation always goes first
            if cfg.floor_pairs > 0:
                print(f"  engine and the floor's products alone, {cfg.floor_pairs} back-to-back pairs", flush=True)
                workers["engine"].send(f"pairs {cfg.floor_pairs}")
                workers["engine"].receive()
            engine = workers["engine"].finish()
            naive = workers["naive"].finish()
        finally:
            for w in workers.values():
                if w.proc.poll() is None:
                    w.proc.kill()
    return engine, naive, rounds


def compare(engine: dict, naive: dict) -> dict:
    import numpy as np

    diffs = {}
    for key in ("target_prob", "js", "top1_prob"):
        a = np.asarray(engine["arrays"][key], dtype=np.float64)
        b = np.asarray(naive["arrays"][key], dtype=np.float64)
        if a.shape != b.shape:
            raise SystemExit(f"{key}: engine shape {a.shape} != naive shape {b.shape}")
        abs_diff = np.abs(a - b)
        rel = abs_diff / np.maximum(np.abs(b), 1e-30)
        diffs[key] = {
            "max_abs_diff": float(np.nanmax(abs_diff)),
            "max_rel_diff": float(np.nanmax(rel)),
            "nan_mismatch": int(np.sum(np.isnan(a) != np.isnan(b))),
            "engine_mean_per_layer": np.nanmean(a, axis=0).tolist(),
            "naive_mean_per_layer": np.nanmean(b, axis=0).tolist(),
            "range": [float(np.nanmin(b)), float(np.nanmax(b))],
        }
    return diffs


def engine_source_fingerprint() -> dict:
    """sha256 of the layertracer modules loaded in this process, and their newest mtime: the engine is
    edited while benchmarks run, so a figure says which code it measured."""
    import hashlib

    package = (ROOT / "layertracer").resolve()
    files = sorted(
        {
            Path(module.__file__).resolve()
            for module in list(sys.modules.values())
            if getattr(module, "__file__", None) and package in Path(module.__file__).resolve().parents
        }
    )
    digest, newest = hashlib.sha256(), 0.0
    for file in files:
        digest.update(str(file.relative_to(package)).encode())
        digest.update(file.read_bytes())
        newest = max(newest, file.stat().st_mtime)
    return {
        "sha256": digest.hexdigest()[:16],
        "modules": [str(f.relative_to(package)) for f in files],
        "newest_mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(newest)) if files else None,
    }


def machine_description() -> dict:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            mem_gib = int(handle.readline().split()[1]) / 1024 / 1024
    except (OSError, ValueError, IndexError):
        mem_gib = None
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus_available": default_threads(),
        "memory_gib": mem_gib,
        "gpu": torch.cuda.is_available(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _clean_runs(payload: dict, cfg: BenchConfig) -> int:
    return sum(1 for load in payload["foreign_cores_per_run"] if load is not None and load < cfg.idle_threshold)


def fmt_load(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def fmt_g(macs: float) -> str:
    return f"{macs / 1e9:,.1f}"


def report(cfg: BenchConfig, engine: dict, naive: dict, rounds: list, args) -> tuple[dict, bool, bool]:
    flops = flop_counts(cfg)
    diffs = compare(engine, naive)
    speedup = naive["best_s"] / engine["best_s"]
    # Each round ran naive and engine back to back: their ratio is immune to the machine's slow drift.
    paired = [
        r["naive"]["seconds"] / r["engine"]["seconds"]
        for r in rounds
        if "naive" in r and "engine" in r
        and all((r[i].get("foreign_cores") or 0.0) < cfg.idle_threshold for i in ("naive", "engine"))
    ]
    paired_median = sorted(paired)[len(paired) // 2] if paired else None
    # The engine against the floor's products alone, pair by pair (each pair back to back), and best
    # engine run over best products run.
    pairs = engine["floor_pairs"]
    floor_pairs = [pair["engine"] / pair["floor"] for pair in pairs]
    floor_ratio = statistics.median(floor_pairs)
    floor_products_best = min(pair["floor"] for pair in pairs)
    floor_best_ratio = min(pair["engine"] for pair in pairs) / floor_products_best
    done = {name: sum(p["counted"]["macs"].values()) for name, p in (("engine", engine), ("naive", naive))}
    floor = flops["floor_total"]

    print()
    print(f"model: random Qwen3, V={cfg.vocab_size:,} d={cfg.hidden_size} ffn={cfg.intermediate_size} "
          f"L={cfg.num_layers} heads={cfg.num_heads}/{cfg.num_kv_heads}x{cfg.head_dim}, float32 CPU, "
          f"attn={engine['attn_implementation']}")
    print(f"work:  {cfg.prompts} prompts x {cfg.tokens} tokens, batch {cfg.batch_size}, lens + skip over all "
          f"{cfg.num_layers} layers; best of {cfg.repeats} uncontended run(s) (at most {max(cfg.repeats, cfg.max_runs)} "
          f"runs); {engine['threads']} torch threads")
    if engine["param_checksum"] != naive["param_checksum"]:
        print("WARNING: the two processes built different weights (checksums differ)")
    print()
    rows = [
        ("wall time, best (s)", f"{engine['best_s']:.2f}", f"{naive['best_s']:.2f}", f"{speedup:.2f}x"),
        ("runs (uncontended / all)", f"{_clean_runs(engine, cfg)} / {len(engine['times_s'])}",
         f"{_clean_runs(naive, cfg)} / {len(naive['times_s'])}", ""),
        ("same-round ratios, uncontended", "", "", " ".join(f"{x:.2f}" for x in paired) or "n/a"),
        ("other processes' CPU, best run (cores)", fmt_load(engine["foreign_cores_best_run"]),
         fmt_load(naive["foreign_cores_best_run"]), ""),
        ("peak RSS (MiB)", f"{engine['peak_rss_mib']:.0f}", f"{naive['peak_rss_mib']:.0f}",
         f"{naive['peak_rss_mib'] / engine['peak_rss_mib']:.2f}x"),
        ("model-loaded baseline (MiB)", f"{engine['rss_baseline_mib']:.0f}", f"{naive['rss_baseline_mib']:.0f}", ""),
        ("peak - baseline (MiB)", f"{engine['peak_minus_baseline_mib']:.0f}", f"{naive['peak_minus_baseline_mib']:.0f}",
         f"{naive['peak_minus_baseline_mib'] / max(engine['peak_minus_baseline_mib'], 1e-9):.1f}x"),
        ("GMAC done (counted)", fmt_g(done["engine"]), fmt_g(done["naive"]), f"{done['naive'] / done['engine']:.2f}x"),
        ("GMAC floor", fmt_g(floor), fmt_g(floor), ""),
        ("done / floor", f"{done['engine'] / floor:.2f}x", f"{done['naive'] / floor:.2f}x", ""),
        ("the floor's products alone, best (s)", f"{floor_products_best:.2f}", "", ""),
        ("engine / floor's products, pair by pair", " ".join(f"{x:.2f}" for x in floor_pairs), "", ""),
        ("engine / floor's products, best over best", f"{floor_best_ratio:.2f}", "", ""),
        ("achieved GFLOP/s (2 FLOP/MAC)", f"{2 * done['engine'] / engine['best_s'] / 1e9:.1f}",
         f"{2 * done['naive'] / naive['best_s'] / 1e9:.1f}", ""),
        ("head calls / rows", f"{engine['counted']['head_calls']} / {engine['counted']['head_rows']}",
         f"{naive['counted']['head_calls']} / {naive['counted']['head_rows']}", ""),
        ("block calls / token rows", f"{engine['counted']['block_calls']} / {engine['counted']['block_tokens']}",
         f"{naive['counted']['block_calls']} / {naive['counted']['block_tokens']}", ""),
    ]
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'':<{width}}{'engine':>16}{'naive':>16}{'naive/engine':>15}")
    for name, a, b, c in rows:
        print(f"{name:<{width}}{a:>16}{b:>16}{c:>15}")
    for name, payload in (("engine", engine), ("naive", naive)):
        runs = ", ".join(f"{t:.2f} s ({fmt_load(x)})" for t, x in zip(payload["times_s"], payload["foreign_cores_per_run"]))
        print(f"{name} runs (other processes' cores): {runs}")
    print(f"(peak RSS: {engine['peak_method']}; ru_maxrss including model building: "
          f"engine {engine['ru_maxrss_incl_build_mib']:.0f} MiB, naive {naive['ru_maxrss_incl_build_mib']:.0f} MiB)")
    if engine.get("engine_timings"):
        parts = ", ".join(f"{k} {v:.2f}s" for k, v in engine["engine_timings"].items())
        print(f"engine timings (last run): {parts}")

    print("\nGMAC breakdown (per-token MACs from the config; elementwise ops not counted)")
    for part, value in flops["floor"].items():
        print(f"  floor   {part:<52}{fmt_g(value):>10}")
    for name, payload in (("engine", engine), ("naive", naive)):
        for part, value in payload["counted"]["macs"].items():
            print(f"  {name:<7} {part + ' (counted)':<52}{fmt_g(value):>10}")
    expected = flops["naive_expected_total"]
    print(f"  naive expected analytically: {fmt_g(expected)} GMAC (counted {fmt_g(done['naive'])})")

    print("\nper layer (means over prompts)      target prob                 skip JS (nats)")
    print(f"{'layer':>6}{'engine':>16}{'naive':>14}{'engine':>16}{'naive':>14}{'top-1 p':>10}")
    tp, jsd, top = diffs["target_prob"], diffs["js"], diffs["top1_prob"]
    for layer in range(cfg.num_layers):
        print(f"{layer:>6}{tp['engine_mean_per_layer'][layer]:>16.4e}{tp['naive_mean_per_layer'][layer]:>14.4e}"
              f"{jsd['engine_mean_per_layer'][layer]:>16.6f}{jsd['naive_mean_per_layer'][layer]:>14.6f}"
              f"{top['naive_mean_per_layer'][layer]:>10.4f}")

    contended = [
        name for name, payload in (("engine", engine), ("naive", naive))
        if not payload["best_run_uncontended"]
    ]
    if contended:
        print(f"\nWARNING: other processes used >= {cfg.idle_threshold:g} cores during the best "
              f"{' and '.join(contended)} run: the timings are contended; rerun on an idle machine "
              f"(or raise --max-runs / --max-wait-idle).")

    tol = args.tolerance
    max_abs = max(d["max_abs_diff"] for d in diffs.values())
    nan_bad = sum(d["nan_mismatch"] for d in diffs.values())
    numbers_ok = max_abs <= tol and nan_bad == 0
    speed_ok = speedup >= args.target_speedup
    memory_ok = engine["peak_rss_mib"] < naive["peak_rss_mib"]
    floor_ok = floor_ratio <= args.target_floor_ratio
    print()
    for key, d in diffs.items():
        print(f"  {key:<12} max abs diff {d['max_abs_diff']:.3e}  max rel diff {d['max_rel_diff']:.3e}  "
              f"(naive values in [{d['range'][0]:.3e}, {d['range'][1]:.3e}])")
    print()
    print(f"speedup {speedup:.1f}x (target >= {args.target_speedup:g}x): {'PASS' if speed_ok else 'FAIL'}")
    print(f"engine {floor_ratio:.2f}x the time of the floor's products alone, at this machine's GEMM throughput "
          f"(median of {len(floor_pairs)} back-to-back pairs; target <= {args.target_floor_ratio:g}x): {'PASS' if floor_ok else 'FAIL'}")
    print(f"memory engine peak {engine['peak_rss_mib']:.0f} MiB vs naive {naive['peak_rss_mib']:.0f} MiB "
          f"(above baseline: {engine['peak_minus_baseline_mib']:.0f} vs {naive['peak_minus_baseline_mib']:.0f} MiB): "
          f"{'PASS' if memory_ok else 'FAIL'}")
    print(f"max abs diff {max_abs:.2e} (target prob, JS, top-1 prob; tolerance {tol:g}): "
          f"{'PASS' if numbers_ok else 'FAIL'}")

    figures = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": machine_description(),
        "config": asdict(cfg),
        "contended": contended,
        "speedup": speedup,
        "paired_ratios": paired,
        "paired_ratio_median": paired_median,
        "rounds": rounds,
        "target_speedup": args.target_speedup,
        "speed_pass": speed_ok,
        "memory_pass": memory_ok,
        "floor_products_best_s": floor_products_best,
        "engine_over_floor_products_pairs": floor_pairs,
        "engine_over_floor_products_median": floor_ratio,
        "engine_over_floor_products_best_over_best": floor_best_ratio,
        "target_floor_ratio": args.target_floor_ratio,
        "floor_pass": floor_ok,
        "numbers_pass": numbers_ok,
        "max_abs_diff": max_abs,
        "tolerance": tol,
        "diffs": diffs,
        "flops": flops,
        "macs_done": done,
        "engine": {k: v for k, v in engine.items() if k != "arrays"},
        "naive": {k: v for k, v in naive.items() if k != "arrays"},
        "engine_gflops_per_s": 2 * done["engine"] / engine["best_s"] / 1e9,
        "naive_gflops_per_s": 2 * done["naive"] / naive["best_s"] / 1e9,
    }
    return figures, numbers_ok, speed_ok and memory_ok and floor_ok


def save_workload(cfg: BenchConfig, folder: Path) -> tuple[Path, Path]:
    """The model and prompts of ``cfg`` on disk, as a user would have them: the model folder (weights and
    a word-level tokenizer whose token ``t<i>`` is id i, so every random id is one word) and a task file
    of ``{"prompt", "target"}`` lines. Returns (model folder, task file)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model_dir, tasks = folder / "model", folder / "tasks.jsonl"
    build_model(cfg).save_pretrained(model_dir)
    vocab = {f"t{i}": i for i in range(cfg.vocab_size)}
    words = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="t0", pad_token="t0", eos_token="t2").save_pretrained(model_dir)
    ids, targets = make_prompts(cfg)
    with open(tasks, "w", encoding="utf-8") as handle:
        for row, target in zip(ids.tolist(), targets.tolist()):
            handle.write(json.dumps({"prompt": " ".join(f"t{i}" for i in row), "target": f" t{target}"}) + "\n")
    return model_dir, tasks


def whole_process(cfg: BenchConfig, peer_python: str, runs: int) -> int:
    """Time ``layertracer trace`` and the nnsight peer as whole processes, alternately; print the
    medians, their ratio and how far apart their numbers are. Returns 0, or 1 when they disagree."""
    import statistics
    import subprocess

    import numpy as np

    with tempfile.TemporaryDirectory(prefix="bench-whole-") as temp:
        folder = Path(temp)
        model_dir, tasks = save_workload(cfg, folder)
        engine_out, peer_out = folder / "engine.json", folder / "peer.json"
        env = dict(os.environ, OMP_NUM_THREADS=str(cfg.threads), TOKENIZERS_PARALLELISM="false")
        commands = {
            "layertracer trace": [sys.executable, "-m", "layertracer", "trace", "--model", str(model_dir),
                                  "--tasks", str(tasks), "--perturbation", "skip", "--batch-size", str(cfg.batch_size),
                                  "--no-similarity", "--no-position-view", "--device", "cpu", "--dtype", "float32",
                                  "--out", str(engine_out)],
            "nnsight 0.8 (tutorial way)": [peer_python, str(Path(__file__).with_name("nnsight_peer.py")), str(model_dir),
                                           str(tasks), str(peer_out), "--batch-size", str(cfg.batch_size)],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, command in commands.items():
                started = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(ROOT))
                if done.returncode != 0:
                    print(f"{name} failed:\n{done.stderr[-3000:]}")
                    return 1
                times[name].append(time.perf_counter() - started)
        engine = json.loads(engine_out.read_text())["tasks"]
        task = next(iter(engine.values()))
        peer = json.loads(peer_out.read_text())
        gap = max(float(np.max(np.abs(np.array(task["target_prob"]) - np.array(peer["target_prob"])))),
                  float(np.max(np.abs(np.array(json.loads(engine_out.read_text())["sensitivity"]["js"]) - np.array(peer["js"])))))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"whole process, {cfg.num_layers} layers, hidden {cfg.hidden_size}, vocabulary {cfg.vocab_size:,}, "
          f"{cfg.prompts} prompts x {cfg.tokens} tokens, {cfg.threads} threads, {runs} alternating runs each, "
          f"load average {load:.1f}")
    for name, values in times.items():
        print(f"  {name:28s} median {statistics.median(values):6.1f} s   (runs: {', '.join(f'{v:.1f}' for v in values)})")
    names = list(times)
    ratio = statistics.median(times[names[1]]) / statistics.median(times[names[0]])
    print(f"  the peer takes {ratio:.1f}x the time of layertracer (target: at least 8x)")
    print(f"  largest difference of target probabilities and skip JS between the two: {gap:.2e}")
    return 0 if gap < 1e-4 else 1


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 layers, 8 prompts x 16 tokens, 1 repeat (< 1 min)")
    parser.add_argument("--layers", type=int, help="number of decoder blocks (default 8; quick 4)")
    parser.add_argument("--prompts", type=int, help="number of prompts (default 32; quick 8)")
    parser.add_argument("--tokens", type=int, help="tokens per prompt (default 32; quick 16)")
    parser.add_argument("--batch-size", type=int, help="prompts per batch, both implementations (default 8)")
    parser.add_argument("--repeats", type=int, help="uncontended timed runs wanted per implementation, best kept (default 2; quick 1)")
    parser.add_argument("--threads", type=int, default=default_threads(), help="torch threads (default: all cores)")
    parser.add_argument("--vocab-size", type=int, help="vocabulary size (default 151936, Qwen's)")
    parser.add_argument("--max-runs", type=int,
                        help="runs allowed per implementation to get --repeats uncontended ones (default 4; quick 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-wait-idle", type=float, metavar="S",
                        help="before each timed run wait up to S seconds for the machine to be idle "
                             "(default 120; quick 10; 0: no wait)")
    parser.add_argument("--target-speedup", type=float, default=6.0)
    parser.add_argument("--floor-pairs", type=int,
                        help="back-to-back pairs of an engine run and the floor's products alone (default 6; quick 2)")
    parser.add_argument("--target-floor-ratio", type=float, default=1.3,
                        help="most the engine may take over the floor's products alone (default 1.3)")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="max abs diff allowed (default 1e-5)")
    parser.add_argument("--strict", action="store_true", help="exit 1 also when speed or memory FAIL")
    parser.add_argument("--json", metavar="OUT", help="write every figure to this JSON file")
    parser.add_argument("--whole-process", action="store_true",
                        help="time `layertracer trace` against the nnsight peer as whole processes")
    parser.add_argument("--peer-python", default=str(ROOT / ".venv-bench" / "bin" / "python"),
                        help="the Python with nnsight for --whole-process (default .venv-bench/bin/python)")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs of each for --whole-process")
    # internal: one implementation in this process
    parser.add_argument("--worker", choices=sorted(IMPLEMENTATIONS), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        known = {f.name for f in fields(BenchConfig)}
        cfg = BenchConfig(**{k: v for k, v in json.loads(args.config).items() if k in known})
        worker(args.worker, cfg, args.out)
        return 0

    overrides = {
        key: value
        for key, value in dict(
            num_layers=args.layers, prompts=args.prompts, tokens=args.tokens, batch_size=args.batch_size,
            repeats=args.repeats, vocab_size=args.vocab_size, max_wait_idle_s=args.max_wait_idle,
            max_runs=args.max_runs, floor_pairs=args.floor_pairs,
        ).items()
        if value is not None
    }
    overrides.update(threads=args.threads, seed=args.seed)
    cfg = BenchConfig.quick(**overrides) if args.quick else BenchConfig(**overrides)
    if args.whole_process:
        if not Path(args.peer_python).exists():
            print(f"no Python at {args.peer_python} for the nnsight peer (see the module docstring)")
            return 2
        return whole_process(cfg, args.peer_python, args.runs)
    print(f"bench_trace: {'quick' if args.quick else 'full'} configuration, {cfg.threads} threads", flush=True)
    # Naive first: its process is the long one; run one after the other, never concurrently.
    engine, naive, rounds = run_pair(cfg)
    source = engine["source"]
    print(f"engine sources as imported: sha256 {source['sha256']} ({len(source['modules'])} layertracer modules, "
          f"newest modified {source['newest_mtime']})")
    figures, numbers_ok, perf_ok = report(cfg, engine, naive, rounds, args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)
        print(f"figures written to {args.json}")
    if not numbers_ok:
        return 1
    return 1 if (args.strict and not perf_ok) else 0


if __name__ == "__main__":
    sys.exit(main())
