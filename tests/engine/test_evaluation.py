"""Multiple-choice evaluation: loaders (a C-Eval fixture, the real CMMLU files when present), exact
prompt texts, the one-forward-per-question scorer against a naive one-forward-per-choice reference,
accuracy tables worked out by hand, JSON round trips and bad-input messages."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

import tiny_models
from layertracer.demo.tokenizer import train_tokenizer
from layertracer.errors import LayerTracerError, PromptError
from layertracer.evaluation import (
    TEMPLATES,
    BenchmarkFormatError,
    BenchmarkNotFoundError,
    EvalResult,
    QuestionRecord,
    ScoringRequest,
    aggregate,
    encode_question,
    evaluate,
    fewshot_examples,
    load_benchmark,
    plan_rows,
    score_requests,
)
from layertracer.models import wrap_model

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ceval"
CMMLU = Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks" / "cmmlu"
LETTERS = "ABCD"

needs_cmmlu = pytest.mark.skipif(not (CMMLU / "test").is_dir(), reason=f"real CMMLU data not found at {CMMLU}")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared machine a busy second core makes
    every matmul wait for it; restored for the other test modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fixture_bench():
    return load_benchmark(f"ceval:{FIXTURE}")


@pytest.fixture(scope="module")
def short_tokenizer(fixture_bench):
    """A BPE trained on the fixture's prompts, so " A".." D" are single tokens and prompts stay short."""
    texts = [
        template.render(subject, question, subject.fewshot[:2])
        for template in TEMPLATES.values()
        if template.name != "cloze"  # its prompts have no letters: " A".." D" must stay frequent
        for subject in fixture_bench.subjects
        for question in subject.questions + subject.fewshot
    ]
    return train_tokenizer(texts + [" A B C D"] * 50, tiny_models.VOCAB)


@pytest.fixture(scope="module")
def tiny():
    """A function (arch, tokenizer) -> LoadedModel; each architecture is built once per module."""
    built: dict[str, torch.nn.Module] = {}

    def get(arch: str, tokenizer):
        if arch not in built:
            built[arch] = tiny_models.build_model(arch)
        return wrap_model(built[arch], tokenizer, source=arch)

    return get


