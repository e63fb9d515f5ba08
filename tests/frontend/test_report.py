"""The report view (issue 6): the self-contained HTML file and the Dash page, on a result the real
engine runner produced (two allocations x two seeds on the demo world's two benchmarks)."""

from __future__ import annotations

import html
import json
from html.parser import HTMLParser

import dash
import httpx
import pytest
from dash_tree import find, text_of

from frontend import api_client
from frontend.viz import report as rv

LABEL = '<script>alert("x")</script> & co'


@pytest.fixture(scope="module")
def result(saved_model, tmp_path_factory):
    from layertracer.demo.world import build_world
    from layertracer.experiments.runner import run_experiment
    from layertracer.experiments.spec import ExperimentSpec

    world = build_world(tmp_path_factory.mktemp("report-world"), new_count=12, repeats=2)
    spec = ExperimentSpec(
        model=str(saved_model("qwen3")), corpus=str(world.new_corpus), allocations=["train-shallow", "0-1,3"],
        seeds=[1, 2], benchmarks=list(world.benchmarks), steps=3, batch_size=4, block_size=32, lr=1e-2,
        warmup_steps=1, eval_mode="cloze", eval_shots=1, eval_limit=3, checkpoint_every=0, device="cpu",
        dtype="float32", labels={"0-1,3": LABEL},
    )
    return json.loads(json.dumps(run_experiment(spec, tmp_path_factory.mktemp("report-exp"))))


@pytest.fixture()
def detail(result):
    """What GET /api/v1/experiments/{id} answers for the finished experiment."""
    return {"id": "e1", "kind": "experiment", "name": None, "status": "succeeded", "spec": result["spec"],
            "model": {"id": "m1", "source": result["spec"]["model"], "name": "tiny-qwen3", "fingerprint": "f00d"},
            "result": result, "partial": None, "created_at": "2026-11-29T06:00:00",
            "provenance": {"code_version": result["version"], "model_source": result["spec"]["model"],
                           "model_fingerprint": "f00d", "seeds": [1, 2]}}


