"""GGUF files written in tests with the `gguf` package's writer and quantizers, the way llama.cpp's converter lays
out a Llama model (tensor names, q/k row permutation, SentencePiece vocabulary); tensors whose rows do not split
into whole blocks stay F32, as llama.cpp's quantizer falls back for them."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (pairs of rotary halves interleaved per head)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _add(writer, name: str, data: np.ndarray, qtype) -> None:
    import gguf

    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    if data.ndim == 2 and qtype not in (gguf.GGMLQuantizationType.F32,) and data.shape[1] % block == 0:
        writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    else:
        writer.add_tensor(name, data.astype(np.float32))


def write_llama_gguf(model, tokenizer, path: Path, qtype_name: str) -> Path:
    """A llama-architecture GGUF of `model` (a transformers LlamaForCausalLM) with its weights in `qtype_name`."""
    import gguf

    qtype = gguf.GGMLQuantizationType[qtype_name]
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("stories260k")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(cfg.vocab_size)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([-float(i) for i in range(len(tokens))])
    writer.add_token_types([3 if t in ("<unk>", "<s>", "</s>") else 6 if t.startswith("<0x") else 1 for t in tokens])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        data = tensor.detach().float().numpy()
        if ".q_proj." in hf_name:
            data = _permute(data, cfg.num_attention_heads)
        elif ".k_proj." in hf_name:
            data = _permute(data, cfg.num_key_value_heads)
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        _add(writer, name, data, qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def requantize_gguf(source: Path, path: Path, qtype_name: str) -> Path:
    """A copy of the GGUF file `source` with every quantized tensor re-quantized to `qtype_name`."""
    import gguf

    qtype = gguf.GGMLQuantizationType[qtype_name]
    reader = gguf.GGUFReader(str(source))
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    writer = gguf.GGUFWriter(str(path), arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        value_type = field.types[0]
        if value_type == gguf.GGUFValueType.ARRAY:
            items = [field.contents(i) for i in range(len(field.data))] if hasattr(field, "contents") else None
            if items is None:
                items = [_scalar(field, i) for i in field.data]
            writer.add_array(key, items)
        else:
            writer.add_key_value(key, field.contents() if hasattr(field, "contents") else _scalar(field, field.data[0]),
                                 value_type)
    for tensor in reader.tensors:
        data = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        if tensor.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            writer.add_tensor(tensor.name, data.astype(np.float32))
        else:
            _add(writer, tensor.name, data.reshape(-1, data.shape[-1]) if data.ndim > 2 else data, qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _scalar(field, index: int):
    part = field.parts[index]
    if field.types[-1] == 8:  # STRING
        return bytes(part).decode("utf-8")
    return part.tolist()[0]
