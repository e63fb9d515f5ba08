"""Training corpora: text files, JSONL (``text``), parquet, or a folder of them, read one document at a
time; ``pack`` tokenizes documents in memory (small corpora, the demo), ``shards.prepare_corpus`` into a
cached token file (training)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from layertracer.errors import LayerTracerError
from layertracer.spec.corpora import CorpusSourceError, is_hub_dataset, parse_hub_dataset

CORPUS_SUFFIXES = (".txt", ".jsonl", ".parquet")


class CorpusError(LayerTracerError):
    """The corpus is missing, empty or unreadable; the message names the file."""


def _read_jsonl(path: Path) -> Iterator[tuple[str, int]]:
    """(text, bytes read so far in this file) per non-empty record, one line in memory at a time."""
    offset = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            at, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except UnicodeDecodeError:
                raise CorpusError(f"{path}:{number} (byte {at}): not UTF-8 text") from None
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{path}:{number} (byte {at + exc.pos}): invalid JSON ({exc.msg})") from None
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise CorpusError(f"{path}:{number} (byte {at}): expected an object with a string 'text'")
            if text:
                yield text, offset


def _read_parquet(path: Path) -> Iterator[tuple[str, int]]:
    """(text, approximate bytes read so far) per non-empty row, one row group in memory at a time."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CorpusError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    try:
        parquet = pq.ParquetFile(path)
        if "text" not in parquet.schema_arrow.names:
            raise KeyError("text")
        groups = parquet.num_row_groups
        size = path.stat().st_size
        for group in range(groups):
            column = parquet.read_row_group(group, columns=["text"]).column("text")
            read = size * (group + 1) // groups
            for text in column.to_pylist():
                if isinstance(text, str) and text:
                    yield text, read
    except (OSError, ValueError, KeyError) as exc:
        raise CorpusError(f"{path}: cannot read a 'text' column ({exc})") from None


def _read_text(path: Path) -> Iterator[tuple[str, int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path} (byte {exc.start}): not UTF-8 text") from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read ({exc.strerror})") from None
    if text.strip():
        yield text, path.stat().st_size


def hub_dataset_files(source: str) -> list[Path]:
    """The data files of a hub dataset ``hf:org/name[@revision][:split]`` (the grammar of
    ``layertracer.spec.corpora``), from the Hugging Face cache
    (downloaded into it first unless ``HF_HUB_OFFLINE`` is set): its .jsonl, .parquet and .txt files,
    those of ``split`` alone when given (a file or folder named after it, as the hub lays splits out:
    ``train.jsonl``, ``data/train-00000-of-00004.parquet``, ``train/part-0.jsonl``), else those of
    ``train`` when the dataset has one, else all. Read by this module's streaming readers, not
    converted to an Arrow copy first."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        dataset = parse_hub_dataset(source)
    except CorpusSourceError as exc:
        raise CorpusError(str(exc)) from None
    repo_id, revision, split = dataset.repo_id, dataset.revision, dataset.split
    try:
        folder = Path(snapshot_download(repo_id, repo_type="dataset", revision=revision or None,
                                        allow_patterns=[f"*{s}" for s in CORPUS_SUFFIXES]))
    except LocalEntryNotFoundError:
        raise CorpusError(
            f"dataset {repo_id}{'@' + revision if revision else ''} is not in the Hugging Face cache and the hub "
            f"cannot be reached (HF_HUB_OFFLINE?): fetch it where the hub is reachable with "
            f"'hf download --repo-type dataset {repo_id}', or point HF_HOME at a cache that has it"
        ) from None
    except Exception as exc:  # the hub's own errors: unknown repo, gated, bad revision
        raise CorpusError(f"dataset {repo_id}: {' '.join(str(exc).split())[:300]}") from None
    files = sorted(p for p in folder.rglob("*") if p.suffix in CORPUS_SUFFIXES and p.is_file())

    def in_split(path: Path, name: str) -> bool:
        parts = path.relative_to(folder).parts
        return any(part == name or part.split(".")[0] == name or part.startswith(f"{name}-") for part in parts)

    wanted = split or ("train" if any(in_split(f, "train") for f in files) else "")
    chosen = [f for f in files if in_split(f, wanted)] if wanted else files
    if not chosen:
        raise CorpusError(f"dataset {repo_id} has no .jsonl, .parquet or .txt files"
                          + (f" for split {wanted!r}" if wanted else ""))
    return chosen


def corpus_files(source: str | Path) -> list[Path]:
    """The files of a corpus: the file itself, the .txt/.jsonl/.parquet files of a folder (sorted by
    name, not recursive), or a hub dataset's (``hf:org/name[@revision][:split]``, see
    ``hub_dataset_files``). Raises CorpusError for a missing path or a folder without such files."""
    if is_hub_dataset(source):
        return hub_dataset_files(str(source))
    path = Path(source)
    if not path.exists():
        raise CorpusError(f"corpus {str(source)!r} does not exist")
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix in CORPUS_SUFFIXES and p.is_file())
    if not files:
        raise CorpusError(f"corpus folder {str(source)!r} holds no .txt, .jsonl or .parquet files")
    return files


def iter_documents(files: Sequence[Path]) -> Iterator[tuple[str, int]]:
    """Each document of ``files`` with the bytes read so far over all of them, streaming: a .jsonl file
    line by line (``text`` per line), a .parquet file row group by row group (``text`` column); any
    other file (.txt) is one document. Empty documents are skipped."""
    done = 0
    for file in files:
        reader = _read_jsonl if file.suffix == ".jsonl" else _read_parquet if file.suffix == ".parquet" else _read_text
        for text, read in reader(file):
            yield text, done + read
        done += file.stat().st_size


def read_texts(source: str | Path) -> list[str]:
    """Documents of a corpus in memory (``iter_documents`` over ``corpus_files``), for small corpora;
    training reads through ``shards.prepare_corpus``. Raises CorpusError naming the file for anything
    missing, empty or unreadable."""
    texts = [text for text, _ in iter_documents(corpus_files(source))]
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
