"""Corpora that stream (layertracer.training.shards): the token file on disk against a straightforward
tokenization in the test, the cache key's invalidation, concurrent preparation, and training on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from layertracer.training.corpus import CorpusError
from layertracer.training.shards import TokenBlocks, prepare_corpus

REPO = Path(__file__).resolve().parents[2]


def _expected_stream(tokenizer, documents: list[str]) -> list[int]:
    """The rule, written out: each document's ids (no special tokens), then EOS, all concatenated."""
    stream: list[int] = []
    for text in documents:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        stream.append(tokenizer.eos_token_id)
    return stream


def _mixed_corpus(folder: Path) -> list[str]:
    """A folder of .txt, .jsonl and a parquet file of three row groups; returns its documents in order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.txt").write_text("The capital of France is Paris.\nSecond line.", encoding="utf-8")
    lines = [f"fact {i}: the river {i} runs east" for i in range(40)]
    (folder / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in lines[:20]) + "\n"
                                    + "".join(json.dumps({"text": t}) + "\n" for t in lines[20:]), encoding="utf-8")
    rows = [f"parquet row {i} 一二三" for i in range(30)]
    pq.write_table(pa.table({"text": rows}), folder / "c.parquet", row_group_size=10)
    (folder / "notes.md").write_text("not a corpus file", encoding="utf-8")
    return ["The capital of France is Paris.\nSecond line.", *lines, *rows]


def test_token_file_matches_a_plain_tokenization(tmp_path, tokenizer):
    documents = _mixed_corpus(tmp_path / "corpus")
    reads = []
    stream = prepare_corpus(tmp_path / "corpus", tokenizer, cache_dir=tmp_path / "cache",
                            progress=lambda read, total: reads.append((read, total)))
    expected = _expected_stream(tokenizer, documents)
    assert stream.tokens.dtype == np.dtype("<u2")  # the test vocabulary fits 16 bits
    assert stream.tokens.tolist() == expected
    assert stream.index["documents"] == len(documents)
    stored = np.fromfile(stream.folder / "tokens.bin", dtype="<u2")
    assert stored.tolist() == expected
    total = sum(p.stat().st_size for p in (tmp_path / "corpus").iterdir() if p.suffix != ".md")
    assert reads[-1] == (total, total)
    # Blocks: the stream cut into rows of 16 tokens, the short tail dropped; rows read as int64.
    blocks = stream.blocks(16)
    whole = torch.tensor(expected[: len(expected) // 16 * 16]).view(-1, 16)
    assert blocks.shape == tuple(whole.shape) and len(blocks) == len(whole)
    torch.testing.assert_close(blocks[[3, 0, 5]], whole[[3, 0, 5]], rtol=0, atol=0)
    torch.testing.assert_close(blocks[2:5], whole[2:5], rtol=0, atol=0)
    torch.testing.assert_close(blocks[4], whole[4], rtol=0, atol=0)
    assert blocks[[1]].dtype == torch.long
    view = blocks.select(torch.tensor([5, 1, 2]))
    torch.testing.assert_close(view[[1, 0]], whole[[1, 5]], rtol=0, atol=0)
    assert len(view) == 3


def test_cache_is_reused_and_rebuilt_on_any_change(tmp_path, tokenizer, monkeypatch):
    from layertracer.training import shards

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"line {i} of the corpus"}) + "\n" for i in range(50)),
                      encoding="utf-8")
    cache = tmp_path / "cache"
    first = prepare_corpus(corpus, tokenizer, cache_dir=cache)
    built = []
    real = shards._write_stream
    monkeypatch.setattr(shards, "_write_stream", lambda *a: built.append(1) or real(*a))
    again = prepare_corpus(corpus, tokenizer, cache_dir=cache)
    assert again.key == first.key and not built  # a hit: nothing tokenized again

    # The same corpus under another tokenizer: another key, its own tokens.
    import tiny_models

    other_tokenizer = tiny_models.build_tokenizer(vocab_size=300)
    other = prepare_corpus(corpus, other_tokenizer, cache_dir=cache)
    assert other.key != first.key and built == [1]
    assert other.tokens.tolist() == _expected_stream(other_tokenizer, [f"line {i} of the corpus" for i in range(50)])

    # The file changed (same size, other text): a new key.
    text = corpus.read_text(encoding="utf-8").replace("line 7 ", "LINE 7 ")
    corpus.write_text(text, encoding="utf-8")
    changed = prepare_corpus(corpus, tokenizer, cache_dir=cache)
    assert changed.key != first.key and built == [1, 1]
    assert "LINE" in tokenizer.decode(changed.tokens.tolist())

    # A damaged token file (cut short) is rebuilt, never read.
    damaged = changed.folder / "tokens.bin"
    del changed
    with open(damaged, "r+b") as handle:
        handle.truncate(10)
    rebuilt = prepare_corpus(corpus, tokenizer, cache_dir=cache)
    assert built == [1, 1, 1] and len(rebuilt.tokens) * 2 == damaged.stat().st_size > 10
    assert not list(cache.glob("*.tmp-*"))


def test_wide_vocabulary_is_stored_in_32_bits(tmp_path):
    class WideTokenizer:
        """Ids above 65,535: one id per character."""

        eos_token_id = 70_000
        vocab_size = 100_000

        def __len__(self) -> int:
            return self.vocab_size

        def get_vocab(self) -> dict[str, int]:
            return {"wide": 1}

        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [[66_000 + ord(c) for c in text] for text in texts]}

    (tmp_path / "w.txt").write_text("abc", encoding="utf-8")
    stream = prepare_corpus(tmp_path / "w.txt", WideTokenizer(), cache_dir=tmp_path / "cache")
    assert stream.tokens.dtype == np.dtype("<u4")
    assert stream.tokens.tolist() == [66_097, 66_098, 66_099, 70_000]


def test_bad_input_names_file_line_and_byte(tmp_path, tokenizer):
    good = json.dumps({"text": "fine"}) + "\n"
    (tmp_path / "bad.jsonl").write_text(good + '{"text": "broken",,}\n', encoding="utf-8")
    # The second line starts after the first line's bytes; the JSON error is at its second comma.
    byte = len(good.encode()) + len('{"text": "broken",')
    with pytest.raises(CorpusError, match=rf"bad.jsonl:2 \(byte {byte}\): invalid JSON"):
        prepare_corpus(tmp_path / "bad.jsonl", tokenizer, cache_dir=tmp_path / "cache")
    (tmp_path / "latin.jsonl").write_bytes(good.encode() + b'{"text": "caf\xe9"}\n')
    with pytest.raises(CorpusError, match=rf"latin.jsonl:2 \(byte {len(good)}\): not UTF-8"):
        prepare_corpus(tmp_path / "latin.jsonl", tokenizer, cache_dir=tmp_path / "cache")
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="is empty"):
        prepare_corpus(tmp_path / "empty.jsonl", tokenizer, cache_dir=tmp_path / "cache")
    (tmp_path / "short.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(CorpusError, match="fewer than one block of 1000"):
        prepare_corpus(tmp_path / "short.txt", tokenizer, cache_dir=tmp_path / "cache").blocks(1000)
    assert not list((tmp_path / "cache").glob("*.tmp-*"))  # a failed build leaves nothing behind
    with pytest.raises(CorpusError, match="does not exist"):
        prepare_corpus(tmp_path / "missing", tokenizer, cache_dir=tmp_path / "cache")


def test_processes_preparing_at_once_build_once(tmp_path, tokenizer):
    """Two processes (as two ranks) prepare the same corpus at the same time: one tokenizes, the other
    waits on the lock and maps the same file; a temp folder left by a process that died is removed."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(400)),
                      encoding="utf-8")
    tokenizer_dir = tmp_path / "tokenizer"
    tokenizer.save_pretrained(tokenizer_dir)
    cache = tmp_path / "cache"
    first = prepare_corpus(corpus, tokenizer, cache_dir=tmp_path / "probe")  # only to learn the key
    cache.mkdir()
    (cache / f"{first.key}.tmp-999999").mkdir()  # a dead process's leftover
    script = (
        "import sys; from transformers import AutoTokenizer;"
        "from layertracer.training.shards import prepare_corpus;"
        f"s = prepare_corpus({str(corpus)!r}, AutoTokenizer.from_pretrained({str(tokenizer_dir)!r}),"
        f" cache_dir={str(cache)!r}); print(s.key, len(s.tokens), s.index['seconds'])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1]  # same key, token count and build (its recorded seconds): built once
    assert outs[0][:2] == [first.key, str(len(first.tokens))]
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.key, f"{first.key}.lock"])


