"""Tiny random causal LMs of every supported architecture, built from explicit configs and saved
locally (no hub). Norm weights are randomised: a norm with weight 1 would hide a final norm applied
twice. The tokenizer is a byte-level BPE trained on the built-in task texts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

VOCAB = 384
HIDDEN = 32
LAYERS = 4

_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    num_hidden_layers=LAYERS,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=64,
    max_position_embeddings=256,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)


def _configs() -> dict[str, Callable[[], object]]:
    import transformers as T

    c = _COMMON
    return {
        "llama": lambda: T.LlamaConfig(**c),
        "mistral": lambda: T.MistralConfig(**c),
        "qwen2": lambda: T.Qwen2Config(**c),
        "qwen3": lambda: T.Qwen3Config(**c, head_dim=8),
        "qwen3_moe": lambda: T.Qwen3MoeConfig(
            **c, head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16
        ),
        "gemma2": lambda: T.Gemma2Config(**c, head_dim=8, final_logit_softcapping=5.0, sliding_window=8),
        "gemma3_text": lambda: T.Gemma3TextConfig(**c, head_dim=8, final_logit_softcapping=5.0, sliding_window=8),
        "phi3": lambda: T.Phi3Config(**c),
        "gpt2": lambda: T.GPT2Config(
            vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=4, n_positions=256, bos_token_id=1, eos_token_id=2
        ),
        "gpt_neox": lambda: T.GPTNeoXConfig(
            vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
        ),
        "opt": lambda: T.OPTConfig(
            vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=4, ffn_dim=64,
            word_embed_proj_dim=HIDDEN, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        ),
        "mamba": lambda: T.MambaConfig(
            vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, state_size=8, pad_token_id=0,
            bos_token_id=1, eos_token_id=2,
        ),
        "mamba2": lambda: T.Mamba2Config(
            vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, state_size=8, num_heads=4, head_dim=16,
            n_groups=1, expand=2, chunk_size=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        ),
        "qwen3_next": lambda: T.Qwen3NextConfig(
            **c, head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
            shared_expert_intermediate_size=16, linear_num_value_heads=4, linear_num_key_heads=2,
            linear_key_head_dim=8, linear_value_head_dim=8,
        ),
        "jamba": lambda: T.JambaConfig(
            **c, num_experts=2, expert_layer_period=2, expert_layer_offset=1, attn_layer_period=2,
            attn_layer_offset=1, mamba_d_state=8, use_mamba_kernels=False,  # CPU: no CUDA kernels (5.0 asks)
        ),
        "bamba": lambda: T.BambaConfig(
            **c, attn_layer_indices=[1, 3], mamba_n_heads=4, mamba_d_head=16, mamba_d_state=8, mamba_chunk_size=16
        ),
    }


ARCHITECTURES = tuple(_configs())


def build_tokenizer(vocab_size: int = VOCAB):
    """A byte-level BPE (as a transformers fast tokenizer) trained on the built-in task texts."""
    from layertracer.demo.tokenizer import train_tokenizer
    from layertracer.tasks.sets import iter_texts, load_tasks

    return train_tokenizer(iter_texts(load_tasks("all", shots=0)), vocab_size)


def randomize_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every norm weight (and bias) random values, so a doubled final norm shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "ln_" in name or ".ln" in name:
                param.copy_(1.0 + 0.5 * torch.randn(param.shape, generator=generator))


def build_model(arch: str, seed: int = 0) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_configs()[arch]())
    randomize_norms(model, seed)
    return model.eval()


def save_tiny_model(arch: str, folder: Path, tokenizer=None, seed: int = 0) -> Path:
    """Build ``arch`` and save it with a tokenizer (safetensors) in ``folder``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    model = build_model(arch, seed)
    model.save_pretrained(folder)
    (tokenizer or build_tokenizer()).save_pretrained(folder)
    return folder
