"""Tokenizing task items: the prompt ids and the target's first token as tokenized in context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from layertracer.errors import PromptError
from layertracer.tasks.sets import Task, TaskItem
from layertracer.tokens import readable_token


@dataclass(frozen=True)
class EncodedItem:
    """One item ready for the model.

    input_ids: the prompt's token ids (length T); the answer position is T - 1.
    target_id: the first token of the target as tokenized in context, i.e. the first token of
        tokenize(prompt + target) after the prompt's tokens.
    target_token: that token decoded, so results say which token was scored.
    boundary_merged: True when the tokenizer merged across the prompt/target boundary; the prompt is
        then cut to the tokens the two tokenizations share, and the scored token is the next one.
    """

    input_ids: list[int]
    target_id: int
    target_token: str
    boundary_merged: bool = False


def encode_item(tokenizer: Any, item: TaskItem, *, max_length: Optional[int] = None, where: str = "") -> EncodedItem:
    """Encode one item; raises PromptError for an empty target or a prompt longer than ``max_length``."""
    prompt_ids = list(tokenizer(item.prompt)["input_ids"])
    full_ids = list(tokenizer(item.prompt + item.target)["input_ids"])
    shared = 0
    for a, b in zip(prompt_ids, full_ids):
        if a != b:
            break
        shared += 1
    merged = shared < len(prompt_ids)
    if shared >= len(full_ids) or not item.target.strip():
        raise PromptError(f"{where}target {item.target!r} tokenizes to nothing after the prompt")
    if shared == 0:
        raise PromptError(f"{where}prompt {item.prompt[:40]!r} shares no token with prompt+target")
    input_ids = full_ids[:shared]
    if max_length is not None and len(input_ids) > max_length:
        raise PromptError(
            f"{where}prompt is {len(input_ids)} tokens, longer than the model's context of {max_length}"
        )
    target_id = full_ids[shared]
    return EncodedItem(
        input_ids=input_ids,
        target_id=target_id,
        target_token=readable_token(tokenizer, target_id),
        boundary_merged=merged,
    )


def encode_task(tokenizer: Any, task: Task, *, max_length: Optional[int] = None) -> list[EncodedItem]:
    """Encode every item of a task; errors name the task and the item's index."""
    return [
        encode_item(tokenizer, item, max_length=max_length, where=f"task {task.name!r} item {i}: ")
        for i, item in enumerate(task.items)
    ]