def write_csv(path: Path, header, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


CMMLU_HEADER = ["", "Question", "A", "B", "C", "D", "Answer"]


@pytest.fixture
def cmmlu_tree(tmp_path):
    """A CMMLU-layout folder with invented questions: one official subject, one of our own."""
    root = tmp_path / "cmmlu"
    write_csv(root / "dev" / "agronomy.csv", CMMLU_HEADER, [
        [0, "水稻属于哪一类作物", "粮食作物", "油料作物", "纤维作物", "糖料作物", "A"],
        [1, "下列肥料中属于氮肥的是", "尿素", "过磷酸钙", "氯化钾", "石灰", "A"],
        [2, "蜜蜂采蜜主要帮助植物完成", "光合作用", "传粉", "呼吸", "蒸腾", "B"],
    ])
    write_csv(root / "test" / "agronomy.csv", CMMLU_HEADER, [
        [7, "小麦的主要食用部分是", "根", "茎", "叶", "种子", "D"],
        [8, "土壤酸化可以施用", "石灰", "硫磺", "尿素", "食盐", "A"],
    ])
    write_csv(root / "dev" / "team_quiz.csv", CMMLU_HEADER, [[0, "一加一等于", "1", "2", "3", "4", "B"]])
    write_csv(root / "test" / "team_quiz.csv", CMMLU_HEADER, [[0, "二加二等于", "2", "3", "4", "5", "C"]])
    return root


# --- loaders ---------------------------------------------------------------------------------------


def test_ceval_fixture_loads_with_names_categories_and_locations(fixture_bench):
    b = fixture_bench
    assert (b.name, b.split, b.fewshot_split) == ("ceval", "val", "dev")
    assert [s.name for s in b.subjects] == ["art_studies", "high_school_physics"]
    physics = b.subject("high_school_physics")
    assert (physics.display_name, physics.categories, physics.category) == ("高中物理", ("STEM",), "STEM")
    assert b.subject("art_studies").categories == ("Humanities",)
    assert len(b) == 8 and [len(s.fewshot) for s in b.subjects] == [5, 5]
    q = physics.questions[1]
    assert (q.id, q.answer, q.gold_index, q.choices) == ("1", "B", 1, ("2 N", "20 N", "0.2 N", "200 N"))
    assert q.location.endswith("high_school_physics_val.csv:3")
    assert physics.fewshot[0].explanation == "重力加速度的方向竖直向下。"


def test_subject_filter_limit_and_bare_folder():
    b = load_benchmark(str(FIXTURE), subjects=["high_school_physics"], limit=2)
    assert b.name == "ceval" and [s.name for s in b.subjects] == ["high_school_physics"]
    assert [q.id for q in b.questions()] == ["0", "1"]
    assert (b.subject_filter, b.limit) == (("high_school_physics",), 2)


def test_any_subject_in_cmmlu_layout_goes_to_other(cmmlu_tree):
    b = load_benchmark(f"cmmlu:{cmmlu_tree}")
    assert (b.split, [s.name for s in b.subjects]) == ("test", ["agronomy", "team_quiz"])
    quiz = b.subject("team_quiz")
    assert (quiz.display_name, quiz.categories) == ("team_quiz", ("Other",))
    assert b.subject("agronomy").display_name == "农学"
    assert [q.id for q in b.subject("agronomy").questions] == ["7", "8"]
    # Without the unnamed index column the rows are numbered from 0.
    write_csv(cmmlu_tree / "test" / "team_quiz.csv", CMMLU_HEADER[1:], [["三加三等于", "5", "6", "7", "8", "B"]])
    quiz = load_benchmark(f"cmmlu:{cmmlu_tree}", subjects=["team_quiz"]).subjects[0].questions[0]
    assert (quiz.id, quiz.question, quiz.answer) == ("0", "三加三等于", "B")


@needs_cmmlu
def test_real_cmmlu_files_load():
    b = load_benchmark(f"cmmlu:{CMMLU}")
    assert len(b.subjects) == 67 and all(len(s.fewshot) == 5 for s in b.subjects)
    assert len(b) > 11000 and all(q.answer in LETTERS for q in b.questions())
    china = [s.name for s in b.subjects if "China specific" in s.categories]
    assert len(china) == 15 and all(b.subject(n).categories[0] != "China specific" for n in china)
    assert not [s.name for s in b.subjects if s.display_name == s.name]  # every subject is in the table
    small = load_benchmark(f"cmmlu:{CMMLU}", subjects=["virology", "agronomy"], limit=3)
    assert [s.name for s in small.subjects] == ["agronomy", "virology"] and len(small) == 6
    assert small.subject("virology").categories == ("STEM",)


# --- prompts ---------------------------------------------------------------------------------------


def prompt_for(bench, subject, index, template, shots):
    s = bench.subject(subject)
    q = s.questions[index]
    return TEMPLATES[template].render(s, q, fewshot_examples(bench, s, q, shots))


def test_ceval_prompt_matches_lm_eval_ceval_valid_with_two_shots(fixture_bench):
    expected = (
        "以下是中国关于高中物理的单项选择题，请选出其中的正确答案。\n\n"
        "物体做自由落体运动时，加速度的方向是\nA. 竖直向上\nB. 竖直向下\nC. 水平向东\nD. 不断变化\n答案： B\n\n"
        "国际单位制中，力的单位是\nA. 焦耳\nB. 瓦特\nC. 牛顿\nD. 帕斯卡\n答案： C\n\n"
        "凸透镜对光线有什么作用\nA. 会聚\nB. 发散\nC. 反射\nD. 吸收\n答案："
    )
    assert prompt_for(fixture_bench, "high_school_physics", 2, "lm-eval:ceval-valid", 2) == expected
    assert TEMPLATES["lm-eval:ceval-valid"].continuations() == (" A", " B", " C", " D")


def test_ceval_answer_only_prompt_is_the_official_one(fixture_bench):
    expected = (
        "以下是中国关于高中物理考试的单项选择题，请选出其中的正确答案。\n\n"
        "物体做自由落体运动时，加速度的方向是\nA. 竖直向上\nB. 竖直向下\nC. 水平向东\nD. 不断变化\n答案：B\n\n"
        "国际单位制中，力的单位是\nA. 焦耳\nB. 瓦特\nC. 牛顿\nD. 帕斯卡\n答案：C\n\n"
        " 凸透镜对光线有什么作用 \nA. 会聚\nB. 发散\nC. 反射\nD. 吸收\n答案："
    )
    assert prompt_for(fixture_bench, "high_school_physics", 2, "ceval:answer-only", 2) == expected


def test_cmmlu_prompts_with_two_shots(cmmlu_tree):
    b = load_benchmark(f"cmmlu:{cmmlu_tree}")
    assert prompt_for(b, "agronomy", 0, "lm-eval:cmmlu", 2) == (
        "以下是关于农学的单项选择题，请直接给出正确答案的选项。\n\n"
        "水稻属于哪一类作物\nA. 粮食作物\nB. 油料作物\nC. 纤维作物\nD. 糖料作物\n答案： A\n\n"
        "下列肥料中属于氮肥的是\nA. 尿素\nB. 过磷酸钙\nC. 氯化钾\nD. 石灰\n答案： A\n\n"
        "小麦的主要食用部分是\nA. 根\nB. 茎\nC. 叶\nD. 种子\n答案："
    )
    assert prompt_for(b, "agronomy", 0, "cmmlu:answer-only", 2) == (
        "以下是关于农学的单项选择题，请直接给出正确答案的选项。\n\n"
        "题目：水稻属于哪一类作物\nA. 粮食作物\nB. 油料作物\nC. 纤维作物\nD. 糖料作物\n答案是：A\n\n"
        "题目：下列肥料中属于氮肥的是\nA. 尿素\nB. 过磷酸钙\nC. 氯化钾\nD. 石灰\n答案是：A\n\n"
        "题目：小麦的主要食用部分是\nA. 根\nB. 茎\nC. 叶\nD. 种子\n答案是："
    )


@needs_cmmlu
def test_real_cmmlu_prompt_has_the_lm_eval_shape():
    """Built from the file's fields so no CMMLU text is copied into this repository."""
    b = load_benchmark(f"cmmlu:{CMMLU}", subjects=["agronomy"], limit=1)
    s = b.subjects[0]
    d0, d1, q = s.fewshot[0], s.fewshot[1], s.questions[0]

    def block(x):
        return f"{x.question.strip()}\nA. {x.choices[0]}\nB. {x.choices[1]}\nC. {x.choices[2]}\nD. {x.choices[3]}\n答案："

    expected = "以下是关于农学的单项选择题，请直接给出正确答案的选项。\n\n" + block(d0) + " " + d0.answer + "\n\n"
    expected += block(d1) + " " + d1.answer + "\n\n" + block(q)
    assert prompt_for(b, "agronomy", 0, "lm-eval:cmmlu", 2) == expected


# --- scoring against a naive reference -------------------------------------------------------------


def naive_choice_logprobs(model, tokenizer, prompt: str, continuations) -> list[float]:
    """One full forward of context + continuation per choice, summing the continuation's log-probs."""
    context = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    scores = []
    for continuation in continuations:
        whole = tokenizer(prompt + continuation, add_special_tokens=False)["input_ids"]
        tail = whole[len(context):]
        with torch.no_grad():
            logits = model(torch.tensor([context + tail])).logits[0].double()
        log_probs = torch.log_softmax(logits, dim=-1)
        scores.append(sum(float(log_probs[len(context) - 1 + j, t]) for j, t in enumerate(tail)))
    return scores


def check_against_naive(loaded, bench, result, template_name: str) -> None:
    template = TEMPLATES[template_name]
    for record in result.records:
        subject = bench.subject(record.subject)
        question = next(q for q in subject.questions if q.id == record.id)
        examples = fewshot_examples(bench, subject, question, result.settings.shots)
        kept = examples[len(examples) - record.shots_used:]
        prompt = template.render(subject, question, kept)
        expected = naive_choice_logprobs(loaded.model, loaded.tokenizer, prompt, template.continuations())
        assert record.logprobs == pytest.approx(expected, abs=1e-5), record
        assert record.predicted == LETTERS[max(range(4), key=lambda c: expected[c])]


@pytest.mark.parametrize("arch,limit", [("llama", None), ("qwen3", None), ("mamba", 2)])  # Mamba's CPU scan is slow
def test_one_forward_per_question_equals_one_forward_per_choice(tiny, arch, limit, short_tokenizer):
    assert all(len(short_tokenizer.tokenize(c)) == 1 for c in (" A", " B", " C", " D"))
    bench = load_benchmark(f"ceval:{FIXTURE}", limit=limit)
    loaded = tiny(arch, short_tokenizer)
    result = evaluate(loaded, bench, shots=2, batch_size=3)
    assert [r.shots_used for r in result.records] == [2] * len(bench)
    check_against_naive(loaded, bench, result, "lm-eval:ceval-valid")


@pytest.mark.parametrize("arch", tiny_models.ARCHITECTURES)
def test_every_architecture_agrees_with_its_full_forward(tiny, arch, short_tokenizer):
    """The backbone + head path gives the model's own logits (soft-capping, projections, SSM, hybrids)."""
    bench = load_benchmark(f"ceval:{FIXTURE}", limit=1)
    loaded = tiny(arch, short_tokenizer)
    check_against_naive(loaded, bench, evaluate(loaded, bench, shots=1, batch_size=2), "lm-eval:ceval-valid")


def test_multi_token_continuations_are_scored_in_full(tiny, fixture_bench, tokenizer):
    # The session tokenizer splits " A" into "Ġ" + "A": every choice takes the fallback rows. Its
    # prompts are long, so with a 256-token context some few-shot examples are dropped too.
    assert len(tokenizer.tokenize(" A")) == 2
    loaded = tiny("llama", tokenizer)
    result = evaluate(loaded, fixture_bench, shots=2, batch_size=4)
    assert min(r.shots_used for r in result.records) < 2
    check_against_naive(loaded, fixture_bench, result, "lm-eval:ceval-valid")


def test_mixed_continuation_lengths_share_rows_correctly(tiny, short_tokenizer):
    loaded = tiny("qwen3", short_tokenizer)
    g = torch.Generator().manual_seed(0)
    contexts = [tuple(torch.randint(3, 380, (n,), generator=g).tolist()) for n in (12, 7, 20)]
    requests = [
        ScoringRequest(contexts[0], ((5,), (6, 7), (8,), (9, 10, 11))),  # mixed
        ScoringRequest(contexts[1], ((40,), (41,), (42,), (43,))),  # all single: one row
        ScoringRequest(contexts[2], ((50, 51), (52, 53), (54, 55, 56), (57, 58))),  # all multi
    ]
    rows = plan_rows(requests)
    assert [r.request for r in rows] == [0, 0, 1, 2, 2, 2, 2]
    scores = score_requests(loaded.model, loaded.adapter, requests, batch_size=2)
    for request, row in zip(requests, scores):
        for choice, continuation in enumerate(request.continuations):
            ids = torch.tensor([request.context_ids + continuation])
            with torch.no_grad():
                log_probs = torch.log_softmax(loaded.model(ids).logits[0].double(), dim=-1)
            start = len(request.context_ids) - 1
            expected = sum(float(log_probs[start + j, t]) for j, t in enumerate(continuation))
            assert row[choice] == pytest.approx(expected, abs=1e-5)


def test_discovered_architectures_use_full_logits_with_the_same_numbers(tiny, short_tokenizer):
    bench = load_benchmark(f"ceval:{FIXTURE}", limit=2)
    table = tiny("qwen3", short_tokenizer)
    discovered = tiny("qwen3", short_tokenizer)
    discovered.adapter.source = "discovered"  # a fresh adapter per wrap_model call: nothing leaks
    a = evaluate(table, bench, shots=1, batch_size=4)
    b = evaluate(discovered, bench, shots=1, batch_size=4)
    for x, y in zip(a.records, b.records):
        assert x.predicted == y.predicted and x.logprobs == pytest.approx(y.logprobs, abs=1e-5)


def test_answer_only_mode_takes_the_letter_logits(tiny, fixture_bench, short_tokenizer):
    loaded = tiny("llama", short_tokenizer)
    result = evaluate(loaded, fixture_bench, mode="answer-only", shots=2, batch_size=8)
    assert (result.settings.template, result.settings.continuations) == ("ceval:answer-only", list(LETTERS))
    template = TEMPLATES["ceval:answer-only"]
    for record in result.records:
        subject = fixture_bench.subject(record.subject)
        question = next(q for q in subject.questions if q.id == record.id)
        prompt = template.render(subject, question, subject.fewshot[:2])
        ids = short_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        letters = [short_tokenizer(prompt + x, add_special_tokens=False)["input_ids"][len(ids)] for x in LETTERS]
        with torch.no_grad():
            logits = loaded.model(torch.tensor([ids])).logits[0, -1].double()
        expected = torch.log_softmax(logits, dim=-1)[letters].tolist()
        assert record.logprobs == pytest.approx(expected, abs=1e-5)
        assert record.predicted == LETTERS[int(logits[letters].argmax())]


# --- context fitting -------------------------------------------------------------------------------


def test_long_prompts_drop_the_earliest_examples_then_fail_clearly(fixture_bench, short_tokenizer):
    template = TEMPLATES["lm-eval:ceval-valid"]
    subject = fixture_bench.subject("art_studies")
    question = subject.questions[0]

    def encode(max_length, shots=5):
        return encode_question(short_tokenizer, template, fixture_bench, subject, question,
                               shots=shots, mode="loglikelihood", max_length=max_length)

    full = encode(None)
    assert full.shots_used == 5
    cut = encode(full.length - 1)
    assert cut.shots_used == 4
    kept = template.render(subject, question, subject.fewshot[1:])  # the first example went
    assert list(cut.context_ids) == short_tokenizer(kept, add_special_tokens=False)["input_ids"]
    alone = encode(None, shots=0).length
    assert encode(alone).shots_used == 0
    with pytest.raises(PromptError, match=rf"art_studies_val\.csv:2: question '0' .* context of {alone - 1}$"):
        encode(alone - 1)


# --- results ---------------------------------------------------------------------------------------


def record(subject, categories, correct, gold="A"):
    return QuestionRecord(
        id="0", subject=subject, category=categories[0], categories=list(categories), gold=gold,
        predicted=gold if correct else "B", correct=correct, logprobs=[-1.0, -2.0, -3.0, -4.0],
        shots_used=5, prompt_tokens=10,
    )


def test_accuracy_tables_by_hand():
    records = [
        record("physics", ["STEM"], True), record("physics", ["STEM"], True), record("physics", ["STEM"], False),
        record("history", ["Humanities", "China specific"], True),
        record("law", ["Humanities"], False), record("law", ["Humanities"], False),
        record("driving", ["Other", "China specific"], False), record("driving", ["Other", "China specific"], True),
    ]
    order = ("STEM", "Humanities", "Social Science", "Other", "China specific")
    subjects, categories, overall = aggregate(records, order)
    assert {k: (v.n, v.correct, v.accuracy) for k, v in subjects.items()} == {
        "physics": (3, 2, 2 / 3), "history": (1, 1, 1.0), "law": (2, 0, 0.0), "driving": (2, 1, 0.5),
    }
    assert list(categories) == ["STEM", "Humanities", "Other", "China specific"]
    humanities = categories["Humanities"]  # history 1/1 and law 0/2
    assert (humanities.n, humanities.correct, humanities.subjects) == (3, 1, 2)
    assert humanities.accuracy == pytest.approx(1 / 3) and humanities.macro_accuracy == pytest.approx(0.5)
    china = categories["China specific"]  # history 1/1 and driving 1/2, overlapping the others
    assert (china.n, china.correct) == (3, 2) and china.macro_accuracy == pytest.approx(0.75)
    assert (overall.n, overall.correct, overall.subjects) == (8, 4, 4)
    assert overall.accuracy == 0.5
    assert overall.macro_accuracy == pytest.approx((2 / 3 + 1 + 0 + 0.5) / 4)


def test_result_round_trips_through_json_with_its_settings(tiny, fixture_bench, short_tokenizer, tmp_path):
    loaded = tiny("llama", short_tokenizer)
    events = []
    loaded.model.train()
    result = evaluate(loaded, fixture_bench, shots=1, batch_size=5, progress=events.append)
    assert loaded.model.training  # the caller's mode is restored
    loaded.model.eval()
    scoring = [e for e in events if e.stage == "evaluate"]
    assert [e.done for e in scoring] == sorted(e.done for e in scoring) and scoring[-1].done == scoring[-1].total
    s = result.settings
    assert (s.benchmark, s.split, s.mode, s.shots, s.template, s.fewshot_sampler) == (
        "ceval", "val", "loglikelihood", 1, "lm-eval:ceval-valid", "first_n")
    assert "lm_eval/tasks/ceval/_default_ceval_yaml" in s.template_source
    assert list(result.categories) == ["STEM", "Humanities"]
    assert result.overall.n == 8 and result.subject_names["art_studies"] == "艺术学"
    path = tmp_path / "eval.json"
    result.to_json(path)
    text = path.read_text(encoding="utf-8")
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    again = EvalResult.load(path)
    assert again.to_dict() == result.to_dict()
    assert all(type(v) is float for r in again.records for v in r.logprobs)
    assert "records" not in result.summary() and result.summary()["settings"]["shots"] == 1


@needs_cmmlu
def test_evaluate_runs_on_real_cmmlu(tiny, tokenizer):
    loaded = tiny("llama", tokenizer)
    # Short questions: with this tokenizer some CMMLU questions alone exceed the tiny model's 256 tokens.
    result = evaluate(loaded, f"cmmlu:{CMMLU}", subjects=["ethnology", "anatomy"], limit=2, shots=5)
    assert result.overall.n == 4 and result.settings.subjects == ["ethnology", "anatomy"]
    assert list(result.categories) == ["STEM", "Social Science", "China specific"]
    assert all(0 <= r.shots_used <= 5 for r in result.records)


# --- bad input -------------------------------------------------------------------------------------


@pytest.fixture
def ceval_copy(tmp_path):
    root = tmp_path / "ceval"
    shutil.copytree(FIXTURE, root)
    return root


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message and isinstance(exc_info.value, LayerTracerError)
    return message


def test_missing_folders_and_files(ceval_copy, tmp_path):
    with pytest.raises(BenchmarkNotFoundError) as exc:
        load_benchmark(f"ceval:{tmp_path / 'nowhere'}")
    assert "nowhere" in one_line(exc) and "does not exist" in one_line(exc)
    shutil.rmtree(ceval_copy / "dev")
    with pytest.raises(BenchmarkNotFoundError) as exc:
        load_benchmark(f"ceval:{ceval_copy}")
    assert "has no dev/ folder" in one_line(exc)
    for f in (ceval_copy / "val").iterdir():
        f.unlink()
    with pytest.raises(BenchmarkNotFoundError) as exc:
        load_benchmark(f"ceval:{ceval_copy}", with_fewshot=False)
    assert "no C-Eval CSV files (SUBJECT_val.csv)" in one_line(exc) and str(ceval_copy / "val") in one_line(exc)


def test_missing_few_shot_file_and_unknown_subject(ceval_copy):
    (ceval_copy / "dev" / "art_studies_dev.csv").unlink()
    with pytest.raises(BenchmarkNotFoundError) as exc:
        load_benchmark(f"ceval:{ceval_copy}")
    assert "art_studies_dev.csv is missing" in one_line(exc)
    with pytest.raises(BenchmarkNotFoundError) as exc:
        load_benchmark(f"ceval:{ceval_copy}", subjects=["astrology"])
    assert "no subject 'astrology'" in one_line(exc)


def test_missing_column_names_file_and_column(ceval_copy, cmmlu_tree):
    path = ceval_copy / "val" / "art_studies_val.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([lines[0].replace(",answer,", ",solution,")] + lines[1:]), encoding="utf-8")
    with pytest.raises(BenchmarkFormatError) as exc:
        load_benchmark(f"ceval:{ceval_copy}")
    assert "art_studies_val.csv: missing column 'answer'" in one_line(exc)
    write_csv(cmmlu_tree / "test" / "agronomy.csv", CMMLU_HEADER[:-1], [[0, "q", "a", "b", "c", "d"]])
    with pytest.raises(BenchmarkFormatError) as exc:
        load_benchmark(f"cmmlu:{cmmlu_tree}")
    assert "agronomy.csv: missing column 'Answer'" in one_line(exc)


def test_answer_outside_a_to_d_names_file_line_and_column(ceval_copy, cmmlu_tree):
    path = ceval_copy / "val" / "high_school_physics_val.csv"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("电阻的国际单位是,安培,伏特,瓦特,欧姆,D", "电阻的国际单位是,安培,伏特,瓦特,欧姆,E"), encoding="utf-8")
    with pytest.raises(BenchmarkFormatError) as exc:
        load_benchmark(f"ceval:{ceval_copy}")
    assert "high_school_physics_val.csv line 5: answer 'E' in column 'answer' is not one of A, B, C, D" in one_line(exc)
    # The C-Eval test split has no public answers, so it cannot be the scored split.
    with pytest.raises(BenchmarkFormatError, match=r"art_studies_test\.csv line 2: answer ''"):
        load_benchmark(f"ceval:{FIXTURE}", split="test")
    write_csv(cmmlu_tree / "dev" / "team_quiz.csv", CMMLU_HEADER, [[0, "一加一等于", "1", "2", "3", "4", "二"]])
    with pytest.raises(BenchmarkFormatError) as exc:
        load_benchmark(f"cmmlu:{cmmlu_tree}")
    assert "team_quiz.csv line 2: answer '二' in column 'Answer'" in one_line(exc)


