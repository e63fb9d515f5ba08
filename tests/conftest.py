"""Shared fixtures: the tiny-model factory on sys.path, one tokenizer per session, saved model folders."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(TESTS))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# Tokenized corpora go to a folder of this run, never the user's ~/.cache (subprocesses inherit it).
os.environ.setdefault("LAYERTRACER_CORPUS_CACHE", tempfile.mkdtemp(prefix="layertracer-corpora-"))

import tiny_models  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_models.build_tokenizer()


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory, tokenizer):
    """A function arch -> folder of a saved tiny model (built once per session and arch)."""
    folders: dict[str, Path] = {}

    def get(arch: str = "qwen3") -> Path:
        if arch not in folders:
            folder = tmp_path_factory.mktemp(f"model-{arch}")
            folders[arch] = tiny_models.save_tiny_model(arch, folder, tokenizer)
        return folders[arch]

    return get


@pytest.fixture
def cli(capsys):
    """Run the ``layertracer`` CLI in-process: cli(*args) -> (exit code, stdout, stderr) of that call."""
    from layertracer.cli import main

    def run(*args: str):
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