def test_training_on_the_token_file_equals_training_in_memory(tmp_path, tokenizer):
    """The loop reads TokenBlocks exactly as the same blocks in a tensor: identical per-step losses."""
    import tiny_models
    from layertracer.models import load_model
    from layertracer.training import TrainConfig, resolve_allocation, train

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"the river {i} runs to the sea {i % 7}"}) + "\n"
                              for i in range(300)), encoding="utf-8")
    stream = prepare_corpus(corpus, tokenizer, cache_dir=tmp_path / "cache")
    on_disk = stream.blocks(16)
    assert isinstance(on_disk, TokenBlocks)
    in_memory = on_disk[0 : len(on_disk)]
    folder = tiny_models.save_tiny_model("qwen3", tmp_path / "model", tokenizer)
    config = TrainConfig(steps=4, batch_size=2, lr=1e-3, warmup_steps=0, seed=3)
    losses = []
    for blocks in (on_disk, in_memory):
        loaded = load_model(str(folder), device="cpu", dtype="float32")
        allocation = resolve_allocation("train-shallow", loaded.adapter.num_layers)
        result = train(loaded, blocks, allocation, config)
        losses.append([m.loss for m in result.history])
    assert losses[0] == losses[1]


def test_resuming_on_other_data_is_refused(tmp_path, tokenizer):
    import tiny_models
    from layertracer.errors import LayerTracerError
    from layertracer.models import load_model
    from layertracer.training import TrainConfig, resolve_allocation, train

    def corpus(name: str, words: str) -> TokenBlocks:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": f"{words} {i}"}) + "\n" for i in range(200)), encoding="utf-8")
        return prepare_corpus(path, tokenizer, cache_dir=tmp_path / "cache").blocks(16)

    folder = tiny_models.save_tiny_model("llama", tmp_path / "model", tokenizer)
    loaded = load_model(str(folder), device="cpu", dtype="float32")
    allocation = resolve_allocation("full", loaded.adapter.num_layers)
    first = corpus("a", "the cat sat on the mat")
    train(loaded, first, allocation, TrainConfig(steps=2, batch_size=2, checkpoint_every=2, seed=0),
          checkpoint_dir=tmp_path / "ckpt")
    state = json.loads((tmp_path / "ckpt" / "step-000002" / "state.json").read_text(encoding="utf-8"))
    assert state["data"] == {"corpus": first.key, "blocks": len(first), "samples": 4}
    other = corpus("b", "a different text entirely about rivers")
    fresh = load_model(str(folder), device="cpu", dtype="float32")
    untouched = {n: p.detach().clone() for n, p in fresh.model.named_parameters()}
    with pytest.raises(LayerTracerError, match="written on other data"):
        train(fresh, other, allocation, TrainConfig(steps=4, batch_size=2, checkpoint_every=2, seed=0),
              checkpoint_dir=tmp_path / "ckpt")
    # Refused before any weight of the checkpoint was loaded into the model.
    assert all(torch.equal(p, untouched[n]) for n, p in fresh.model.named_parameters())


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB filesystem (tmpfs; needs the right to mount, as root in CI here, else the test skips)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_one_clear_error_and_leaves_nothing(tmp_path, tokenizer, small_disk):
    corpus = tmp_path / "big.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"sentence number {i} about the weather"}) + "\n"
                              for i in range(20_000)), encoding="utf-8")
    with pytest.raises(CorpusError, match=r"the disk under .*small.cache is full .*MiB\): free space there or set "
                                          r"LAYERTRACER_CORPUS_CACHE"):
        prepare_corpus(corpus, tokenizer, cache_dir=small_disk / "cache")
    assert [p.name for p in (small_disk / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_a_hub_dataset_is_read_from_the_hub_cache_by_split_offline(tmp_path, tokenizer, monkeypatch):
    """hf:org/name[@revision][:split]: the dataset's files from a hub cache laid out on disk in the hub's
    own layout, with HF_HUB_OFFLINE=1; the split by the hub's file naming; one clear line when absent."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import hub_cache

    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    train = [f"training document {i} about rivers" for i in range(30)]
    test = [f"held-out document {i} about hills" for i in range(10)]
    pq.write_table(pa.table({"text": train[:15]}), repo / "data" / "train-00000-of-00002.parquet")
    pq.write_table(pa.table({"text": train[15:]}), repo / "data" / "train-00001-of-00002.parquet")
    (repo / "data" / "test-00000-of-00001.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in test), encoding="utf-8")
    (repo / "README.md").write_text("a dataset card", encoding="utf-8")
    commit = "c0ffee" + "0" * 34
    cache = tmp_path / "hub"
    hub_cache.lay_out(cache, "acme/river-corpus", repo, commit=commit, refs={"main": commit}, repo_type="dataset")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    store = tmp_path / "cache"
    assert prepare_corpus("hf:acme/river-corpus", tokenizer, cache_dir=store).tokens.tolist() == \
        _expected_stream(tokenizer, train)  # no split given: train
    assert prepare_corpus("hf:acme/river-corpus:test", tokenizer, cache_dir=store).tokens.tolist() == \
        _expected_stream(tokenizer, test)
    assert prepare_corpus(f"hf:acme/river-corpus@{commit}:train", tokenizer, cache_dir=store).tokens.tolist() == \
        _expected_stream(tokenizer, train)
    with pytest.raises(CorpusError, match="has no .jsonl, .parquet or .txt files for split 'validation'"):
        prepare_corpus("hf:acme/river-corpus:validation", tokenizer, cache_dir=store)
    with pytest.raises(CorpusError, match=r"dataset acme/absent is not in the Hugging Face cache .*hf download "
                                          r"--repo-type dataset acme/absent"):
        prepare_corpus("hf:acme/absent", tokenizer, cache_dir=store)
    with pytest.raises(CorpusError, match="is not a hub dataset id"):
        prepare_corpus("hf:not a repo", tokenizer, cache_dir=store)
