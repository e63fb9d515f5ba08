"""Benchmark: corpora that stream (layertracer.training.shards) at 20M and 200M tokens.

For each size, a JSONL corpus is generated (seeded: Zipf-distributed words of a synthetic lexicon, 50
to 800 words a document) and tokenized with a byte-level BPE of 32,000 tokens trained here on its first
megabytes (no hub: the machine has none). Each phase runs in a fresh subprocess that reports its own
peak RSS (ru_maxrss):

- ``tokenize``: ``prepare_corpus`` with an empty cache (the tokenizers thread pool on every core);
  tokens per second, per core, and peak RSS. Target: under 1 GB at both sizes.
- ``reopen``: the same call again, a second run's start-up on the same corpus (the cache hit), timed
  inside the process and as a whole process. Target: under 2 s.
- ``train``: 10 steps of a small Qwen3-architecture model (2 layers, hidden 64, the corpus's 32,000
  vocabulary), batch 4 x 512 tokens, drawn from the memory-mapped blocks; peak RSS. Target: under 1 GB.
- ``in-memory`` (20M only, side by side): the old path, every document read and tokenized into one
  Python list (``corpus.read_texts`` + ``corpus.pack``), for the ratio.

    .venv/bin/python benchmarks/bench_corpus.py                    # 20M and 200M tokens
    .venv/bin/python benchmarks/bench_corpus.py --sizes 20 --keep /tmp/corpora
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORDS_PER_TOKEN = 0.89  # measured on this generator with the tokenizer below; only sizes the corpus

CHILD = r"""
import json, os, resource, sys, time
phase, corpus, cache, tokenizer_dir = sys.argv[1:5]
started = time.perf_counter()
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
out = {"phase": phase}
if phase in ("tokenize", "reopen"):
    from layertracer.training.shards import prepare_corpus
    t0 = time.perf_counter()
    stream = prepare_corpus(corpus, tokenizer, cache_dir=cache)
    out.update(seconds=time.perf_counter() - t0, tokens=len(stream.tokens), documents=stream.index["documents"],
               dtype=stream.tokens.dtype.name, disk_bytes=os.path.getsize(stream.folder / "tokens.bin"))
elif phase == "in-memory":
    from layertracer.training.corpus import pack, read_texts
    t0 = time.perf_counter()
    blocks = pack(tokenizer, read_texts(corpus), 512)
    out.update(seconds=time.perf_counter() - t0, tokens=blocks.numel())
elif phase == "train":
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config
    from layertracer.models import wrap_model
    from layertracer.training import TrainConfig, resolve_allocation, train
    from layertracer.training.shards import prepare_corpus
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024)
    loaded = wrap_model(AutoModelForCausalLM.from_config(config), tokenizer, source="bench:qwen3-small")
    blocks = prepare_corpus(corpus, tokenizer, cache_dir=cache).blocks(512)
    t0 = time.perf_counter()
    result = train(loaded, blocks, resolve_allocation("full", 2), TrainConfig(steps=10, batch_size=4, warmup_steps=2))
    out.update(seconds=time.perf_counter() - t0, blocks=len(blocks), last_loss=result.history[-1].loss)
out["process_seconds"] = time.perf_counter() - started
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def generate(path: Path, tokens: int, seed: int = 0) -> None:
    """A JSONL corpus of about ``tokens`` tokens: Zipf words over a 20,000-word synthetic lexicon."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lexicon = ["".join(rng.choice(letters, size=int(n))) for n in rng.integers(2, 10, size=20_000)]
    weights = 1.0 / np.arange(1, len(lexicon) + 1) ** 1.1
    weights /= weights.sum()
    words_left = int(tokens * WORDS_PER_TOKEN)
    with open(path, "w", encoding="utf-8") as handle:
        while words_left > 0:
            lengths = rng.integers(50, 800, size=2_000)
            ids = rng.choice(len(lexicon), size=int(lengths.sum()), p=weights)
            at = 0
            lines = []
            for length in lengths.tolist():
                lines.append(json.dumps({"text": " ".join(lexicon[i] for i in ids[at : at + length].tolist())}))
                at += length
            handle.write("\n".join(lines) + "\n")
            words_left -= at


def train_tokenizer(corpus: Path, folder: Path) -> None:
    from layertracer.demo.tokenizer import train_tokenizer as train_bpe

    def sample():
        with open(corpus, encoding="utf-8") as handle:
            for number, line in enumerate(handle):
                if number >= 4_000:
                    return
                yield json.loads(line)["text"]

    train_bpe(sample(), 32_000).save_pretrained(folder)


def run_child(phase: str, corpus: Path, cache: Path, tokenizer_dir: Path, parallel: bool = True) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "true" if parallel else "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    load = os.getloadavg()[0]  # the machine's load as the phase starts (its own work runs in the child)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, phase, str(corpus), str(cache), str(tokenizer_dir)],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{phase} failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["wall_seconds"] = wall
    out["load_before"] = load
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="20,200", help="corpus sizes in millions of tokens")
    parser.add_argument("--keep", type=Path, help="keep the generated corpora in this folder")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    root.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{cores} cores; corpora in {root}")
    rows = []
    try:
        for millions in [int(s) for s in args.sizes.split(",")]:
            corpus = root / f"corpus-{millions}M.jsonl"
            if not corpus.exists():
                t0 = time.perf_counter()
                generate(corpus, millions * 1_000_000)
                print(f"generated {corpus.name}: {corpus.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - t0:.0f} s")
            tokenizer_dir = root / "tokenizer"
            if not tokenizer_dir.exists():
                train_tokenizer(corpus, tokenizer_dir)
            cache = root / f"cache-{millions}M"
            shutil.rmtree(cache, ignore_errors=True)
            tok = run_child("tokenize", corpus, cache, tokenizer_dir)
            again = run_child("reopen", corpus, cache, tokenizer_dir)
            trained = run_child("train", corpus, cache, tokenizer_dir)
            row = {"millions": millions, "tokenize": tok, "reopen": again, "train": trained}
            if millions <= 20:
                row["in_memory"] = run_child("in-memory", corpus, cache, tokenizer_dir)
            rows.append(row)
            per_core = tok["tokens"] / tok["seconds"] / cores
            print(f"\n{millions}M requested: {tok['tokens']:,} tokens ({tok['dtype']}, {tok['disk_bytes'] / 2**20:.0f} MiB on disk), "
                  f"{tok['documents']:,} documents, corpus {corpus.stat().st_size / 2**20:.0f} MiB")
            print(f"  tokenize : {tok['seconds']:.1f} s, {tok['tokens'] / tok['seconds'] / 1e6:.2f} M tokens/s "
                  f"({per_core / 1e6:.2f} M/s per core), peak RSS {tok['peak_rss_mib']:.0f} MiB "
                  f"(load average {tok['load_before']:.1f} before)")
            print(f"  reopen   : {again['seconds'] * 1000:.1f} ms in process, {again['wall_seconds']:.2f} s whole process "
                  f"(imports included), peak RSS {again['peak_rss_mib']:.0f} MiB")
            print(f"  train    : 10 steps of 4 x 512 tokens over {trained['blocks']:,} blocks in {trained['seconds']:.1f} s, "
                  f"peak RSS {trained['peak_rss_mib']:.0f} MiB")
            if "in_memory" in row:
                mem = row["in_memory"]
                print(f"  in-memory: {mem['seconds']:.1f} s, peak RSS {mem['peak_rss_mib']:.0f} MiB "
                      f"({mem['peak_rss_mib'] / tok['peak_rss_mib']:.1f}x the streaming peak)")
        print("\n" + json.dumps(rows))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
