"""Corpus sources: one grammar for what ``--corpus`` (or a job's ``corpus``) names, torch-free so the
API checks it as the engine reads it.

A corpus is a local path (a .txt/.jsonl/.parquet file or a folder of them; the service confines it to
its roots) or a hub dataset ``hf:org/name[@revision][:split]``, read from the Hugging Face cache
(``layertracer.training.corpus.hub_dataset_files``). A hub dataset is not a path: the service does not
confine it, and a worker reads it through its own HF cache (``HF_HUB_OFFLINE`` honoured).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

HUB_DATASET_PREFIX = "hf:"
HUB_DATASET_FORM = "hf:org/name[@revision][:split]"


class CorpusSourceError(ValueError):
    """A corpus source that does not follow the grammar; the message is one line."""


@dataclass(frozen=True)
class HubDataset:
    """``hf:acme/web@v2:test`` -> repo_id ``acme/web``, revision ``v2`` (None: main), split ``test``
    (None: ``train`` when the dataset has one, else every file)."""

    repo_id: str
    revision: Optional[str] = None
    split: Optional[str] = None

    def __str__(self) -> str:
        return (f"{HUB_DATASET_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")
                + (f":{self.split}" if self.split else ""))


def is_hub_dataset(source: object) -> bool:
    """Whether ``source`` names a hub dataset (``hf:...``) rather than a local path."""
    return str(source).startswith(HUB_DATASET_PREFIX)


def parse_hub_dataset(source: str) -> HubDataset:
    """``hf:org/name[@revision][:split]`` -> HubDataset, the repo id checked by huggingface_hub's own
    validator; CorpusSourceError (one line) otherwise."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not is_hub_dataset(source):
        raise CorpusSourceError(f"{source!r} is not a hub dataset id: use {HUB_DATASET_FORM}")
    repo, _, split = source[len(HUB_DATASET_PREFIX):].partition(":")
    repo_id, _, revision = repo.partition("@")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise CorpusSourceError(f"{source!r} is not a hub dataset id: use {HUB_DATASET_FORM}") from None
    if ":" in split or "/" in split or (split and not split.strip()):
        raise CorpusSourceError(f"{source!r}: a split is one name (train, test, ...): use {HUB_DATASET_FORM}")
    return HubDataset(repo_id=repo_id, revision=revision or None, split=split or None)
