"""A tiny random Llama on SmolLM2's real tokenizer: fast enough to run the search loop many times."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tiny_guard():
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from eco_guard.guard import EcoGuard
    from eco_guard.models import smollm2_dir

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    return EcoGuard(model, tokenizer)
