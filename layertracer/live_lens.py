"""The live logit lens: the layer x position lens of one typed prompt, by the tracer's own code.

A trace keeps this picture for one prompt chosen when it ran (``TraceResult.position_view``); here any
prompt gets it on demand (the service's ``lens`` jobs, ``worker.runners.run_lens``). The numbers come
from the tracer's ``_position_view`` itself, so the live lens of a trace's prompt is that trace's
position view, and its tokens are decoded for reading as everywhere else (``layertracer.tokens``).

Cost: one forward pass over the prompt (T tokens) and L head projections of (T, d); no perturbations.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Optional

from layertracer.batching import context_length
from layertracer.errors import PromptError
from layertracer.models.loading import LoadedModel
from layertracer.spec.jobs import LENS_MAX_PROMPT_CHARS, LENS_MAX_TOKENS
from layertracer.tasks.encoding import EncodedItem, encode_item
from layertracer.tasks.sets import Task, TaskItem
from layertracer.tracer import TraceOptions, _lens, _Prompt, _position_view, _TokenText
from layertracer.tuned_lens import Translators

LIVE_TASK = "live"  # the name of the one-prompt task the tracer's view is asked for


def _encode(loaded: LoadedModel, prompt: str, target: Optional[str]) -> EncodedItem:
    """The prompt as the tracer encodes a task item (prompt and target tokenized together, the target's
    first token in context scored); without a target, the prompt's own tokens and no scored token."""
    limit = min(LENS_MAX_TOKENS, context_length(loaded.model) or LENS_MAX_TOKENS)
    if target:
        encoded = encode_item(loaded.tokenizer, TaskItem(prompt=prompt, target=target))
    else:
        ids = [int(i) for i in loaded.tokenizer(prompt)["input_ids"]]
        if not ids:
            raise PromptError("the prompt tokenizes to nothing")
        # The target column of the tracer's view is read for the last token and then dropped.
        encoded = EncodedItem(input_ids=ids, target_id=ids[-1], target_token="")
    if len(encoded.input_ids) > limit:
        raise PromptError(f"the prompt is {len(encoded.input_ids)} tokens; the live lens takes at most {limit}")
    return encoded


def live_lens(loaded: LoadedModel, prompt: str, target: Optional[str] = None,
              translators: Optional[Translators] = None) -> dict[str, Any]:
    """The lens of ``prompt`` at every layer and position: the logit lens, or the tuned lens through
    ``translators`` (this model's, ``layertracer.tuned_lens``), as a trace with that lens reads it.

    Returns {"prompt", "target" (or None), "target_token" (the scored token, readable; None without a
    target), "boundary_merged", "num_layers" L, "tokens": [T] readable labels, "target_prob": [L][T]
    probability of the target token as the next token (None without a target), "top1_tokens": [L][T],
    "top1_probs": [L][T], "model": {"source", "fingerprint"}, "lens": "logit" | "tuned"}. Raises PromptError (one line) for an
    empty prompt, one over the limits (``LENS_MAX_PROMPT_CHARS`` characters, ``LENS_MAX_TOKENS``
    tokens or the model's context) or a target that tokenizes to nothing after it.
    """
    if not prompt or not prompt.strip():
        raise PromptError("the prompt is empty")
    if len(prompt) > LENS_MAX_PROMPT_CHARS:
        raise PromptError(f"the prompt is {len(prompt)} characters; the live lens takes at most {LENS_MAX_PROMPT_CHARS}")
    target = target if target and target.strip() else None
    encoded = _encode(loaded, prompt, target)
    task = Task(name=LIVE_TASK, items=[TaskItem(prompt=prompt, target=target or "")])
    options = TraceOptions(position_task=LIVE_TASK, position_prompt=0,
                           lens="logit" if translators is None else "tuned")
    maps, _ = _lens(options, translators, loaded)  # the tracer's check that the translators fit the model
    view = asdict(_position_view(loaded, [task], [_Prompt(task=0, index=0, encoded=encoded)], options,
                                 _TokenText(loaded.tokenizer), maps))
    return {
        "prompt": prompt,
        "target": target,
        "target_token": view["target_token"] if target else None,
        "boundary_merged": bool(encoded.boundary_merged),
        "num_layers": len(view["top1_tokens"]),
        "tokens": view["tokens"],
        "target_prob": view["target_prob"] if target else None,
        "top1_tokens": view["top1_tokens"],
        "top1_probs": view["top1_probs"],
        "model": {"source": loaded.info.source, "fingerprint": loaded.info.fingerprint},
        "lens": options.lens,
    }
