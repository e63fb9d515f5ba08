"""Task sets: built-in data, prompt rendering, user files and their errors, target tokenization."""

import json

import pytest

from layertracer.errors import PromptError, TaskFileError
from layertracer.tasks import BUILTIN_TASKS, TaskItem, builtin_facts, builtin_task, encode_item, load_task_file, load_tasks


@pytest.mark.parametrize("name", list(BUILTIN_TASKS))
def test_builtin_tasks_have_at_least_50_unique_facts(name):
    facts = builtin_facts(name)
    assert len(facts) >= 50
    inputs = [a for a, _ in facts]
    assert len(set(inputs)) == len(inputs)
    assert all(a.strip() == a and b.strip() == b and a and b for a, b in facts)


def test_both_languages_and_all_required_kinds_are_built_in():
    languages = {spec.language for spec in BUILTIN_TASKS.values()}
    assert {"en", "zh"} <= languages
    for kind in ("antonyms", "synonyms", "country_capital", "en_to_zh", "zh_to_en", "plural", "past_tense", "arithmetic"):
        assert any(name.startswith(kind) for name in BUILTIN_TASKS), kind


@pytest.mark.parametrize("name", ["antonyms_en", "synonyms_en", "plural_en", "past_tense_en", "country_capital_en"])
def test_few_shot_prompt_never_shows_the_items_own_answer(name):
    task = builtin_task(name, shots=3)
    for item, (_, answer) in zip(task.items, builtin_facts(name)):
        examples = item.prompt.split("\n")[:-1]
        assert len(examples) == 3
        assert all(answer not in line.replace(",", " ").split() for line in examples), (item, answer)
        assert item.target.strip() == answer


def test_rendering_moves_the_space_to_the_target():
    task = builtin_task("antonyms_en", shots=0, limit=1)
    assert task.items[0].prompt == "The opposite of hot is"
    assert task.items[0].target == " cold"
    zh = builtin_task("country_capital_zh", shots=0, limit=1)
    assert not zh.items[0].prompt.endswith(" ") and zh.items[0].prompt.endswith("的首都是")


def test_arithmetic_facts_are_correct():
    for source, answer in builtin_facts("arithmetic_en"):
        a, op, b = source.split()
        assert int(answer) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    digits = "零一二三四五六七八九"
    for source, answer in builtin_facts("arithmetic_zh"):
        a, op, b = digits.index(source[0]), source[1], digits.index(source[2])
        assert digits.index(answer) == (a + b if op == "加" else a - b)


def test_jsonl_and_csv_user_tasks(tmp_path):
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps(r, ensure_ascii=False)
            for r in [
                {"prompt": "a", "target": "b"},
                {"prompt": "猫", "target": "cat", "task": "zh"},
                {"prompt": "c", "target": "d"},
            ]
        )
        + "\n\n",
        encoding="utf-8",
    )
    tasks = {t.name: t for t in load_task_file(jsonl)}
    assert [i.prompt for i in tasks["mine"].items] == ["a", "c"]
    assert tasks["zh"].items == [TaskItem("猫", "cat")]
    csv_file = tmp_path / "other.csv"
    csv_file.write_text("prompt,target\nx,y\n\"p, q\",r\n", encoding="utf-8")
    (task,) = load_task_file(csv_file)
    assert task.items == [TaskItem("x", "y"), TaskItem("p, q", "r")]
    mixed = load_tasks(f"antonyms_en,{csv_file}", limit=2)
    assert [t.name for t in mixed] == ["antonyms_en", "other"] and len(mixed[0].items) == 2


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "no items"),
        ('{"prompt": "a", "target": "b"}\n{"prompt": "a"\n', ":2: invalid JSON"),
        ('{"prompt": "a", "target": ""}\n', ":1: 'target' must be a non-empty string"),
        ('["a", "b"]\n', ":1: expected an object"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TaskFileError) as info:
        load_task_file(path)
    assert message in str(info.value) and "bad.jsonl" in str(info.value)


def test_csv_without_target_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("prompt,answer\na,b\n", encoding="utf-8")
    with pytest.raises(TaskFileError, match="bad.csv:1: missing column 'target'"):
        load_task_file(path)


def test_unknown_task_spec():
    with pytest.raises(TaskFileError, match="neither a task file nor a built-in task"):
        load_tasks("antonyms_xx")


def test_target_is_first_token_in_context(tokenizer):
    item = TaskItem("The capital of France is", " Paris")
    encoded = encode_item(tokenizer, item)
    full = tokenizer(item.prompt + item.target)["input_ids"]
    assert encoded.input_ids == full[: len(encoded.input_ids)]
    assert encoded.target_id == full[len(encoded.input_ids)]
    assert tokenizer.decode([encoded.target_id]) == encoded.target_token
    assert " Paris".startswith(encoded.target_token)


def test_whitespace_target_is_rejected(tokenizer):
    with pytest.raises(PromptError, match="tokenizes to nothing"):
        encode_item(tokenizer, TaskItem("hello", "   "))


def test_too_long_prompt_is_rejected(tokenizer):
    with pytest.raises(PromptError, match="longer than the model's context of 5"):
        encode_item(tokenizer, TaskItem("one two three four five six seven", " eight"), max_length=5)
