"""Training corpora: text files, JSONL (``text``), parquet, or a folder of them, tokenized with EOS and
packed into fixed-length blocks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from layertracer.errors import LayerTracerError

CORPUS_SUFFIXES = (".txt", ".jsonl", ".parquet")


class CorpusError(LayerTracerError):
    """The corpus is missing, empty or unreadable; the message names the file."""


def _read_jsonl(path: Path) -> Iterator[str]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise CorpusError(f"{path}:{number}: expected an object with a string 'text'")
        if text:
            yield text


def _read_parquet(path: Path) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CorpusError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(path, columns=["text"])
    except (OSError, ValueError, KeyError) as exc:
        raise CorpusError(f"{path}: cannot read a 'text' column ({exc})") from None
    for text in table.column("text").to_pylist():
        if isinstance(text, str) and text:
            yield text


def read_texts(source: str | Path) -> list[str]:
    """Documents of a corpus: a .txt file (the whole file is one document), a .jsonl file (``text`` per
    line), a .parquet file (``text`` column), or a folder holding any of these (sorted by name, not
    recursive). Raises CorpusError naming the file for anything missing, empty or unreadable."""
    path = Path(source)
    if not path.exists():
        raise CorpusError(f"corpus {str(source)!r} does not exist")
    files = sorted(p for p in path.iterdir() if p.suffix in CORPUS_SUFFIXES) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise CorpusError(f"corpus folder {str(source)!r} holds no .txt, .jsonl or .parquet files")
    texts: list[str] = []
    for file in files:
        if file.suffix == ".jsonl":
            texts.extend(_read_jsonl(file))
        elif file.suffix == ".parquet":
            texts.extend(_read_parquet(file))
        elif file.suffix == ".txt" or not path.is_dir():
            try:
                text = file.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise CorpusError(f"{file}: not UTF-8 text") from None
            except OSError as exc:
                raise CorpusError(f"{file}: cannot read ({exc.strerror})") from None
            if text.strip():
                texts.append(text)
    if not texts:
        raise CorpusError(f"corpus {str(source)!r} is empty")
    return texts


def pack(tokenizer: Any, texts: Sequence[str], block_size: int) -> torch.Tensor:
    """Tokenize each document, append EOS, concatenate and cut into blocks.

    Returns (num_blocks, block_size) int64; the incomplete tail is dropped. Raises CorpusError when the
    corpus holds fewer tokens than one block.
    """
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        if eos is not None:
            stream.append(eos)
    count = len(stream) // block_size
    if count == 0:
        raise CorpusError(f"the corpus has {len(stream)} tokens, fewer than one block of {block_size}")
    return torch.tensor(stream[: count * block_size], dtype=torch.long).view(count, block_size)


def load_corpus(source: str | Path, tokenizer: Any, block_size: int) -> torch.Tensor:
    """``read_texts`` then ``pack``: (num_blocks, block_size) token ids."""
    return pack(tokenizer, read_texts(source), block_size)