class Collector(HTMLParser):
    """Tags (with attributes) and the visible text of an HTML document; fails on unbalanced tables."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.text, self.stack = [], [], []
        self.in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("table", "tr", "td", "th", "section", "script", "style"):
            self.stack.append(tag)
        self.in_script = tag in ("script", "style")

    def handle_endtag(self, tag):
        if tag in ("table", "tr", "td", "th", "section", "script", "style"):
            assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
            self.stack.pop()
        self.in_script = False

    def handle_data(self, data):
        if not self.in_script:
            self.text.append(data)


def parse(doc: str) -> Collector:
    c = Collector()
    c.feed(doc)
    c.close()
    assert c.stack == []
    return c


def rows_of_table(doc: str, cls: str) -> list[list[str]]:
    """The body rows (cell texts) of every ``<table class=cls>`` of the document, in order."""
    out, rows, row, cell, inside, in_body = [], None, None, None, False, False

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            nonlocal rows, row, cell, inside, in_body
            if tag == "table" and dict(attrs).get("class") == cls:
                inside, rows = True, []
            elif inside and tag == "tbody":
                in_body = True
            elif inside and in_body and tag == "tr":
                row = []
            elif inside and in_body and tag == "td":
                cell = []

        def handle_endtag(self, tag):
            nonlocal row, cell, inside, in_body
            if inside and tag == "td":
                row.append("".join(cell))
                cell = None
            elif inside and tag == "tr" and row is not None:
                rows.append(row)
                row = None
            elif inside and tag == "table":
                out.append(rows)
                inside, in_body = False, False

        def handle_data(self, data):
            if cell is not None:
                cell.append(data)

    P(convert_charrefs=True).feed(doc)
    return out


def test_the_html_report_is_one_self_contained_document(detail):
    doc = rv.experiment_report_html(detail)
    assert doc.startswith("<!DOCTYPE html>")
    parsed = parse(doc)
    scripts = [a for t, a in parsed.tags if t == "script"]
    assert scripts and all("src" not in a for a in scripts)  # plotly.js inline, nothing fetched
    assert not [a for t, a in parsed.tags if t == "link"]  # no external stylesheet
    assert [t for t, _ in parsed.tags].count("style") == 1
    assert "Plotly.newPlot" in doc and "plotly.js v" in doc  # the library itself is in the file
    assert doc.count('id="plotly.js"') <= 1
    text = " ".join(parsed.text)
    for expected in ("tiny-qwen3", "f00d", detail["result"]["version"], "new-domain-corpus.jsonl", "3 steps",
                     "mode cloze, 1 shot,", "old-facts", "new-facts"):
        assert expected in text, expected


def test_every_allocation_row_and_its_numbers_are_in_the_results_table(detail, result):
    doc = rv.experiment_report_html(detail)
    (table,) = rows_of_table(doc, "results")
    header, rows = rv.results_table(result)
    assert table == rows
    assert [r[0] for r in table] == ["base model", "train-shallow", LABEL]
    benches = result["spec"]["benchmarks"]
    assert [rv.bench_name(b) for b in benches] == ["old-facts", "new-facts"]
    by_alloc = {r["allocation"]: r for r in result["table"]}
    for row, alloc in zip(table, ["base", "train-shallow", "0-1,3"]):
        src = by_alloc[alloc]
        for i, b in enumerate(benches):
            acc = src["benchmarks"][b]
            cell = row[4 + 2 * i]
            assert cell.startswith(f"{acc['mean']:.3f}")
            if acc.get("ci_low") is not None:  # two seeds: the t-interval over seeds
                assert cell == f"{acc['mean']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}]"
            if alloc != "base":
                ch = src["change"][b]
                assert row[5 + 2 * i] == f"{ch['mean'] + 0.0:+.3f} [{ch['ci_low'] + 0.0:+.3f}, {ch['ci_high'] + 0.0:+.3f}]"
                assert ch["mean"] == pytest.approx(acc["mean"] - by_alloc["base"]["benchmarks"][b]["mean"])
        if alloc != "base":
            assert row[1] == src["ranges"]
            assert row[2].startswith(f"{100 * src['trainable_share']:.1f}%")
            assert row[3] == "1, 2"
            assert row[-1] == f"{src['tokens_per_s']['mean']:,.0f}"
            assert float(row[-2]) == pytest.approx(src["train_seconds"]["mean"], abs=0.01)
    assert by_alloc["train-shallow"]["trainable_share"] < by_alloc["0-1,3"]["trainable_share"]


def test_the_significance_rows_are_the_results_statistics(detail, result):
    doc = rv.experiment_report_html(detail)
    tables = rows_of_table(doc, "significance")
    benches = result["spec"]["benchmarks"]
    assert len(tables) == len(benches)
    names = {"base": "base model", "train-shallow": "train-shallow", "0-1,3": LABEL}
    for rows, b in zip(tables, benches):
        comparisons = result["statistics"][b]["comparisons"]
        assert len(rows) == len(comparisons) == 3  # every pair incl. the base model
        for row, c in zip(rows, comparisons):
            assert row[:4] == [names[c["a"]], names[c["b"]], f"{c['diff']:+.3f}", f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"]
            assert row[4:9] == [f"{c['mcnemar']['p_value']:.3g}", f"{c['mcnemar']['p_adjusted']:.3g}",
                                f"{c['permutation']['p_value']:.3g}", f"{c['permutation']['p_adjusted']:.3g}",
                                f"{c['bootstrap']['p_adjusted']:.3g}"]
            holm = [c[t]["p_adjusted"] for t in ("bootstrap", "mcnemar", "permutation")]
            assert row[9] == ("yes" if max(holm) < 0.05 else "no")
            assert c["mcnemar"]["p_adjusted"] >= c["mcnemar"]["p_value"]  # Holm never lowers a p-value


def test_significance_verdict_follows_holm():
    base = {"a": "x", "b": "y", "diff": 0.5, "ci_low": 0.2, "ci_high": 0.8}
    yes = {**base, **{t: {"p_value": 0.001, "p_adjusted": 0.01} for t in rv.TESTS}}
    assert rv.significant(yes)
    no = {**yes, "mcnemar": {"p_value": 0.01, "p_adjusted": 0.06}}  # raw p below 0.05, Holm above
    assert not rv.significant(no)
    result = {"spec": {"benchmarks": ["ceval:/w/b"], "allocations": ["x", "y"]},
              "table": [{"allocation": "base", "benchmarks": {"ceval:/w/b": {"mean": 0.1, "n": 1}}},
                        {"allocation": "x", "benchmarks": {"ceval:/w/b": {"mean": 0.9, "n": 1}}},
                        {"allocation": "y", "benchmarks": {"ceval:/w/b": {"mean": 0.4, "n": 1}}}],
              "statistics": {"ceval:/w/b": {"n_questions": 40, "comparisons": [yes]}}}
    text = " ".join(rv.findings(result))
    assert "On b, “x” has the highest mean accuracy" in text and "is significant at 0.05 after Holm" in text
    assert "one seed, so there is no interval over seeds" in text
    result["statistics"]["ceval:/w/b"]["comparisons"] = [no]
    assert "is not significant at 0.05 after Holm" in " ".join(rv.findings(result))


def test_user_text_is_escaped(detail):
    detail = {**detail, "name": "<b>bold</b> name", "model": {**detail["model"], "name": "<img src=x onerror=alert(1)>"}}
    doc = rv.experiment_report_html(detail)
    assert "<script>alert" not in doc and "<img src=x" not in doc and "<b>bold" not in doc
    assert html.escape(LABEL) in doc  # shown literally in the table
    assert "&lt;img src=x onerror=alert(1)&gt;" in doc
    parsed = parse(doc)
    assert not [a for t, a in parsed.tags if t == "img"]
    # plotly config, plotly.js and one per figure (the finding's scatter, the accuracy bars): nothing else
    assert len([a for t, a in parsed.tags if t == "script"]) == 4


def test_the_honest_paragraph_names_the_leader_and_its_significance(detail, result):
    findings = rv.findings(result)
    names = {"train-shallow": "train-shallow", "0-1,3": LABEL}
    for b in result["spec"]["benchmarks"]:
        means = {r["allocation"]: r["benchmarks"][b]["mean"] for r in result["table"] if r["allocation"] != "base"}
        top = max(means.values())
        leaders = [a for a, m in means.items() if abs(m - top) < 1e-12]
        assert rv.leaders(result)[b] == leaders
        sentence = next(s for s in findings if s.startswith(f"On {rv.bench_name(b)},"))
        assert all(f"“{names[a]}”" in sentence for a in leaders)
        assert f"({top:.3f}" in sentence
        if len(leaders) == 1:
            other = next(a for a in means if a != leaders[0])
            c = next(c for c in result["statistics"][b]["comparisons"] if {c["a"], c["b"]} == {leaders[0], other})
            verdict = "is significant" if rv.significant(c) else "is not significant"
            assert f"gainst “{names[other]}” the difference" in sentence
            assert verdict + " at 0.05 after Holm" in sentence.split(f"“{names[other]}” the difference", 1)[1]
    assert any("2 seeds" in s for s in findings)
    limits = " ".join(rv.limitations(detail))
    assert "4-layer model" in limits and "can neither confirm nor refute" in limits
    assert "single corpus" in limits and "cloze scoring" in limits and "demo world's generated facts" in limits
    doc = rv.experiment_report_html(detail)
    for s in findings + rv.limitations(detail):
        assert html.escape(s, quote=True) in doc or html.escape(s, quote=False) in doc


def test_one_seed_says_there_is_no_interval(detail, result):
    one = json.loads(json.dumps(result))
    for row in one["table"]:
        for s in list((row.get("benchmarks") or {}).values()) + list((row.get("change") or {}).values()):
            s.update(n=1, ci_low=None, ci_high=None)
    text = " ".join(rv.findings(one))
    assert "no interval over seeds" in text
    _, rows = rv.results_table(one)
    assert all("[" not in cell for row in rows for cell in row[4:8])


def test_the_figure_has_a_bar_per_allocation_and_benchmark_with_t_intervals(result):
    fig = rv.accuracy_figure(result)
    benches = result["spec"]["benchmarks"]
    assert [t.name for t in fig.data] == [rv.bench_name(b) for b in benches]
    assert list(fig.data[0].x) == ["base model", "train-shallow", html.escape(LABEL, quote=False)]
    for trace, b in zip(fig.data, benches):
        for i, row in enumerate(result["table"]):
            s = row["benchmarks"][b]
            assert trace.y[i] == pytest.approx(s["mean"])
            if s["ci_high"] is not None:
                assert trace.error_y.array[i] == pytest.approx(s["ci_high"] - s["mean"])


# -- the Dash page -----------------------------------------------------------------------------------------

@pytest.fixture()
def fake_api(monkeypatch):
    """The API as an httpx mock transport behind the real ApiClient: ``answers[path] = (status, body)``."""
    answers, seen = {}, []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status, body = answers.get(request.url.path, (404, {"detail": "not found"}))
        return httpx.Response(status, json=body)

    from frontend.components import api_url

    base = api_url()  # the latest app's API URL (another test module may have made its own app)
    monkeypatch.setitem(api_client._CLIENTS, base, httpx.Client(base_url=base, transport=httpx.MockTransport(handler)))
    return answers, seen


def test_the_report_page_is_routed_before_the_experiment_page():
    from dash._pages import _path_to_page

    page, variables = _path_to_page("experiments/e1/report")
    assert page["module"] == "frontend.pages.report" and variables == {"experiment_id": "e1"}
    page, variables = _path_to_page("experiments/e1")
    assert page["module"] == "frontend.pages.experiment" and variables == {"experiment_id": "e1"}


def test_the_page_renders_the_results_table(fake_api, detail, result):
    from frontend.pages import report as page

    answers, seen = fake_api
    answers["/api/v1/experiments/e1"] = (200, detail)
    layout = page.layout(experiment_id="e1", share="tok123")
    assert seen[-1].url.params.get("share") == "tok123"  # a shared view stays readable
    tbl = find(layout, "report-table")
    body = tbl.children[-1].children
    _, rows = rv.results_table(result)
    assert [[td.children for td in tr.children] for tr in body] == rows
    assert LABEL in text_of(tbl)  # Dash sets text, never HTML
    assert find(layout, "report-figure").figure.data
    assert "f00d" in text_of(find(layout, "report-provenance"))
    honest = text_of(find(layout, "report-honest"))
    assert all(s in honest for s in rv.findings(result))
    sig = find(layout, "report-significance")
    b = result["spec"]["benchmarks"][0]
    sig_table = find(sig, {"type": "report-significance", "bench": b})
    assert [[td.children for td in tr.children] for tr in sig_table.children[-1].children] == rv.significance_table(result, b)[1]
    assert find(layout, "report-back").href == "/experiments/e1?share=tok123"

    out, message = page.export(1, "e1", "tok123", None)
    assert out["filename"] == "layertracer-report-e1.html" and out["type"] == "text/html"
    assert out["content"] == rv.experiment_report_html(detail) and message == "Report downloaded."
    assert page.export(None, "e1", None, None) == (dash.no_update, dash.no_update)


def test_the_page_says_plainly_when_it_cannot_show_a_report(fake_api, detail):
    from frontend.pages import report as page

    answers, _ = fake_api
    answers["/api/v1/experiments/gone"] = (404, {"detail": "experiment gone not found"})
    text = text_of(page.layout(experiment_id="gone"))
    assert "The experiment could not be loaded" in text and "experiment gone not found (HTTP 404)" in text
    answers["/api/v1/experiments/e2"] = (200, {**detail, "id": "e2", "status": "running", "result": None})
    running = page.layout(experiment_id="e2")
    empty = find(running, "report-empty")
    assert "is still running" in text_of(empty)
    assert find(running, "report-back").href == "/experiments/e2"
    assert find(running, "report-export") is None
    answers["/api/v1/experiments/e3"] = (200, {**detail, "id": "e3", "status": "failed", "result": None})
    assert "failed; it has no results to report" in text_of(page.layout(experiment_id="e3"))
    assert "No experiment id" in text_of(page.layout())
    out, message = page.export(1, "gone", None, None)
    assert out is dash.no_update and "experiment gone not found" in message


def test_the_experiment_page_links_to_its_report(fake_api, detail):
    from frontend.pages import experiment as exp_page

    answers, _ = fake_api
    answers["/api/v1/experiments/e1"] = (200, detail)
    layout = exp_page.layout(experiment_id="e1", share="s1")
    assert find(layout, "exp-report-link").href == "/experiments/e1/report?share=s1"


def test_a_trial_with_one_allocation_and_one_seed(detail, result):
    """A trial: one allocation, one seed -> its row, the comparison with the base model only, no interval."""
    one = json.loads(json.dumps(result))
    one["spec"]["allocations"] = ["train-shallow"]
    one["spec"]["seeds"] = [1]
    one["table"] = [r for r in one["table"] if r["allocation"] in ("base", "train-shallow")]
    for row in one["table"]:
        row["seeds"] = [1] if row["allocation"] != "base" else row.get("seeds")
        for s in list((row.get("benchmarks") or {}).values()) + list((row.get("change") or {}).values()):
            s.update(n=1, ci_low=None, ci_high=None)
    for stats in one["statistics"].values():
        stats["comparisons"] = [c for c in stats["comparisons"] if {c["a"], c["b"]} == {"base", "train-shallow"}]
    trial = {**detail, "kind": "trial", "result": one, "spec": one["spec"]}
    doc = rv.experiment_report_html(trial)
    (table,) = rows_of_table(doc, "results")
    assert [r[0] for r in table] == ["base model", "train-shallow"]
    assert all(len(rows) == 1 for rows in rows_of_table(doc, "significance"))
    text = " ".join(rv.findings(one))
    assert "“train-shallow” has the highest mean accuracy" in text and "gainst “base model”" in text
    assert "no interval over seeds" in text
    assert "Trial e1" in doc


def test_benchmarks_are_named_by_their_folder_unless_two_share_it():
    assert rv.bench_name("ceval:/w/world/old-facts/") == "old-facts"
    assert rv.bench_name("cmmlu:data/cmmlu") == "cmmlu"
    among = ["ceval:/a/val", "cmmlu:/b/val", "ceval:/c/other"]
    assert [rv.bench_name(b, among) for b in among] == ["ceval:/a/val", "cmmlu:/b/val", "other"]
