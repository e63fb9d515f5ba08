"""The documentation keeps up with the code: every key of a real trace result is in docs/schemas.md,
every CLI command is in the README's table, and the docs' relative links resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import layertracer as lt

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = (REPO / "docs" / "schemas.md").read_text(encoding="utf-8")


def documented(key: str) -> bool:
    return f"`{key}`" in SCHEMAS


@pytest.fixture(scope="module")
def trace_json(saved_model):
    loaded = lt.load_model(str(saved_model("qwen3")), device="cpu", dtype="float32")
    return lt.trace(loaded, "antonyms_en", perturbations=["skip"], options=lt.TraceOptions(batch_size=4)).to_dict()


def test_every_trace_result_key_is_documented(trace_json):
    task = next(iter(trace_json["tasks"].values()))
    keys = set(trace_json) | set(task) | set(trace_json["sensitivity"]) | set(trace_json["freeze_plan"])
    keys |= set(trace_json["position_view"]) | set(trace_json["similarity"])
    assert sorted(k for k in keys if not documented(k)) == []


def test_every_cli_command_is_in_the_readme():
    from layertracer.cli import app

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    names = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]
    assert names and [n for n in names if f"`layertracer {n}" not in readme] == []


def test_relative_links_in_the_docs_resolve():
    broken = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)\)", page.read_text(encoding="utf-8")):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.name} -> {target}")
    assert broken == []
