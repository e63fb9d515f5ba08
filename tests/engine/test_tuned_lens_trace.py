"""The trace read through the tuned lens: identity translators give the logit lens bit for bit; trained
(here: random) translators give lens rows equal to a recomputation by hand from the model's own hidden
states (``output_hidden_states``), affine maps applied in float64 and then the final norm and head."""

import copy

import numpy as np
import pytest
import torch

import layertracer as lt
import tiny_models
from layertracer.errors import LayerTracerError
from layertracer.models import wrap_model
from layertracer.spec.views import trace_summary
from layertracer.stats import ParticleRule
from layertracer.tasks.encoding import encode_task
from layertracer.tuned_lens import Translators

OPTIONS = dict(bootstrap_resamples=50, similarity_max_prompts=16, batch_size=3)


@pytest.fixture(scope="module")
def loaded(tokenizer):
    return wrap_model(tiny_models.build_model("llama"), tokenizer, source="llama")


@pytest.fixture(scope="module")
def tasks():
    return lt.load_tasks("antonyms_en,arithmetic_zh", limit=5)


def _comparable(result) -> dict:
    data = result.to_dict()
    for key in ("timings", "lens"):
        data.pop(key)
    data["options"].pop("lens")
    return data


def test_identity_translators_give_the_logit_lens_exactly(loaded, tasks):
    logit = lt.trace(loaded, tasks, perturbations=["skip"], options=lt.TraceOptions(**OPTIONS))
    identity = Translators(loaded.adapter.num_layers, loaded.info.hidden_size)
    tuned = lt.trace(loaded, tasks, perturbations=["skip"], options=lt.TraceOptions(lens="tuned", **OPTIONS),
                     translators=identity)
    assert logit.lens == {"kind": "logit"} and tuned.lens["kind"] == "tuned"
    assert tuned.options["lens"] == "tuned" and tuned.summary()["lens"] == "tuned"
    assert trace_summary(tuned.to_dict())["lens"] == "tuned" and trace_summary(logit.to_dict())["lens"] == "logit"
    assert _comparable(tuned) == _comparable(logit)


def _random_translators(loaded, seed: int = 3) -> Translators:
    made = Translators(loaded.adapter.num_layers, loaded.info.hidden_size)
    generator = torch.Generator().manual_seed(seed)
    d = loaded.info.hidden_size
    with torch.no_grad():
        made.weight.copy_(torch.randn(made.weight.shape, generator=generator) * (0.5 / d ** 0.5))
        made.bias.copy_(torch.randn(made.bias.shape, generator=generator) * 0.5)
    return made


def _by_hand(model, translators: Translators, ids: list[int]) -> np.ndarray:
    """Softmax of the lens at every residual state for the prompt ``ids``: (L + 1, T, V) float64, state
    0 = embedding ... state L = the model's output; states 0..L-1 translated."""
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        states = [h[0].double() for h in hidden[:-1]]  # embedding, blocks 0..L-2 (the last is normed)
        weight, bias = translators.weight.double(), translators.bias.double()
        states = [h + h @ weight[j].T + bias[j] for j, h in enumerate(states)]
        norm, head = copy.deepcopy(model.model.norm).double(), copy.deepcopy(model.lm_head).double()
        logits = [head(norm(h)) for h in states] + [model(input_ids=torch.tensor([ids])).logits[0].double()]
    return torch.softmax(torch.stack(logits), dim=-1).numpy()


def test_trained_translators_give_the_lens_computed_by_hand(loaded, tasks):
    translators = _random_translators(loaded)
    result = lt.trace(loaded, tasks, perturbations=["skip"], translators=translators,
                      options=lt.TraceOptions(lens="tuned", position_task="arithmetic_zh", position_prompt=1, **OPTIONS))
    logit = lt.trace(loaded, tasks, perturbations=["skip"], options=lt.TraceOptions(**OPTIONS))
    rule = ParticleRule(delta=0.1, floor=0.1)
    for task in tasks:
        traced = result.tasks[task.name]
        curves, baselines = [], []
        for i, encoded in enumerate(encode_task(loaded.tokenizer, task)):
            probs = _by_hand(loaded.model, translators, encoded.input_ids)[:, -1]  # (L + 1, V) at the answer
            target = probs[:, encoded.target_id]
            assert traced.baseline_prob[i] == pytest.approx(target[0], abs=1e-5)
            assert traced.target_prob[i] == pytest.approx(target[1:].tolist(), abs=1e-5)
            rank = (probs[1:] > target[1:, None]).sum(-1)
            assert traced.target_rank[i] == rank.tolist()
            entropy = -(probs[1:] * np.log(probs[1:])).sum(-1)
            assert traced.entropy[i] == pytest.approx(entropy.tolist(), abs=1e-4)
            kl = (probs[-1] * (np.log(probs[-1]) - np.log(probs[1:]))).sum(-1)
            assert traced.kl_to_final[i] == pytest.approx(kl.tolist(), abs=1e-4)
            assert [row[0] for row in traced.top_probs[i]] == pytest.approx(probs[1:].max(-1).tolist(), abs=1e-5)
            curves.append(target[1:])
            baselines.append(target[0])
        mean = np.mean(curves, axis=0)
        assert traced.task_particle == rule.find(mean, float(np.mean(baselines)))
        # The translators changed the lens: not the logit lens's rows (the last layer is the output in both).
        assert not np.allclose(traced.target_prob, logit.tasks[task.name].target_prob)
        assert np.allclose(np.asarray(traced.target_prob)[:, -1], np.asarray(logit.tasks[task.name].target_prob)[:, -1])
    view = result.position_view
    encoded = encode_task(loaded.tokenizer, tasks[1])[1]
    probs = _by_hand(loaded.model, translators, encoded.input_ids)  # (L + 1, T, V)
    assert np.asarray(view.target_prob) == pytest.approx(probs[1:, :, encoded.target_id], abs=1e-5)
    assert np.asarray(view.top1_probs) == pytest.approx(probs[1:].max(-1), abs=1e-5)
    # The sensitivity compares output distributions: the same whichever lens reads the layers.
    assert result.sensitivity.mean_js == pytest.approx(logit.sensitivity.mean_js, abs=1e-9)


def test_the_lens_and_its_translators_must_agree(loaded, tasks):
    with pytest.raises(LayerTracerError, match="needs translators"):
        lt.trace(loaded, tasks, options=lt.TraceOptions(lens="tuned", **OPTIONS))
    with pytest.raises(LayerTracerError, match="lens is 'logit'"):
        lt.trace(loaded, tasks, options=lt.TraceOptions(**OPTIONS),
                 translators=Translators(loaded.adapter.num_layers, loaded.info.hidden_size))
    with pytest.raises(LayerTracerError, match="this model needs"):
        lt.trace(loaded, tasks, options=lt.TraceOptions(lens="tuned", **OPTIONS),
                 translators=Translators(loaded.adapter.num_layers - 1, loaded.info.hidden_size))
    with pytest.raises(LayerTracerError, match="lens"):
        lt.TraceOptions(lens="tuned-ish")


def test_an_old_result_without_the_lens_field_loads(loaded, tasks):
    data = lt.trace(loaded, tasks[:1], perturbations=[], options=lt.TraceOptions(**OPTIONS)).to_dict()
    data.pop("lens")
    data["options"].pop("lens")
    old = lt.TraceResult.from_dict(data)
    assert old.lens is None and old.summary()["lens"] == "logit"
    assert trace_summary(data)["lens"] == "logit"  # what the API lists for a trace stored before