def test_bad_options_are_one_line_errors(tiny, fixture_bench, short_tokenizer):
    loaded = tiny("llama", short_tokenizer)
    with pytest.raises(LayerTracerError, match="unknown evaluation mode 'generate'"):
        evaluate(loaded, fixture_bench, mode="generate")
    with pytest.raises(LayerTracerError, match="unknown prompt template 'mmlu'"):
        evaluate(loaded, fixture_bench, template="mmlu")
    with pytest.raises(LayerTracerError, match="without its dev split"):
        evaluate(loaded, load_benchmark(f"ceval:{FIXTURE}", with_fewshot=False), shots=5)


def test_cloze_stems_and_joiners_are_written_as_text_is():
    from layertracer.evaluation import Question

    template = TEMPLATES["cloze"]
    english = Question("1", "capitals", "The capital of France is ____", ("Rome", "Paris", "Oslo", "Bern"), "B")
    chinese = Question("2", "capitals", "法国的首都是 ____", ("罗马", "巴黎", "奥斯陆", "伯尔尼"), "B")
    plain = Question("3", "physics", "光速约为多少？", ("3e8 m/s", "1 m/s", "340 m/s", "10 m/s"), "A")
    assert template.continuations(english) == (" Rome", " Paris", " Oslo", " Bern")
    assert template.continuations(chinese) == ("罗马", "巴黎", "奥斯陆", "伯尔尼")
    assert template.body(plain) == "光速约为多少？\n答案：" and template.continuations(plain)[0] == "3e8 m/s"
    assert template.example(english) == "The capital of France is Paris\n"
    with pytest.raises(LayerTracerError, match="depend on the question"):
        template.continuations()


def test_cloze_mode_scores_each_choice_text_after_the_question(tiny, fixture_bench, short_tokenizer):
    """Prompts written out by hand (shots: stem + gold text + newline; no options, no letters), each
    choice's text scored by a full forward per choice."""
    loaded = tiny("llama", short_tokenizer)
    result = evaluate(loaded, fixture_bench, mode="cloze", shots=2, batch_size=4)
    assert result.settings.template == "cloze"
    for record in result.records:
        subject = fixture_bench.subject(record.subject)
        question = next(q for q in subject.questions if q.id == record.id)
        shots = "".join(
            f"{s.question.strip()}\n答案：{s.choices['ABCD'.index(s.answer)]}\n" for s in subject.fewshot[:2]
        )
        prompt = f"{shots}{question.question.strip()}\n答案："
        expected = naive_choice_logprobs(loaded.model, short_tokenizer, prompt, list(question.choices))
        assert record.logprobs == pytest.approx(expected, abs=1e-5)
        assert record.predicted == LETTERS[max(range(4), key=lambda c: expected[c])]
