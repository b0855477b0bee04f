"""Tiny random models of every architecture family the adapters know, built from configs (no download).

Two layers, hidden 32-64, vocab 128, seed 0, float32: enough to exercise every layout at test speed.
"""

from __future__ import annotations

import torch

COMMON = {"vocab_size": 128, "num_hidden_layers": 2, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
          "tie_word_embeddings": False}
LLAMA_LIKE = {"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 256}

CONFIGS: dict[str, tuple[str, dict]] = {
    "gpt2": ("gpt2", {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 256}),
    "opt": ("opt", {"hidden_size": 64, "ffn_dim": 128, "num_attention_heads": 4, "word_embed_proj_dim": 64,
                    "max_position_embeddings": 256}),
    "llama": ("llama", LLAMA_LIKE),
    "mistral": ("mistral", LLAMA_LIKE),
    "qwen2": ("qwen2", LLAMA_LIKE),
    "gemma2": ("gemma2", {**LLAMA_LIKE, "head_dim": 16, "sliding_window": 32}),
    "phi3": ("phi3", {**LLAMA_LIKE, "original_max_position_embeddings": 256}),
    "gpt_neox": ("gpt_neox", {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                              "max_position_embeddings": 256}),
    "falcon": ("falcon", {"hidden_size": 64, "num_attention_heads": 4}),
    "mixtral": ("mixtral", {**LLAMA_LIKE, "intermediate_size": 64, "num_local_experts": 4, "num_experts_per_tok": 2}),
    "qwen2_moe": ("qwen2_moe", {**LLAMA_LIKE, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 64,
                                "num_experts": 4, "num_experts_per_tok": 2, "decoder_sparse_step": 1}),
    "mamba": ("mamba", {"hidden_size": 64, "state_size": 8, "expand": 2}),
    "jamba": ("jamba", {**LLAMA_LIKE, "num_experts": 4, "num_experts_per_tok": 2, "expert_layer_period": 2,
                        "expert_layer_offset": 1, "attn_layer_period": 2, "attn_layer_offset": 1, "mamba_d_state": 8,
                        "mamba_expand": 2}),
    "bamba": ("bamba", {**LLAMA_LIKE, "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_d_state": 8,
                        "attn_layer_indices": [1]}),
}


def tiny_model(arch: str, seed: int = 0) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, overrides = CONFIGS[arch]
    config = AutoConfig.for_model(model_type, **{**COMMON, **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    if arch == "gpt2":  # GPT-2 config names layers n_layer
        assert model.config.n_layer == 2
    return model
