"""GPTQ- and AWQ-format checkpoints written in tests from a model the doctor quantized in memory.

The codes are recovered exactly when every group's grid was found on the unquantized weights: RTN, and GPTQ with
`static_groups` (upstream --static-groups). Scales are stored in float16, as both formats do.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from doctor.artifacts import awq_format, gptq_format
from doctor.compress.adapters import block_linears, decoder_layers
from doctor.compress.quantizer import find_params


def grid_codes(original: torch.Tensor, quantized: torch.Tensor, bits: int, group_size: int):
    """(codes (out, in), scales (groups, out), zeros (groups, out)) of `quantized` on the grids of `original`."""
    scales, zeros, codes = [], [], []
    for start in range(0, original.shape[1], group_size):
        cols = slice(start, start + group_size)
        scale, zero = find_params(original[:, cols].float(), bits, symmetric=False)
        code = torch.round(quantized[:, cols].float() / scale + zero).clamp_(0, 2**bits - 1)
        assert torch.allclose((code - zero) * scale, quantized[:, cols].float(), atol=1e-5), "not on the grid"
        scales.append(scale.flatten())
        zeros.append(zero.flatten())
        codes.append(code)
    return torch.cat(codes, 1).to(torch.int64), torch.stack(scales), torch.stack(zeros).to(torch.int64)


def write_packed(patient, original_state: dict, folder: Path, fmt: str, bits: int, group_size: int,
                 v2: bool = False) -> Path:
    """Save `patient.model` (already quantized in memory) as a packed `fmt` ('gptq' or 'awq') checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    model = patient.model
    tensors: dict[str, torch.Tensor] = {}
    packed_names = set()
    prefix_of = {id(m): n for n, m in model.named_modules()}
    for block in decoder_layers(model):
        for module in block_linears(block).values():
            prefix = prefix_of[id(module)]
            codes, scales, zeros = grid_codes(original_state[f"{prefix}.weight"], module.weight.detach(), bits, group_size)
            if fmt == "gptq":
                g_idx = torch.arange(codes.shape[1]) // group_size
                packed = gptq_format.pack(codes, scales, zeros, g_idx, bits, v2=v2)
                tensors.update({f"{prefix}.{k}": getattr(packed, k) for k in gptq_format.SUFFIXES})
            else:
                packed = awq_format.pack(codes, scales, zeros)
                tensors.update({f"{prefix}.{k}": getattr(packed, k) for k in awq_format.SUFFIXES})
            packed_names.add(f"{prefix}.weight")
    for name, param in model.state_dict().items():
        if name not in packed_names and not (name == "lm_head.weight" and model.config.tie_word_embeddings):
            tensors[name] = param.detach().clone().contiguous()
    save_file(tensors, str(folder / "model.safetensors"))
    config = model.config.to_dict()
    config["quantization_config"] = (
        {"quant_method": "gptq", "bits": bits, "group_size": group_size, "desc_act": False, "sym": False,
         "checkpoint_format": "gptq_v2" if v2 else "gptq"}
        if fmt == "gptq" else
        {"quant_method": "awq", "bits": bits, "group_size": group_size, "zero_point": True, "version": "gemm"}
    )
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=str))
    if patient.local_dir is not None:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            if (patient.local_dir / name).is_file():
                shutil.copy(patient.local_dir / name, folder / name)
    return folder


def write_compressed_tensors(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """The demo model with symmetric 4-bit per-channel weights, saved by compressed-tensors' own compressor in its
    pack-quantized format; also returns the fake-quantized weights it holds."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config

    from doctor.patient import load_patient

    model = load_patient(None).model
    config = QuantizationConfig(config_groups={"group_0": {"targets": ["Linear"], "weights": {
        "num_bits": 4, "type": "int", "symmetric": True, "strategy": "channel"}}}, ignore=["lm_head"])
    apply_quantization_config(model, config)
    expected = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "weight_scale"):
                scale = module.weight.abs().amax(dim=1, keepdim=True) / 7.5
                module.weight_scale.copy_(scale)
                if hasattr(module, "weight_zero_point"):
                    module.weight_zero_point.zero_()
                expected[f"{name}.weight"] = torch.clamp(torch.round(module.weight / scale), -8, 7) * scale
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="pack-quantized")
    compressor.compress_model(model)
    model.save_pretrained(folder)
    compressor.update_config(str(folder))
    return folder, expected
