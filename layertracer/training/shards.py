"""Corpora that stream: documents are read one at a time, tokenized once into a token file on disk, and
trained on through a memory map, so a billion-token corpus costs disk, not memory.

A prepared corpus lives in ``<cache>/<key>/``, where the key is a fingerprint of the corpus files (name,
size, modification time, the first and last MiB), of the tokenizer (its whole serialised state) and of
the settings below; any change gives a new key, so a stale cache is never reused:

- ``tokens.bin``: the token stream, every document followed by EOS, as little-endian uint16 when every
  id fits (vocabularies up to 65,536) and uint32 otherwise;
- ``index.json``: ``{"format", "key", "dtype", "tokens", "documents", "files", "tokenizer", "eos",
  "seconds"}``; written last, so a folder without it is never read.

The first process to take the key's file lock tokenizes (with several ranks that is whichever comes
first, usually rank 0); the others wait on the lock and then map the finished file. A process that dies
while tokenizing releases the lock and leaves only a temp folder, which the next one removes.

Tokenizing is parallel through the tokenizers library's own thread pool (a fast tokenizer encodes a
batch over every core, unless ``TOKENIZERS_PARALLELISM=false``), not worker processes: no start-up, no
copy of the tokenizer per process and nothing pickled between processes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from layertracer.training.corpus import CorpusError, corpus_files, iter_documents

FORMAT = 1  # bump when the layout or the tokenization rule changes: every old cache is then rebuilt
CACHE_ENV = "LAYERTRACER_CORPUS_CACHE"
BATCH_CHARS = 1 << 20  # text per tokenizer call: bounds memory, and is plenty for its threads
SAMPLE_BYTES = 1 << 20  # how much of each file's head and tail goes into its fingerprint

Progress = Callable[[int, int], None]  # (bytes read, bytes in all)


def default_cache_dir() -> Path:
    """Where prepared corpora live: ``$LAYERTRACER_CORPUS_CACHE``, else ``$XDG_CACHE_HOME/layertracer/
    corpora`` (``~/.cache/layertracer/corpora``). The service points it into its data folder."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "layertracer" / "corpora"


def _file_fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(SAMPLE_BYTES))
        if stat.st_size > 2 * SAMPLE_BYTES:
            handle.seek(-SAMPLE_BYTES, os.SEEK_END)
            digest.update(handle.read(SAMPLE_BYTES))
    return {"name": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sample_sha256": digest.hexdigest()}


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the tokenizer's whole state: the fast tokenizer's JSON (vocabulary, merges, normaliser,
    pre-tokenizer, added tokens), else its class, vocabulary and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = backend.to_str()
    else:
        state = json.dumps({"class": type(tokenizer).__name__, "vocab": tokenizer.get_vocab(),
                            "special": getattr(tokenizer, "special_tokens_map", {})}, sort_keys=True)
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def _token_dtype(tokenizer: Any) -> np.dtype:
    size = max(len(tokenizer), int(getattr(tokenizer, "vocab_size", 0) or 0))
    return np.dtype("<u2") if size <= 1 << 16 else np.dtype("<u4")


class TokenBlocks:
    """A (num_blocks, block_size) view of a token stream on disk, indexed like a tensor.

    Row ``r`` is block ``rows[r]`` of the stream (block ``b`` = tokens ``b*T .. (b+1)*T``; the tail short
    of a block is dropped). Indexing with an int, a slice, a list or a 1-D tensor reads only those
    blocks and returns int64 token ids, (T,) or (n, T). ``key`` names the prepared corpus.
    """

    ndim = 2

    def __init__(self, tokens: np.ndarray, block_size: int, key: str, rows: Optional[np.ndarray] = None) -> None:
        self._tokens = tokens
        self.block_size = block_size
        self.key = key
        self._rows = np.arange(len(tokens) // block_size) if rows is None else rows

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self._rows), self.block_size)

    def __len__(self) -> int:
        return len(self._rows)

    def select(self, rows: Sequence[int] | torch.Tensor | np.ndarray) -> "TokenBlocks":
        """The blocks at ``rows`` of this view, as a view (nothing read)."""
        picked = self._rows[np.asarray(rows, dtype=np.int64)]
        return TokenBlocks(self._tokens, self.block_size, self.key, picked)

    def __getitem__(self, index: int | slice | Sequence[int] | torch.Tensor) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            return self[[int(index)]][0]
        blocks = self._rows[index] if isinstance(index, slice) else self._rows[np.asarray(index, dtype=np.int64)]
        size = self.block_size
        out = np.empty((len(blocks), size), dtype=np.int64)
        for row, block in enumerate(blocks.tolist()):
            out[row] = self._tokens[block * size : (block + 1) * size]
        return torch.from_numpy(out)


@dataclass
class TokenStream:
    """A prepared corpus: ``tokens`` is the (N,) memory-mapped stream; ``index`` its index.json."""

    folder: Path
    tokens: np.ndarray
    index: dict[str, Any]

    @property
    def key(self) -> str:
        return self.index["key"]

    def blocks(self, block_size: int) -> TokenBlocks:
        """The stream cut into blocks of ``block_size`` tokens; CorpusError if not even one fits."""
        if len(self.tokens) < block_size:
            raise CorpusError(f"the corpus has {len(self.tokens)} tokens, fewer than one block of {block_size}")
        return TokenBlocks(self.tokens, block_size, self.key)


