"""The engine's numbers against a straightforward, independent reimplementation.

The reference in this file uses nothing of the engine's recording / replay / perturbation / stats
code and none of its architecture table. It runs one prompt at a time (no batching, no padding)
through plain ``transformers`` forward passes:

- logit lens: ``output_hidden_states=True``; every block output but the last goes through our own
  final norm + head + final-logit soft-capping; the last layer is the model's real ``logits`` (in HF the
  last ``hidden_states`` entry is already normed: applying the norm again is the double-norm trap);
- sensitivity: a whole forward pass per layer with a forward hook that perturbs that block (``skip``:
  the block returns its input; ``zero-attn`` / ``zero-mlp``: the child's output is replaced by zeros),
  then the real logits at the last position and a float64 numpy Jensen-Shannon divergence.

The engine, in contrast, runs right-padded batches, records the block stack once and replays it.
Everything is parametrised over every architecture of ``tiny_models``.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch

import layertracer as lt
import tiny_models
from layertracer.freeze_plan import plan_freeze
from layertracer.recording import record_stack, replay
from layertracer.stats import ParticleRule, bootstrap_mean_ci, js_divergence, linear_cka_matrix

ARCHS = tiny_models.ARCHITECTURES
LN2 = math.log(2.0)

# ---------------------------------------------------------------------------------------------------
# The reference's own knowledge of the architectures (deliberately not the engine's table).

_LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "gemma2", "gemma3_text", "phi3", "qwen3_next")
BLOCKS = {
    **{a: "model.layers" for a in _LLAMA_LIKE},
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
    "opt": "model.decoder.layers",
    "mamba": "backbone.layers",
    "mamba2": "backbone.layers",
    "jamba": "model.layers",
    "bamba": "model.layers",
}
# Applied in order to a block output to get the head input (a None module is skipped: OPT's
# project_out only exists when word_embed_proj_dim != hidden_size).
FINAL = {
    **{a: ("model.norm",) for a in _LLAMA_LIKE},
    "gpt2": ("transformer.ln_f",),
    "gpt_neox": ("gpt_neox.final_layer_norm",),
    "opt": ("model.decoder.final_layer_norm", "model.decoder.project_out"),
    "mamba": ("backbone.norm_f",),
    "mamba2": ("backbone.norm_f",),
    "jamba": ("model.final_layernorm",),
    "bamba": ("model.final_layernorm",),
}
HEADS = ("lm_head", "embed_out")  # GPT-NeoX's head was embed_out before transformers renamed it
# HF quirk: Mamba / Mamba2 do not put the embedding output into ``hidden_states``, so there
# hidden_states[l] (not [l + 1]) is block l's output. Checked by test_reference_hidden_states_are_block_outputs.
HIDDEN_OFFSET = {"mamba": 0, "mamba2": 0}
MIXER_CHILDREN = ("self_attn", "attn", "attention", "linear_attn", "mamba", "mixer")
MLP_CHILDREN = ("mlp", "feed_forward", "fc2")  # OPT has no MLP module: fc2's output is the MLP's contribution
NO_MLP = {"mamba", "mamba2"}

# ---------------------------------------------------------------------------------------------------
# What the engine is run on.

TASKS = ("antonyms_en", "country_capital_zh", "arithmetic_en")  # three prompt lengths, en and zh
LIMIT = 3
BATCH = 4
TOP_K = 5
PERTURBATIONS = (
    "skip",
    "zero-attn",
    "zero-mlp",
    "mask:keep=0;draws=2",
    "mask:keep=1;draws=1",
    "noise:scale=0;draws=1",
)
OPTIONS = dict(batch_size=BATCH, top_k=TOP_K, bootstrap_resamples=50, position_view=False)

PROB_TOL = 1e-5
JS_TOL = 1e-5
# The tiny random models are close to uniform: target probabilities are ~1/384 and many JS values are
# 1e-7..1e-3, where an absolute 1e-5 alone would accept nearly anything (even 0). So every comparison
# is also made relative. Observed: relative error <= 1e-6 on probabilities and <= 4e-4 on JS (the latter
# only for JS ~1e-9, i.e. far inside the absolute part).
PROB_TIGHT = dict(rtol=1e-4, atol=1e-10)
JS_TIGHT = dict(rtol=2e-3, atol=2e-9)
# Probabilities within this relative distance may legitimately swap order (the engine ranks float32
# log-probabilities, resolution ~1e-7 on values ~-6).
TIE = 2e-6


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: thread start-up costs more than the maths (10x on a 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=ARCHS)
def arch(request) -> str:
    """Every architecture of tiny_models. Module-scoped, so pytest runs the tests of one architecture
    together."""
    return request.param


@pytest.fixture(scope="session")
def tiny_model():
    """arch -> a tiny random model (built once per session; tests must not modify it)."""
    models: dict[str, torch.nn.Module] = {}

    def get(arch: str) -> torch.nn.Module:
        if arch not in models:
            models[arch] = tiny_models.build_model(arch)
        return models[arch]

    return get


@pytest.fixture(scope="session")
def tasks():
    return lt.load_tasks(",".join(TASKS), limit=LIMIT)


@pytest.fixture(scope="session")
def engine_result(tiny_model, tokenizer, tasks):
    """arch -> the engine's TraceResult for every perturbation under test (one trace per arch)."""
    results: dict[str, lt.TraceResult] = {}

    def get(arch: str) -> lt.TraceResult:
        if arch not in results:
            loaded = lt.wrap_model(tiny_model(arch), tokenizer)
            results[arch] = lt.trace(
                loaded, tasks, perturbations=PERTURBATIONS, options=lt.TraceOptions(**OPTIONS)
            )
        return results[arch]

    return get


