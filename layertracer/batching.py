"""Right-padded batches of token ids, shared by the tracer and the evaluator.

Batches are padded on the right and no attention mask is passed: in a causal model, padding after a
sequence's last token can never influence that token, and SSM blocks (which a left-padding mask would
not cover) stay exact too.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch


def pad_token_id(tokenizer) -> int:
    """The id padding uses: pad, else EOS, else UNK, else 0 (right padding is never read)."""
    for name in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


def right_pad(sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, T) right-padded with ``pad_id``, last (B,) index of each sequence's last token)."""
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.as_tensor(list(sequence), dtype=torch.long)
    last = torch.tensor([len(s) - 1 for s in sequences])
    return ids.to(device), last.to(device)


def context_length(model) -> Optional[int]:
    """The model's context in tokens from its config, or None when it has no limit (e.g. Mamba)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
