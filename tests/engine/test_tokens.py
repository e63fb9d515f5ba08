"""Readable tokens: byte-level BPE pieces of Chinese characters as the characters they form, or as
<0xNN> escapes, never "�": in single tokens, along a prompt, and in a trace's results."""

from __future__ import annotations

import re

import layertracer as lt
from layertracer.tokens import readable, readable_sequence, readable_token

ESCAPE = re.compile(r"<0x[0-9A-F]{2}>")


def test_bytes_that_are_not_whole_characters_are_escapes():
    assert readable("中文".encode()) == "中文"
    assert readable("中".encode()[:2]) == "<0xE4><0xB8>"
    assert readable(b"ab" + "中".encode() + b"\xff") == "ab中<0xFF>"


def test_a_chinese_prompt_reads_as_chinese(tokenizer):
    text = "大的反义词是小，国家的首都是北京"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # the tokenizer does split characters
    labels = readable_sequence(tokenizer, ids)
    assert len(labels) == len(ids) and not any("\ufffd" in label for label in labels)
    # every character appears once, at the piece that completes it: without the escapes, the labels
    # spell the prompt
    assert "".join(ESCAPE.sub("", label) for label in labels) == text
    for token_id in ids:
        single = readable_token(tokenizer, token_id)
        assert "\ufffd" not in single
        if "\ufffd" not in tokenizer.decode([token_id]):
            assert single == tokenizer.decode([token_id])  # whole characters: what transformers says


def test_a_trace_of_chinese_tasks_has_no_replacement_characters(saved_model):
    loaded = lt.load_model(str(saved_model("qwen3")), device="cpu")
    result = lt.trace(loaded, "antonyms_zh,country_capital_zh", perturbations=["skip"],
                      options=lt.TraceOptions(batch_size=4, similarity=False, bootstrap_resamples=20,
                                              position_task="antonyms_zh"))
    texts = [result.position_view.target_token, *result.position_view.tokens]
    texts += [tok for row in result.position_view.top1_tokens for tok in row]
    for task in result.tasks.values():
        texts += task.target_tokens + [t for row in task.top_tokens for layer in row for t in layer]
    assert texts and not any("\ufffd" in t for t in texts)
    prompt = result.tasks["antonyms_zh"].prompts[0]
    assert "".join(ESCAPE.sub("", t) for t in result.position_view.tokens) == prompt