@pytest.fixture(scope="session")
def reference(tiny_model, tokenizer, tasks):
    """arch -> the reference numbers (see Reference)."""
    results: dict[str, Reference] = {}

    def get(arch: str) -> Reference:
        if arch not in results:
            results[arch] = Reference(arch, tiny_model(arch), tokenizer, tasks)
        return results[arch]

    return get


# ---------------------------------------------------------------------------------------------------
# The reference implementation.


def module_at(root: torch.nn.Module, path: str):
    for part in path.split("."):
        root = getattr(root, part, None)
        if root is None:
            return None
    return root


def softmax64(logits: torch.Tensor) -> np.ndarray:
    x = logits.detach().double().cpu().numpy()
    x = x - x.max()
    e = np.exp(x)
    return e / e.sum()


def naive_js(p: np.ndarray, q: np.ndarray) -> float:
    """0.5 KL(p||m) + 0.5 KL(q||m), m = (p + q) / 2, natural log, 0 log 0 = 0."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        keep = a > 0
        return float(np.sum(a[keep] * np.log(a[keep] / m[keep])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def encode(tokenizer, prompt: str, target: str) -> tuple[list[int], int]:
    """Prompt ids and the target's first token in context: tokenize(prompt + target), keep the tokens it
    shares with tokenize(prompt); the next token is the target."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    full_ids = tokenizer(prompt + target)["input_ids"]
    shared = 0
    while shared < min(len(prompt_ids), len(full_ids)) and prompt_ids[shared] == full_ids[shared]:
        shared += 1
    return full_ids[:shared], full_ids[shared]


def blocks_of(model, arch: str) -> torch.nn.ModuleList:
    return module_at(model, BLOCKS[arch])


def child_of(block: torch.nn.Module, names: tuple[str, ...]):
    for name in names:
        child = getattr(block, name, None)
        if isinstance(child, torch.nn.Module):
            return child
    return None