def _open(folder: Path, key: str) -> Optional[TokenStream]:
    """The prepared corpus in ``folder``, or None when it is absent, of another format or damaged."""
    try:
        index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        dtype = np.dtype(index["dtype"])
        size = (folder / "tokens.bin").stat().st_size
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if index.get("format") != FORMAT or index.get("key") != key or size != index["tokens"] * dtype.itemsize:
        return None
    tokens = np.memmap(folder / "tokens.bin", dtype=dtype, mode="r") if size else np.empty(0, dtype)
    return TokenStream(folder, tokens, index)


def _write_stream(files: list[Path], tokenizer: Any, temp: Path, dtype: np.dtype,
                  progress: Optional[Progress]) -> tuple[int, int]:
    """Tokenize ``files`` into ``temp / tokens.bin``; returns (tokens, documents)."""
    eos = tokenizer.eos_token_id
    limit = np.iinfo(dtype).max
    total_bytes = sum(f.stat().st_size for f in files)
    tokens = documents = 0
    with open(temp / "tokens.bin", "wb") as out:

        def flush(batch: list[str]) -> None:
            nonlocal tokens, documents
            ids = tokenizer(batch, add_special_tokens=False)["input_ids"]
            size = sum(len(x) for x in ids) + (len(ids) if eos is not None else 0)
            chunk = np.empty(size, dtype=np.int64)
            at = 0
            for document in ids:
                chunk[at : at + len(document)] = document
                at += len(document)
                if eos is not None:
                    chunk[at] = eos
                    at += 1
            if size and int(chunk.max()) > limit:
                raise CorpusError(f"token id {int(chunk.max())} does not fit the cache's {dtype.name}")
            out.write(chunk.astype(dtype).tobytes())
            tokens += size
            documents += len(ids)

        batch: list[str] = []
        chars = 0
        for text, read in iter_documents(files):
            batch.append(text)
            chars += len(text)
            if chars >= BATCH_CHARS:
                flush(batch)
                batch, chars = [], 0
                if progress is not None:
                    progress(read, total_bytes)
        if batch:
            flush(batch)
        if progress is not None:
            progress(total_bytes, total_bytes)
    return tokens, documents


def prepare_corpus(source: str | Path, tokenizer: Any, *, cache_dir: str | Path | None = None,
                   progress: Optional[Progress] = None) -> TokenStream:
    """The corpus at ``source`` (a .txt/.jsonl/.parquet file or a folder of them; see
    ``corpus.corpus_files``) tokenized with ``tokenizer``, from the cache when it is there, else
    tokenized now, streaming, into ``cache_dir`` (default ``default_cache_dir()``). ``progress`` is
    called with (bytes read, bytes in all) while tokenizing. Raises CorpusError naming the file and the
    line or byte for unreadable input, and saying how much space is needed when the disk is full."""
    from filelock import FileLock

    files = corpus_files(source)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    described = {"format": FORMAT, "files": [_file_fingerprint(f) for f in files],
                 "tokenizer": tokenizer_fingerprint(tokenizer), "eos": tokenizer.eos_token_id}
    key = hashlib.sha256(json.dumps(described, sort_keys=True).encode("utf-8")).hexdigest()[:24]
    folder = cache / key
    found = _open(folder, key)
    if found is not None:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f"{key}.lock")):
        found = _open(folder, key)  # another process may have prepared it while this one waited
        if found is not None:
            return found
        for stale in cache.glob(f"{key}.tmp-*"):  # left by a process that died; the lock is ours
            shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)  # damaged or of an older format: rebuilt, never reused
        temp = cache / f"{key}.tmp-{os.getpid()}"
        temp.mkdir()
        dtype = _token_dtype(tokenizer)
        started = time.perf_counter()
        try:
            tokens, documents = _write_stream(files, tokenizer, temp, dtype, progress)
            if tokens == 0:
                raise CorpusError(f"corpus {str(source)!r} is empty")
            index = {**described, "key": key, "dtype": dtype.str, "tokens": tokens, "documents": documents,
                     "seconds": round(time.perf_counter() - started, 3)}
            (temp / "index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
            os.replace(temp, folder)
        except OSError as exc:
            shutil.rmtree(temp, ignore_errors=True)
            if exc.errno == errno.ENOSPC:
                need = sum(f["size"] for f in described["files"]) * dtype.itemsize // 3
                raise CorpusError(
                    f"the disk under {cache} is full while tokenizing {str(source)!r} (the tokens need about "
                    f"{need / 2**20:.0f} MiB): free space there or set {CACHE_ENV} to a larger disk"
                ) from None
            raise
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    found = _open(folder, key)
    if found is None:  # pragma: no cover - written and renamed above
        raise CorpusError(f"the prepared corpus in {folder} could not be read back")
    return found
