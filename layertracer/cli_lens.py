"""The tuned lens on the command line: ``layertracer train-lens`` and the translators ``trace --lens
tuned`` reads (from ``--lens-file`` or the cache, ``layertracer.spec.lens``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from layertracer.cli_common import (
    JSON_OPTION,
    MODEL_HELP,
    REVISION_OPTION,
    Bar,
    err,
    fail,
    out,
    print_json,
    spec_option,
)
from layertracer.cli_trials import _CORPUS
from layertracer.spec.lens import LENS_KINDS, LensTrainingSpec, cached_file, default_cache_dir, train_hint
from layertracer.spec.trace_options import TraceOptionsSpec

HELD_OUT_BLOCKS = 256  # the held-out KL is reported over at most this many blocks (a few seconds)
LENS_OPTION = typer.Option(TraceOptionsSpec.model_fields["lens"].default, "--lens", help=(
    "logit, or tuned: read the layers through the model's tuned-lens translators (from --lens-file, else "
    "the cache $LAYERTRACER_TUNED_LENS_CACHE, default ~/.cache/layertracer/tuned-lens; `layertracer "
    "train-lens` makes them)."))
LENS_FILE_OPTION = typer.Option(None, "--lens-file", help="A translator file (safetensors) written by "
                                "`layertracer train-lens` for this model; implies nothing without --lens tuned.")


def check_lens_flags(lens: str, lens_file: Optional[Path]) -> None:
    """The flags' own checks, before any model is loaded (one line, exit 2)."""
    if lens not in LENS_KINDS:
        fail(f"--lens must be {' or '.join(LENS_KINDS)}, not {lens!r}")
    if lens_file is not None and lens != "tuned":
        fail("--lens-file is read by the tuned lens only: add --lens tuned")
    if lens_file is not None and not lens_file.is_file():
        fail(f"tuned-lens file {str(lens_file)!r} does not exist")


def translators_for(lens: str, lens_file: Optional[Path], loaded, model: str):
    """The translators ``trace`` needs for ``lens`` (None for the logit lens): ``lens_file``, else the
    cached file of the loaded model's fingerprint; a missing cache file is one line saying how to
    train one, a file for another model one line from ``tuned_lens.load`` (both exit 2)."""
    if lens != "tuned":
        return None
    from layertracer.tuned_lens import load

    path = lens_file
    if path is None:
        path = cached_file(loaded.info.fingerprint)
        if not path.is_file():
            fail(f"no tuned lens for this model ({loaded.info.fingerprint}) in {default_cache_dir()}: "
                 f"train one with `{train_hint(model)}`")
    translators = load(path, loaded.info.fingerprint)
    err.print(f"tuned lens: {path} (sha256 {translators.source['sha256'][:12]}…)", highlight=False)
    return translators


def train_lens(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    revision: Optional[str] = REVISION_OPTION,
    corpus: str = _CORPUS,
    out_path: Optional[Path] = typer.Option(None, "--out", "-o", help=(
        "Where to write the translators (safetensors; default: the cache, "
        "$LAYERTRACER_TUNED_LENS_CACHE/<model fingerprint>.safetensors, where `trace --lens tuned` looks).")),
    steps: int = spec_option(LensTrainingSpec, "steps", "--steps"),
    batch_size: int = spec_option(LensTrainingSpec, "batch_size", "--batch-size"),
    block_size: int = spec_option(LensTrainingSpec, "block_size", "--block-size"),
    lr: float = spec_option(LensTrainingSpec, "lr", "--lr"),
    holdout: float = spec_option(LensTrainingSpec, "holdout", "--holdout"),
    seed: int = spec_option(LensTrainingSpec, "seed", "--seed"),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto."),
    dtype: str = typer.Option("auto", help="float32, bfloat16, float16 or auto (bf16 on CUDA, fp32 on CPU)."),
    trust_remote_code: bool = typer.Option(False, help="Allow the model folder's own Python code to run."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train tuned-lens translators for a model on a corpus (the tuned-lens recipe: identity init, KL to
    the model's output, SGD-Nesterov with linear decay; the model stays frozen) and write them with the
    model's fingerprint. Prints the held-out KL of the logit lens and of the tuned lens per layer."""
    from layertracer.experiments.runner import split_blocks
    from layertracer.models.loading import load_model
    from layertracer.progress import report
    from layertracer.training.shards import prepare_corpus
    from layertracer.tuned_lens import Translators, held_out_kl, save, train_translators

    if out_path is not None and not out_path.parent.exists():
        fail(f"output folder {str(out_path.parent)!r} does not exist")
    with err.status(f"loading {model}"):
        loaded = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code, revision=revision)
    target = out_path or cached_file(loaded.info.fingerprint)
    with Bar() as progress:
        stream = prepare_corpus(corpus, loaded.tokenizer,
                                progress=lambda done, total: report(progress, "tokenize", done, total))
        train, held = split_blocks(stream.blocks(block_size), holdout, seed=seed)
        translators = train_translators(loaded, train, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                        on_step=lambda step, loss: report(progress, "train", step, steps))
    held = held if held is not None else train
    held = held.select(range(min(len(held), HELD_OUT_BLOCKS))) if hasattr(held, "select") else held[:HELD_OUT_BLOCKS]
    identity = Translators(translators.count, int(translators.weight.shape[1]))
    with err.status("held-out KL"):
        before, after = held_out_kl(loaded, identity, held, batch_size), held_out_kl(loaded, translators, held, batch_size)
    save(translators, target, loaded.info.fingerprint, metadata={
        "model": str(loaded.info.source), "corpus": str(corpus), "steps": str(steps), "batch_size": str(batch_size),
        "block_size": str(block_size), "lr": str(lr), "seed": str(seed), "train_blocks": str(len(train)),
        "held_out_blocks": str(len(held)),
    })
    if as_json:
        print_json({"out": str(target), "fingerprint": loaded.info.fingerprint, "held_out_kl_logit": before,
                    "held_out_kl_tuned": after})
    else:
        out.print("held-out KL to the model's output (nats), state: logit lens → tuned lens", highlight=False)
        for index, (a, b) in enumerate(zip(before, after)):
            name = "embedding" if index == 0 else f"block {index - 1}"
            out.print(f"  {name:<10} {a:8.4f} → {b:8.4f}", highlight=False)
    err.print(f"wrote {target}", highlight=False)