def lens_logits(model, arch: str, hidden: torch.Tensor) -> torch.Tensor:
    """A block output (..., d) through our final norm(s), the head and final-logit soft-capping."""
    for path in FINAL[arch]:
        module = module_at(model, path)
        if module is not None:
            hidden = module(hidden)
    logits = next(getattr(model, name) for name in HEADS if hasattr(model, name))(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def forward_last_logits(model, ids: list[int], module=None, hook=None, with_kwargs=False) -> torch.Tensor:
    """The real output logits at the last position, optionally with one forward hook installed."""
    handle = module.register_forward_hook(hook, with_kwargs=with_kwargs) if module is not None else None
    try:
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
    finally:
        if handle is not None:
            handle.remove()


def skip_hook(module, args, kwargs, output):
    """The block returns its input hidden state (in the structure it returns its output)."""
    hidden_in = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    if isinstance(output, torch.Tensor):
        return hidden_in
    return (hidden_in,) + tuple(output[1:])


def zero_hook(module, args, output):
    if isinstance(output, torch.Tensor):
        return torch.zeros_like(output)
    return (torch.zeros_like(output[0]),) + tuple(output[1:])


class Reference:
    """Per prompt (task order, item order): the lens at every layer and JS per perturbation per layer.

    prob, rank, entropy: (N, L); dists: (N, L, V) float64 lens distributions; final: (N, V) softmax of
    the real logits; js[kind]: (N, L) with NaN where the block has no such child.
    """

    def __init__(self, arch: str, model, tokenizer, tasks) -> None:
        self.arch = arch
        blocks = blocks_of(model, arch)
        n_layers = len(blocks)
        assert n_layers == model.config.num_hidden_layers
        offset = HIDDEN_OFFSET.get(arch, 1)
        self.index: list[tuple[str, int]] = []
        self.ids: list[list[int]] = []
        self.targets: list[int] = []
        dists, finals, baselines = [], [], []
        js = {kind: [] for kind in ("skip", "zero-attn", "zero-mlp")}
        for task in tasks:
            for i, item in enumerate(task.items):
                ids, target = encode(tokenizer, item.prompt, item.target)
                self.index.append((task.name, i))
                self.ids.append(ids)
                self.targets.append(target)
                embedded = {}

                def keep_input(module, args, kwargs):
                    embedded["h"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

                grab = blocks[0].register_forward_pre_hook(keep_input, with_kwargs=True)
                with torch.no_grad():
                    out = model(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False)
                    grab.remove()
                    baselines.append(
                        softmax64(lens_logits(model, arch, embedded["h"][0, -1]))[target]
                    )
                    assert len(out.hidden_states) == n_layers + 1
                    per_layer = [
                        softmax64(lens_logits(model, arch, out.hidden_states[layer + offset][0, -1]))
                        for layer in range(n_layers - 1)
                    ]
                clean = out.logits[0, -1]
                per_layer.append(softmax64(clean))  # the real output, never re-normed
                dists.append(per_layer)
                finals.append(softmax64(clean))
                p_clean = finals[-1]
                rows = {kind: [] for kind in js}
                for layer, block in enumerate(blocks):
                    rows["skip"].append(
                        naive_js(p_clean, softmax64(forward_last_logits(model, ids, block, skip_hook, True)))
                    )
                    for kind, names in (("zero-attn", MIXER_CHILDREN), ("zero-mlp", MLP_CHILDREN)):
                        child = child_of(block, names)
                        if child is None:
                            rows[kind].append(np.nan)
                        else:
                            logits = forward_last_logits(model, ids, child, zero_hook)
                            rows[kind].append(naive_js(p_clean, softmax64(logits)))
                for kind in js:
                    js[kind].append(rows[kind])
        self.dists = np.array(dists)  # (N, L, V)
        self.final = np.array(finals)  # (N, V)
        n = len(self.targets)
        target_p = self.dists[np.arange(n), :, self.targets]  # (N, L)
        self.prob = target_p
        self.baseline = np.array(baselines)  # (N,) the lens on the embedding output (block 0's input)
        band = TIE * target_p[..., None]
        self.rank_low = (self.dists > target_p[..., None] + band).sum(-1)  # tie-tolerant rank bounds
        self.rank_high = (self.dists > target_p[..., None] - band).sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.entropy = -np.where(self.dists > 0, self.dists * np.log(self.dists), 0.0).sum(-1)
        self.js = {kind: np.array(rows, dtype=np.float64) for kind, rows in js.items()}


def engine_rows(result: lt.TraceResult, field: str) -> np.ndarray:
    """A per-task [P][L...] field stacked over tasks in prompt_index order."""
    return np.concatenate([np.array(getattr(result.tasks[name], field), dtype=object) for name in result.tasks])


def engine_js(result: lt.TraceResult, name: str) -> np.ndarray:
    return np.array(
        [[np.nan if v is None else v for v in row] for row in result.sensitivities[name].js], dtype=np.float64
    )


def assert_argmax_matches(engine_layer, reference_mean: np.ndarray) -> None:
    """The engine's argmax is the reference's argmax, up to values within tolerance of the maximum."""
    best = np.nanmax(reference_mean)
    slack = JS_TIGHT["atol"] + JS_TIGHT["rtol"] * best
    near = {int(i) for i in np.flatnonzero(reference_mean >= best - slack)}
    assert engine_layer in near, (engine_layer, reference_mean)


# ---------------------------------------------------------------------------------------------------
# 0. The reference itself: its hidden-state indexing and final-norm table.


def test_reference_hidden_states_are_block_outputs(arch, tiny_model, tokenizer, tasks):
    """hidden_states[l + offset] is block l's output for l < L-1 (checked with plain forward hooks), the
    last entry is already normed, and our final modules + head reproduce the real logits."""
    model = tiny_model(arch)
    blocks = blocks_of(model, arch)
    ids, _ = encode(tokenizer, tasks[0].items[0].prompt, tasks[0].items[0].target)
    outputs: dict[int, torch.Tensor] = {}

    def grab(index):
        def hook(module, args, output):
            outputs[index] = output if isinstance(output, torch.Tensor) else output[0]

        return hook

    handles = [block.register_forward_hook(grab(i)) for i, block in enumerate(blocks)]
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    offset = HIDDEN_OFFSET.get(arch, 1)
    n_layers = len(blocks)
    for layer in range(n_layers - 1):
        torch.testing.assert_close(out.hidden_states[layer + offset], outputs[layer], rtol=0, atol=0)
    with torch.no_grad():
        final_norm_input = outputs[n_layers - 1]
        torch.testing.assert_close(
            lens_logits(model, arch, final_norm_input)[0, -1], out.logits[0, -1], rtol=1e-5, atol=1e-5
        )
        # The last hidden_states entry is normed already: it is NOT the last block's raw output.
        assert not torch.allclose(out.hidden_states[-1], final_norm_input, atol=1e-3)
    for block in blocks:
        assert child_of(block, MIXER_CHILDREN) is not None
        assert (child_of(block, MLP_CHILDREN) is None) == (arch in NO_MLP)


# ---------------------------------------------------------------------------------------------------
# 1. Logit lens.


def test_batches_mix_prompt_lengths(tokenizer, tasks):
    """The engine's batches (longest first, BATCH per batch) hold prompts of different lengths, so the
    comparisons below exercise right-padding."""
    lengths = sorted((len(encode(tokenizer, item.prompt, item.target)[0]) for t in tasks for item in t.items), reverse=True)
    batches = [lengths[s : s + BATCH] for s in range(0, len(lengths), BATCH)]
    assert len(batches) >= 2
    assert any(len(set(batch)) > 1 for batch in batches if len(batch) > 1), lengths


def test_logit_lens_matches_reference(arch, engine_result, reference, tokenizer):
    result, ref = engine_result(arch), reference(arch)
    assert result.prompt_index == ref.index
    assert result.num_layers == ref.dists.shape[1]
    target_ids = np.concatenate([result.tasks[name].target_token_ids for name in result.tasks])
    np.testing.assert_array_equal(target_ids, ref.targets)

    prob = engine_rows(result, "target_prob").astype(np.float64)
    np.testing.assert_allclose(prob, ref.prob, rtol=0, atol=PROB_TOL)
    np.testing.assert_allclose(prob, ref.prob, **PROB_TIGHT)
    entropy = engine_rows(result, "entropy").astype(np.float64)
    np.testing.assert_allclose(entropy, ref.entropy, rtol=0, atol=PROB_TOL)
    # KL(output || lens at layer l) in nats, from the reference's float64 distributions
    final = ref.final[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        ref_kl = np.where(final > 0, final * (np.log(np.where(final > 0, final, 1.0)) - np.log(ref.dists)), 0.0).sum(-1)
    kl = engine_rows(result, "kl_to_final").astype(np.float64)
    np.testing.assert_allclose(kl, ref_kl, rtol=0, atol=PROB_TOL)
    np.testing.assert_allclose(kl[:, -1], 0.0, atol=PROB_TOL)
    rank = engine_rows(result, "target_rank").astype(np.int64)
    assert np.all((ref.rank_low <= rank) & (rank <= ref.rank_high)), (rank, ref.rank_low, ref.rank_high)

    top_probs = engine_rows(result, "top_probs").astype(np.float64)  # (N, L, k)
    top_tokens = engine_rows(result, "top_tokens")
    n, n_layers, k = top_probs.shape
    assert k == TOP_K
    order = np.argsort(-ref.dists, axis=-1, kind="stable")[..., :k]
    ref_top = np.take_along_axis(ref.dists, order, axis=-1)
    np.testing.assert_allclose(top_probs, ref_top, rtol=0, atol=PROB_TOL)
    np.testing.assert_allclose(top_probs, ref_top, **PROB_TIGHT)
    for row in range(n):
        for layer in range(n_layers):
            p = ref.dists[row, layer]
            for j in range(k):
                # The engine's j-th token must be one whose reference probability ties the j-th largest.
                candidates = np.flatnonzero(np.abs(p - ref_top[row, layer, j]) <= TIE * ref_top[row, layer, j])
                texts = {tokenizer.decode([int(c)]) for c in candidates}
                shown = top_tokens[row, layer][j]
                if shown not in texts:
                    # bytes of a partial character (where decode says "\ufffd") are shown as <0xNN>...
                    as_decode = re.sub(r"(<0x[0-9A-F]{2}>)+", "\ufffd", shown)
                    assert as_decode in {re.sub("\ufffd+", "\ufffd", t) for t in texts}, (row, layer, j, shown, texts)

    baseline = np.concatenate([result.tasks[name].baseline_prob for name in result.tasks])
    np.testing.assert_allclose(baseline, ref.baseline, rtol=0, atol=PROB_TOL)
    np.testing.assert_allclose(baseline, ref.baseline, **PROB_TIGHT)

    # The task's mean curve is the mean of the per-prompt curves.
    for name, task_trace in result.tasks.items():
        rows = [i for i, (task, _) in enumerate(ref.index) if task == name]
        mean_curve = ref.prob[rows].mean(axis=0)
        np.testing.assert_allclose(task_trace.mean_target_prob, mean_curve, rtol=0, atol=PROB_TOL)


def test_last_layer_is_the_real_output(arch, engine_result, reference):
    """The lens at the last layer is the model's own output distribution (no second final norm)."""
    result, ref = engine_result(arch), reference(arch)
    n = len(ref.targets)
    prob = engine_rows(result, "target_prob").astype(np.float64)[:, -1]
    np.testing.assert_allclose(prob, ref.final[np.arange(n), ref.targets], rtol=0, atol=PROB_TOL)
    np.testing.assert_allclose(prob, ref.final[np.arange(n), ref.targets], **PROB_TIGHT)
    top = engine_rows(result, "top_probs").astype(np.float64)[:, -1]
    np.testing.assert_allclose(top, -np.sort(-ref.final, axis=-1)[:, :TOP_K], rtol=0, atol=PROB_TOL)
    entropy = engine_rows(result, "entropy").astype(np.float64)[:, -1]
    ref_entropy = -np.where(ref.final > 0, ref.final * np.log(np.where(ref.final > 0, ref.final, 1.0)), 0.0).sum(-1)
    np.testing.assert_allclose(entropy, ref_entropy, rtol=0, atol=PROB_TOL)


# ---------------------------------------------------------------------------------------------------
# 2./3. Sensitivity: skip, zero-attn, zero-mlp.


@pytest.mark.parametrize("kind", ["skip", "zero-attn", "zero-mlp"])
def test_sensitivity_matches_reference(arch, kind, engine_result, reference):
    result, ref = engine_result(arch), reference(arch)
    sens = result.sensitivities[kind]
    js = engine_js(result, kind)
    expected = ref.js[kind]
    assert js.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(js), np.isnan(expected))
    np.testing.assert_allclose(js, expected, rtol=0, atol=JS_TOL, equal_nan=True)
    np.testing.assert_allclose(js, expected, equal_nan=True, **JS_TIGHT)
    assert np.nanmin(js, initial=0.0) >= 0.0 and np.nanmax(js, initial=0.0) <= LN2

    mean = np.array([np.nan if v is None else v for v in sens.mean_js], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (zero-mlp on Mamba)
        expected_mean = np.nanmean(expected, axis=0)
    np.testing.assert_allclose(mean, expected_mean, rtol=0, atol=JS_TOL, equal_nan=True)
    np.testing.assert_allclose(mean, expected_mean, equal_nan=True, **JS_TIGHT)
    for name, by_task in sens.mean_js_by_task.items():
        rows = [i for i, (task, _) in enumerate(ref.index) if task == name]
        got = np.array([np.nan if v is None else v for v in by_task], dtype=np.float64)
        np.testing.assert_allclose(got, expected[rows].mean(axis=0), equal_nan=True, **JS_TIGHT)

    if np.all(np.isnan(expected_mean)):
        assert sens.vulnerable_layer is None
    else:
        assert_argmax_matches(sens.vulnerable_layer, expected_mean)
    if kind == "skip":
        assert result.sensitivity is sens and result.vulnerable_layer == sens.vulnerable_layer


def test_zero_mlp_not_applicable_without_mlp(arch, engine_result):
    """Blocks without an MLP (Mamba's) get no zero-mlp value: NaN in the result, null in the JSON."""
    result = engine_result(arch)
    sens = result.sensitivities["zero-mlp"]
    js = engine_js(result, "zero-mlp")
    if arch in NO_MLP:
        assert np.all(np.isnan(js))
        assert sens.vulnerable_layer is None
        for values in (sens.mean_js, sens.ci_low, sens.ci_high):
            assert all(v is None or math.isnan(v) for v in values)
        data = result.to_dict()["sensitivities"]["zero-mlp"]
        assert all(v is None for row in data["js"] for v in row)
        assert all(v is None for v in data["mean_js"])
    else:
        assert np.all(np.isfinite(js))
        assert np.all(np.isfinite(sens.ci_low)) and np.all(np.isfinite(sens.ci_high))


# ---------------------------------------------------------------------------------------------------
# 4. mask / noise identities.


def test_mask_and_noise_identities(arch, engine_result):
    result = engine_result(arch)
    skip = engine_js(result, "skip")
    np.testing.assert_allclose(engine_js(result, "mask(keep=0)"), skip, rtol=0, atol=1e-9)
    np.testing.assert_allclose(engine_js(result, "mask(keep=1)"), 0.0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(engine_js(result, "noise(scale=0)"), 0.0, rtol=0, atol=1e-9)
    assert result.sensitivities["mask(keep=0)"].params == {"kind": "mask", "draws": 2, "seed": 0, "keep": 0.0}


def test_noise_does_not_depend_on_batching(arch, tiny_model, tokenizer, tasks):
    """Noise is seeded per (seed, layer, draw, prompt): batch size 1 and 4 give the same numbers."""
    loaded = lt.wrap_model(tiny_model(arch), tokenizer)
    subset = [lt.Task(name=t.name, items=t.items[:2], language=t.language) for t in tasks]
    runs = [
        lt.trace(
            loaded,
            subset,
            perturbations=["noise:scale=0.5;draws=2"],
            options=lt.TraceOptions(
                batch_size=size, bootstrap_resamples=10, similarity=False, position_view=False, seed=3
            ),
        )
        for size in (1, 4)
    ]
    one, four = (engine_js(r, "noise(scale=0.5)") for r in runs)
    assert np.all(one > 0)
    np.testing.assert_allclose(one, four, rtol=0, atol=1e-6)
    np.testing.assert_allclose(one, four, **JS_TIGHT)
    np.testing.assert_allclose(
        engine_rows(runs[0], "target_prob").astype(float), engine_rows(runs[1], "target_prob").astype(float),
        rtol=0, atol=1e-6,
    )


def test_noise_does_not_depend_on_batching_for_any_hidden_size(tokenizer):
    """The same contract with a hidden size of 24 (T * 24 is a multiple of 16 only for even T)."""
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=tiny_models.VOCAB, hidden_size=24, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0,
    )
    loaded = lt.wrap_model(transformers.LlamaForCausalLM(config).eval(), tokenizer)
    prompts = [" ".join(["one"] * k) for k in range(2, 7)] + [str(10**k) for k in range(1, 7)]
    items = [lt.TaskItem(prompt=prompt, target=" two") for prompt in prompts]
    task = lt.Task(name="count", items=items, language="en")
    lengths = [len(encode(tokenizer, i.prompt, i.target)[0]) for i in items]
    # precondition: a prompt of odd length shorter than the batch (its answer row is a tail row alone only)
    assert any(n % 2 and n < max(lengths) for n in lengths), lengths
    runs = [
        engine_js(
            lt.trace(
                loaded, [task], perturbations=["noise:scale=0.5;draws=1"],
                options=lt.TraceOptions(batch_size=size, bootstrap_resamples=10, similarity=False, position_view=False),
            ),
            "noise(scale=0.5)",
        )
        for size in (1, len(items))
    ]
    np.testing.assert_allclose(runs[0], runs[1], **JS_TIGHT)


# ---------------------------------------------------------------------------------------------------
# 6. Replay identity.


def test_replay_reproduces_the_recording(arch, tiny_model, tokenizer, tasks):
    model = tiny_model(arch)
    adapter = lt.resolve_adapter(model)
    prompts = [encode(tokenizer, t.items[0].prompt, t.items[0].target)[0] for t in tasks[:2]]
    length = max(map(len, prompts))
    ids = torch.full((len(prompts), length), 0, dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, : len(p)] = torch.tensor(p)
    with torch.inference_mode():
        rec = record_stack(model, adapter, ids)
        assert len(rec.outputs) == adapter.num_layers
        for layer in range(adapter.num_layers):
            again = replay(adapter, rec, layer + 1, rec.outputs[layer])
            torch.testing.assert_close(again, rec.outputs[-1], rtol=0, atol=1e-6)
            # and replaying block `layer` itself from its recorded input gives its recorded output
            again = replay(adapter, rec, layer, rec.inputs[layer])
            torch.testing.assert_close(again, rec.outputs[-1], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# 5. stats against naive numpy.


def _random_dists(rng, rows: int, vocab: int, zeros: float) -> np.ndarray:
    x = rng.gamma(0.3, size=(rows, vocab))
    x[rng.random((rows, vocab)) < zeros] = 0.0
    x[:, 0] += 1e-3  # no all-zero row
    return x / x.sum(-1, keepdims=True)


def test_js_divergence_against_numpy():
    rng = np.random.default_rng(0)
    p = _random_dists(rng, 64, 50, zeros=0.3)
    q = _random_dists(rng, 64, 50, zeros=0.3)
    # hand-made rows: identical, disjoint supports, one-hot vs uniform
    p[0], q[0] = p[1], p[1]
    p[2], q[2] = np.eye(50)[3], np.eye(50)[7]
    p[3], q[3] = np.eye(50)[0], np.full(50, 1 / 50)
    with np.errstate(divide="ignore"):
        log_p, log_q = torch.from_numpy(np.log(p)), torch.from_numpy(np.log(q))
    got = js_divergence(log_p, log_q).numpy()
    expected = np.array([naive_js(a, b) for a, b in zip(p, q)])
    assert got.shape == (64,)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert got[0] == pytest.approx(0.0, abs=1e-12)
    assert got[2] == pytest.approx(LN2, abs=1e-12)
    assert np.all((got >= 0) & (got <= LN2))
    np.testing.assert_allclose(js_divergence(log_q, log_p).numpy(), got, rtol=0, atol=1e-14)
    # float32 log-probabilities (what the engine passes) are computed in float64 all the same
    got32 = js_divergence(log_p.float(), log_q.float()).numpy()
    assert got32.dtype == np.float64
    np.testing.assert_allclose(got32, expected, rtol=0, atol=1e-6)


def _naive_cka(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def test_linear_cka_against_feature_space_formula():
    rng = np.random.default_rng(1)
    n, d = 20, 6
    base = rng.normal(size=(n, d))
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    layers = [
        base,
        base @ q,  # rotated
        3.5 * base + 2.0,  # scaled and shifted
        base + 0.5 * rng.normal(size=(n, d)),
        rng.normal(size=(n, d)),
        np.ones((n, d)),  # constant: CKA undefined
    ]
    cka = linear_cka_matrix(torch.from_numpy(np.stack(layers)))
    assert cka.shape == (6, 6)
    for i in range(5):
        for j in range(5):
            assert cka[i, j] == pytest.approx(_naive_cka(layers[i], layers[j]), abs=1e-10)
    np.testing.assert_allclose(np.diag(cka)[:5], 1.0, atol=1e-12)
    np.testing.assert_allclose(cka[:5, :5], cka[:5, :5].T, atol=1e-12)
    assert cka[0, 1] == pytest.approx(1.0, abs=1e-10) and cka[0, 2] == pytest.approx(1.0, abs=1e-10)
    # invariance: rotating or isotropically scaling one layer leaves its row unchanged
    for transform in (lambda a: a @ q, lambda a: 0.01 * a):
        moved = linear_cka_matrix(torch.from_numpy(np.stack([transform(layers[3]), layers[4], layers[0]])))
        assert moved[0, 1] == pytest.approx(cka[3, 4], abs=1e-10)
        assert moved[0, 2] == pytest.approx(cka[3, 0], abs=1e-10)
    assert np.all(np.isnan(cka[5])) and np.all(np.isnan(cka[:, 5]))


def test_bootstrap_mean_ci():
    rng = np.random.default_rng(2)
    small = rng.exponential(size=(12, 3))
    big = rng.exponential(size=(1200, 3))
    low_s, high_s = bootstrap_mean_ci(small, resamples=400, seed=0)
    low_b, high_b = bootstrap_mean_ci(big, resamples=400, seed=0)
    for values, low, high in ((small, low_s, high_s), (big, low_b, high_b)):
        assert low.shape == high.shape == (3,)
        assert np.all(low <= values.mean(0)) and np.all(values.mean(0) <= high)
    assert np.all(high_b - low_b < 0.5 * (high_s - low_s))
    # deterministic per seed; a wider level gives a wider interval; NaN columns stay NaN; constant data
    again = bootstrap_mean_ci(small, resamples=400, seed=0)
    np.testing.assert_array_equal(again[0], low_s)
    low_99, high_99 = bootstrap_mean_ci(small, resamples=400, level=0.99, seed=0)
    assert np.all(low_99 <= low_s) and np.all(high_99 >= high_s)
    with_nan = np.column_stack([small[:, 0], np.full(12, np.nan)])
    low, high = bootstrap_mean_ci(with_nan, resamples=50)
    assert np.isfinite(low[0]) and np.isnan(low[1]) and np.isnan(high[1])
    low, high = bootstrap_mean_ci(np.full((5, 2), 0.25), resamples=50)
    np.testing.assert_array_equal(low, 0.25)
    np.testing.assert_array_equal(high, 0.25)


@pytest.mark.parametrize(
    "curve, delta, floor, expected",
    [
        ([0.05, 0.3, 0.9], 0.1, 0.1, 1),
        ([0.5, 0.9], 0.5, 0.5, 0),  # p[-1] = 0: a high first layer is the particle; equality counts
        ([0.25, 0.5, 0.75], 0.25, 0.25, 0),
        ([0.0, 0.5, 0.2, 0.9], 0.5, 0.5, 1),
        ([0.01, 0.09, 0.5], 0.05, 0.1, 2),  # layer 1 rises by delta but stays under the floor
        ([0.4, 0.0, 0.5], 0.45, 0.45, 2),  # compared with the previous layer, not the running maximum
        ([0.05, 0.1, 0.15, 0.2], 0.1, 0.1, None),  # gradual: never a jump of delta
        ([0.0, 0.0, 0.0], 0.1, 0.1, None),
        ([], 0.1, 0.1, None),
        ([0.2, 0.1, 0.35], 0.2, 0.3, 2),
    ],
)
def test_particle_rule(curve, delta, floor, expected):
    rule = ParticleRule(delta=delta, floor=floor)
    assert rule.find(curve) == expected
    assert rule.find(np.array(curve, dtype=np.float64)) == expected

    def naive(p):
        for layer in range(len(p)):
            before = p[layer - 1] if layer > 0 else 0.0
            if p[layer] - before >= delta and p[layer] >= floor:
                return layer
        return None

    assert naive(curve) == expected


# ---------------------------------------------------------------------------------------------------
# 7. Freeze plan.


def _check_partition(plan, n_layers: int) -> None:
    assert set(plan.train_layers).isdisjoint(plan.freeze_layers)
    assert sorted(plan.train_layers + plan.freeze_layers) == list(range(n_layers))
    assert plan.train_layers == sorted(plan.train_layers) and plan.freeze_layers == sorted(plan.freeze_layers)


def _ranges(layers) -> str:
    parts, start = [], None
    for i, layer in enumerate(layers):
        if start is None:
            start = layer
        if i + 1 == len(layers) or layers[i + 1] != layer + 1:
            parts.append(str(start) if start == layer else f"{start}-{layer}")
            start = None
    return ",".join(parts)


def test_freeze_plan_earliest_particle_and_shallow_vulnerable_layer():
    mean_js = [0.1, 0.6, 0.2, 0.3, 0.1, None, float("nan"), 0.05]
    plan = plan_freeze(8, {"a": 5, "b": 3, "c": None}, mean_js, boundary="min")
    assert plan.boundary == 3
    assert plan.freeze_layers == [1, 3, 4, 5, 6, 7]
    assert plan.train_layers == [0, 2]
    assert plan.train_ranges == "0,2" and plan.freeze_ranges == "1,3-7"
    assert plan.evidence["earliest_particle"] == 3
    assert plan.evidence["vulnerable_layer"] == 1 and plan.evidence["vulnerable_mean_js"] == 0.6
    assert plan.evidence["fallback"] is False
    _check_partition(plan, 8)
    # without protection the vulnerable layer is trained
    plan = plan_freeze(8, {"a": 5, "b": 3}, mean_js, protect_vulnerable=False, boundary="min")
    assert plan.train_layers == [0, 1, 2] and plan.freeze_ranges == "3-7"


def test_freeze_plan_median_boundary():
    """The default boundary is the lower median of the task particles."""
    particles = {"a": 7, "b": 1, "c": 4, "d": None, "e": 3, "f": 0}
    plan = plan_freeze(8, particles, [0.6, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert plan.boundary == 3  # sorted 0, 1, 3, 4, 7 -> 3
    assert plan.train_layers == [1, 2] and plan.freeze_ranges == "0,3-7"
    assert plan.evidence["earliest_particle"] == 0 and plan.parameters["boundary"] == "median"
    assert plan_freeze(8, {"a": 2, "b": 6}, [0.1] * 8).boundary == 2  # lower median of an even count
    with pytest.raises(ValueError):
        plan_freeze(8, particles, [], boundary="mean")


def test_freeze_plan_vulnerable_layer_already_deep():
    plan = plan_freeze(6, {"a": 2}, [0.1, 0.1, 0.2, 0.3, 0.9, 0.4])
    assert plan.boundary == 2 and plan.train_layers == [0, 1] and plan.freeze_ranges == "2-5"
    assert plan.evidence["vulnerable_layer"] == 4


def test_freeze_plan_fallback_to_half_depth():
    plan = plan_freeze(8, {"a": None, "b": None}, [0.1, 0.1, 0.1, 0.1, 0.2, 0.1, 0.7, 0.1])
    assert plan.boundary == 4 and plan.evidence["fallback"] is True
    assert plan.evidence["earliest_particle"] is None
    assert plan.train_ranges == "0-3" and plan.freeze_ranges == "4-7"
    assert any("half depth" in reason for reason in plan.reasons)
    plan = plan_freeze(7, {}, [])
    assert plan.boundary == 3 and plan.train_ranges == "0-2" and plan.evidence["vulnerable_layer"] is None


def test_freeze_plan_keeps_trainable_layers():
    plan = plan_freeze(6, {"a": 0}, [0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert plan.boundary == 1 and plan.train_layers == [0]  # the only shallow layer stays trainable
    plan = plan_freeze(6, {"a": 0}, [0.1] * 6, min_train=3)
    assert plan.boundary == 3 and plan.train_ranges == "0-2"
    plan = plan_freeze(4, {"a": 1}, [0.1] * 4, min_train=10)
    assert plan.boundary == 3 and plan.train_layers == [0, 1, 2]
    # a shallow vulnerable layer is not frozen when that would leave fewer than min_train layers
    plan = plan_freeze(6, {"a": 2}, [0.9, 0.1, 0.1, 0.1, 0.1, 0.1], min_train=2)
    assert plan.boundary == 2 and plan.train_layers == [0, 1] and plan.evidence["vulnerable_layer"] == 0
    plan = plan_freeze(6, {"a": 3}, [0.9, 0.1, 0.1, 0.1, 0.1, 0.1], min_train=2)
    assert plan.train_layers == [1, 2] and plan.freeze_ranges == "0,3-5"


def test_freeze_plan_is_a_partition_for_random_inputs():
    rng = np.random.default_rng(5)
    for _ in range(200):
        n_layers = int(rng.integers(2, 40))
        particles = {
            f"t{i}": (None if rng.random() < 0.3 else int(rng.integers(0, n_layers))) for i in range(int(rng.integers(0, 4)))
        }
        mean_js = [float(v) for v in rng.random(n_layers)]
        min_train = int(rng.integers(1, 5))
        rule = "min" if rng.random() < 0.5 else "median"
        plan = plan_freeze(n_layers, particles, mean_js, min_train=min_train, boundary=rule)
        _check_partition(plan, n_layers)
        found = sorted(p for p in particles.values() if p is not None)
        chosen = (found[0] if rule == "min" else found[(len(found) - 1) // 2]) if found else n_layers // 2
        expected_boundary = max(chosen, min(min_train, n_layers - 1))
        assert plan.boundary == expected_boundary
        assert set(range(plan.boundary, n_layers)) <= set(plan.freeze_layers)
        vulnerable = int(np.argmax(mean_js))
        extra = set(plan.freeze_layers) - set(range(plan.boundary, n_layers))
        floor = min(min_train, n_layers - 1)
        # frozen too when shallow, unless that would leave fewer than min_train trainable layers
        assert extra == ({vulnerable} if vulnerable < plan.boundary and plan.boundary - 1 >= floor else set())
        assert plan.train_ranges == _ranges(plan.train_layers)
        assert plan.freeze_ranges == _ranges(plan.freeze_layers)
        assert len(plan.train_layers) >= 1


@pytest.mark.parametrize("arch", ["llama", "mamba"])
def test_trace_freeze_plan_follows_its_evidence(arch, engine_result, reference):
    """The trace's plan is plan_freeze of the reference particles (documented rule) and skip mean JS."""
    result, ref = engine_result(arch), reference(arch)
    rule = ParticleRule(delta=result.options["particle_delta"], floor=result.options["particle_floor"])
    particles = {}
    for name in result.tasks:
        rows = [i for i, (task, _) in enumerate(ref.index) if task == name]
        particles[name] = rule.find(ref.prob[rows].mean(axis=0), ref.baseline[rows].mean())
        assert result.tasks[name].task_particle == particles[name]
    expected = plan_freeze(result.num_layers, particles, list(np.nanmean(ref.js["skip"], axis=0)))
    assert result.freeze_plan.boundary == expected.boundary
    assert result.freeze_plan.train_layers == expected.train_layers
    _check_partition(result.freeze_plan, result.num_layers)


def test_bootstrap_matches_the_plain_gather_and_does_not_depend_on_chunking(monkeypatch):
    """Against the straightforward way (all resample indices at once, gather, mean): the same
    intervals, also when the engine draws its resamples in chunks of a few rows."""
    from layertracer import stats

    rng = np.random.default_rng(5)
    values = rng.exponential(size=(37, 4))
    values[:, 2] = np.nan

    def plain(vals, resamples, level, seed):
        idx = np.random.default_rng(seed).integers(0, len(vals), size=(resamples, len(vals)))
        means = vals[idx].mean(axis=1)
        alpha = (1 - level) / 2
        return np.quantile(means, alpha, axis=0), np.quantile(means, 1 - alpha, axis=0)

    want = plain(values, 300, 0.9, 4)
    got = bootstrap_mean_ci(values, resamples=300, level=0.9, seed=4)
    monkeypatch.setattr(stats, "BOOTSTRAP_CHUNK_ELEMENTS", 37 * 7)  # 7 resamples per chunk
    chunked = bootstrap_mean_ci(values, resamples=300, level=0.9, seed=4)
    for result in (got, chunked):
        np.testing.assert_allclose(result[0], want[0], rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(result[1], want[1], rtol=1e-12, equal_nan=True)
