"""The built-in bilingual tasks, declared once: names, languages, templates and their fact files.

Torch-free, so that the engine (``layertracer.tasks.sets`` renders their prompts), the API (which
lists and validates task names before a worker has registered them) and the forms read one table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class BuiltinTask:
    """A built-in task: facts plus a template with ``{input}`` and ``{output}``.

    The prompt is the template cut just before ``{output}`` (trailing spaces moved to the target), so
    "The opposite of hot is" / " cold" and "大的反义词是" / "小".
    """

    name: str
    language: str
    template: str
    description: str
    file: Optional[str] = None
    generator: Optional[str] = None
    separator: str = "\n"


BUILTIN_TASKS: dict[str, BuiltinTask] = {
    t.name: t
    for t in [
        BuiltinTask("antonyms_en", "en", "The opposite of {input} is {output}", "English antonyms", "antonyms_en.jsonl"),
        BuiltinTask("antonyms_zh", "zh", "{input}的反义词是{output}", "Chinese antonyms", "antonyms_zh.jsonl"),
        BuiltinTask("synonyms_en", "en", "{input} means the same as {output}", "English synonyms", "synonyms_en.jsonl"),
        BuiltinTask("synonyms_zh", "zh", "{input}的近义词是{output}", "Chinese synonyms", "synonyms_zh.jsonl"),
        BuiltinTask("country_capital_en", "en", "The capital of {input} is {output}", "Country to capital (English)", "country_capital_en.jsonl"),
        BuiltinTask("country_capital_zh", "zh", "{input}的首都是{output}", "Country to capital (Chinese)", "country_capital_zh.jsonl"),
        BuiltinTask("en_to_zh", "mixed", "English: {input} 中文：{output}", "English word to Chinese", "en_to_zh.jsonl"),
        BuiltinTask("zh_to_en", "mixed", "中文：{input} English: {output}", "Chinese word to English", "zh_to_en.jsonl"),
        BuiltinTask("plural_en", "en", "one {input}, two {output}", "English plural", "plural_en.jsonl"),
        BuiltinTask("past_tense_en", "en", "Today I {input}, yesterday I {output}", "English past tense", "past_tense_en.jsonl"),
        BuiltinTask("arithmetic_en", "en", "{input} = {output}", "One-digit addition and subtraction", generator="arithmetic_en"),
        BuiltinTask("arithmetic_zh", "zh", "{input}等于{output}", "一位数加减法 (one-digit arithmetic in Chinese numerals)", generator="arithmetic_zh"),
    ]
}

BUILTIN_TASK_NAMES = tuple(BUILTIN_TASKS)
