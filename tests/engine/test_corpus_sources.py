"""layertracer/spec/corpora.py: the grammar of hub dataset corpora, against huggingface_hub's own
validator (a repo id it refuses is refused here too)."""

from __future__ import annotations

import pytest
from huggingface_hub.utils import HFValidationError, validate_repo_id

from layertracer.spec.corpora import CorpusSourceError, HubDataset, is_hub_dataset, parse_hub_dataset


@pytest.mark.parametrize(("source", "expected"), [
    ("hf:acme/web", HubDataset("acme/web")),
    ("hf:acme/web:test", HubDataset("acme/web", split="test")),
    ("hf:acme/web@v2", HubDataset("acme/web", revision="v2")),
    ("hf:acme/web@" + "a" * 40 + ":validation", HubDataset("acme/web", revision="a" * 40, split="validation")),
    ("hf:wikitext", HubDataset("wikitext")),
])
def test_hub_dataset_ids_parse_and_print_back(source, expected):
    parsed = parse_hub_dataset(source)
    assert parsed == expected and str(parsed) == source and is_hub_dataset(source)


@pytest.mark.parametrize("repo", ["not a repo", "a//b", "-x/y", "x/y/z", "a" * 97])
def test_a_repo_id_the_hub_refuses_is_refused_in_one_line(repo):
    with pytest.raises(HFValidationError):
        validate_repo_id(repo)  # the hub's own rule, independent of ours
    with pytest.raises(CorpusSourceError, match="is not a hub dataset id") as caught:
        parse_hub_dataset(f"hf:{repo}")
    assert "\n" not in str(caught.value)


def test_local_paths_are_not_hub_datasets():
    assert not is_hub_dataset("/data/corpus.jsonl") and not is_hub_dataset("hf_corpus/")
    with pytest.raises(CorpusSourceError, match="a split is one name"):
        parse_hub_dataset("hf:acme/web:train/x")
