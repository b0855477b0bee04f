"""Prior-quantization detection: every GGUF block layout, the tool's own RTN, and float weights (none)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from doctor.history import detect_history, fit_grid

gguf = pytest.importorskip("gguf", reason="the gguf extra is not installed")
T = gguf.GGMLQuantizationType

SYM, FLOAT = "symmetric", "float offset"
# (GGML type, bits, group of inputs sharing one scale, scheme)
BLOCK_LAYOUTS = [("Q4_0", 4, 32, SYM), ("Q4_1", 4, 32, FLOAT), ("Q5_0", 5, 32, SYM), ("Q5_1", 5, 32, FLOAT),
                 ("Q8_0", 8, 32, SYM)]
# k-quants: the python package dequantizes but does not quantize them, so random blocks with sane scales
# (fp16 fields at these byte offsets) stand in for quantized weights
K_LAYOUTS = [("Q2_K", 2, 16, False, (80, 82)), ("Q3_K", 3, 16, True, (108,)), ("Q4_K", 4, 32, False, (0, 2)),
             ("Q5_K", 5, 32, False, (0, 2)), ("Q6_K", 6, 16, True, (208,))]


def float_weight(rows=64, cols=256, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((rows, cols)) * 0.02).astype(np.float32)


@pytest.mark.parametrize(("name", "bits", "group", "scheme"), BLOCK_LAYOUTS)
def test_gguf_blocks_are_found_with_bits_group_and_scheme(name, bits, group, scheme):
    w = float_weight()
    deq = gguf.quants.dequantize(gguf.quants.quantize(w, T[name]), T[name])
    fit = fit_grid(torch.from_numpy(deq))
    assert (fit.bits, fit.group_size, fit.scheme) == (bits, group, scheme)
    assert max(fit.levels) <= 2**bits and fit.share >= 0.98


def _k_blocks(name: str, offsets: tuple[int, ...], rows=32, cols=512, seed=0) -> np.ndarray:
    block, size = gguf.constants.GGML_QUANT_SIZES[T[name]]
    raw = np.random.default_rng(seed).integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    for off in offsets:
        raw[..., off:off + 2] = np.frombuffer(np.float16(0.01).tobytes(), dtype=np.uint8)
    return gguf.quants.dequantize(raw.reshape(rows, -1), T[name])


@pytest.mark.parametrize(("name", "bits", "group", "symmetric", "offsets"), K_LAYOUTS)
def test_k_quant_sub_blocks_are_found(name, bits, group, symmetric, offsets):
    deq = _k_blocks(name, offsets)
    fit = fit_grid(torch.from_numpy(deq))
    assert (fit.bits, fit.group_size) == (bits, group)
    if symmetric:  # asymmetric k-quants subtract a min that random blocks may set to a multiple of the step
        assert fit.scheme == SYM


@pytest.mark.parametrize(("bits", "group", "symmetric"), [(3, 64, False), (4, 128, True), (8, None, True),
                                                          (2, 16, False)])
def test_rtn_of_this_tool_is_found(bits, group, symmetric):
    from doctor.compress.quantizer import quantize_rtn

    w = torch.from_numpy(float_weight(cols=512))
    fit = fit_grid(quantize_rtn(w, bits, group, symmetric))
    assert fit.bits == bits and fit.group_size == (group or 512)
    assert fit.scheme == SYM if symmetric else fit.scheme in (SYM, "integer zero point")  # zero is on the grid


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_float_weights_have_no_history(dtype):
    for seed in range(3):
        assert fit_grid(torch.from_numpy(float_weight(seed=seed)).to(dtype)).group_size is None


def test_a_half_precision_copy_of_a_grid_is_still_found():
    deq = gguf.quants.dequantize(gguf.quants.quantize(float_weight(), T.Q4_1), T.Q4_1)
    fit = fit_grid(torch.from_numpy(deq).half())
    assert (fit.bits, fit.group_size) == (4, 32)


def test_model_scan_names_layers_layouts_and_histogram(tiny_llama):
    from doctor.compress.quantizer import quantize_rtn

    model = tiny_llama.model
    assert detect_history(model).layouts == []  # random init: nothing found
    with torch.no_grad():
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.mlp.up_proj):
                proj.weight.copy_(quantize_rtn(proj.weight, 4, 32, False))
    history = detect_history(model)
    assert history.layouts[0]["bits"] == 4 and history.layouts[0]["group_size"] == 32
    assert history.on_grid == 4 and history.linears == 15 and history.layers == "0-1"
    assert 0 < max(int(k) for k in history.levels_per_group) <= 16
