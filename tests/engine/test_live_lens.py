"""The live logit lens of a typed prompt: the engine's own trace position view, readable tokens, limits."""

import numpy as np
import pytest
import torch

import layertracer as lt
import tiny_models
from layertracer.errors import PromptError
from layertracer.live_lens import live_lens
from layertracer.models import wrap_model
from layertracer.spec.jobs import LENS_MAX_PROMPT_CHARS, LENS_MAX_TOKENS

OPTIONS = dict(bootstrap_resamples=20, similarity=False)


@pytest.fixture(scope="module")
def loaded(tokenizer):
    return wrap_model(tiny_models.build_model("qwen3"), tokenizer, source="qwen3")


@pytest.mark.parametrize("task_name, index", [("arithmetic_zh", 2), ("antonyms_en", 1)])
def test_the_live_lens_of_a_traced_prompt_is_that_traces_position_view(loaded, task_name, index):
    result = lt.trace(loaded, lt.load_tasks("antonyms_en,arithmetic_zh", limit=4), perturbations=[],
                      options=lt.TraceOptions(position_task=task_name, position_prompt=index, **OPTIONS))
    view, task = result.position_view, result.tasks[task_name]
    lens = live_lens(loaded, task.prompts[index], task.targets[index])
    assert lens["tokens"] == view.tokens
    assert lens["target_token"] == view.target_token == task.target_tokens[index]
    assert lens["top1_tokens"] == view.top1_tokens
    np.testing.assert_array_equal(lens["target_prob"], view.target_prob)
    np.testing.assert_array_equal(lens["top1_probs"], view.top1_probs)
    assert lens["num_layers"] == result.num_layers == len(lens["top1_tokens"])
    assert lens["model"]["fingerprint"] == result.model["fingerprint"]


def test_without_a_target_the_top1_lens_is_the_same_and_no_target_is_scored(loaded):
    prompt = lt.load_tasks("arithmetic_zh", limit=1)[0].items[0].prompt
    with_target = live_lens(loaded, prompt, "三")
    bare = live_lens(loaded, prompt, "   ")
    assert bare["target"] is None and bare["target_prob"] is None and bare["target_token"] is None
    assert bare["tokens"] == with_target["tokens"] and bare["top1_tokens"] == with_target["top1_tokens"]
    np.testing.assert_array_equal(bare["top1_probs"], with_target["top1_probs"])


def test_the_last_layers_top1_is_the_models_own_next_token_prediction(loaded, tokenizer):
    """Independent of the tracer: the model's logits at every position, argmax and softmax."""
    prompt = "hot -> cold\nbig ->"
    lens = live_lens(loaded, prompt)
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    with torch.inference_mode():
        probs = torch.softmax(loaded.model(ids).logits[0].float(), dim=-1)
    values, indices = probs.max(dim=-1)
    np.testing.assert_allclose(lens["top1_probs"][-1], values.double().numpy(), rtol=1e-4, atol=1e-6)
    from layertracer.tokens import readable_token
    assert lens["top1_tokens"][-1] == [readable_token(tokenizer, int(i)) for i in indices]


def test_chinese_reads_as_chinese(loaded):
    lens = live_lens(loaded, "三加四等于", "七")
    assert "".join(lens["tokens"]).replace(" ", "") .startswith("三加四")
    cells = [t for row in lens["top1_tokens"] for t in row] + lens["tokens"] + [lens["target_token"]]
    assert not any("\ufffd" in t for t in cells)


@pytest.mark.parametrize("prompt, target, message", [
    ("", None, "the prompt is empty"),
    ("  \n", None, "the prompt is empty"),
    ("x" * (LENS_MAX_PROMPT_CHARS + 1), None, f"at most {LENS_MAX_PROMPT_CHARS}"),
    ("big " * (LENS_MAX_TOKENS + 10), None, f"at most {LENS_MAX_TOKENS}"),
])
def test_bad_prompts_give_one_line(loaded, prompt, target, message):
    with pytest.raises(PromptError, match=message) as info:
        live_lens(loaded, prompt, target)
    assert "\n" not in str(info.value)


def _random_translators(loaded, seed=0):
    from layertracer.tuned_lens import Translators

    translators = Translators(loaded.adapter.num_layers, loaded.info.hidden_size)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        translators.weight.copy_(0.3 * torch.randn(translators.weight.shape, generator=generator))
        translators.bias.copy_(0.3 * torch.randn(translators.bias.shape, generator=generator))
    return translators


def test_the_tuned_live_lens_is_the_tuned_traces_position_view(loaded):
    translators = _random_translators(loaded)
    tasks = lt.load_tasks("arithmetic_zh", limit=3)
    result = lt.trace(loaded, tasks, perturbations=[], translators=translators,
                      options=lt.TraceOptions(lens="tuned", position_task="arithmetic_zh", position_prompt=1, **OPTIONS))
    view, task = result.position_view, result.tasks["arithmetic_zh"]
    lens = live_lens(loaded, task.prompts[1], task.targets[1], translators)
    assert lens["lens"] == "tuned" and lens["top1_tokens"] == view.top1_tokens
    np.testing.assert_array_equal(lens["target_prob"], view.target_prob)
    np.testing.assert_array_equal(lens["top1_probs"], view.top1_probs)
    logit = live_lens(loaded, task.prompts[1], task.targets[1])
    assert logit["lens"] == "logit" and not np.allclose(logit["target_prob"][:-1], lens["target_prob"][:-1])


def test_translators_of_another_width_are_refused_in_one_line(loaded):
    from layertracer.tuned_lens import Translators

    with pytest.raises(lt.LayerTracerError) as info:
        live_lens(loaded, "big ->", None, Translators(loaded.adapter.num_layers, loaded.info.hidden_size + 1))
    assert "\n" not in str(info.value)
