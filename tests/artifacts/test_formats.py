"""Packed GPTQ/AWQ layouts and GGUF candidates read back to the weights they were written from."""

from __future__ import annotations

import pytest
import torch

from doctor.artifacts import awq_format, gptq_format
from doctor.artifacts.packing import (
    awq_deinterleave,
    awq_interleave,
    pack_columns,
    pack_rows,
    unpack_columns,
    unpack_rows,
)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_bit_stream_round_trip(bits):
    codes = torch.randint(0, 2**bits, (70, 9))
    packed = pack_rows(codes, bits)
    assert packed.dtype == torch.int32 and packed.shape == (-(-70 * bits // 32), 9)
    assert torch.equal(unpack_rows(packed, bits, 70), codes)
    assert torch.equal(unpack_columns(pack_columns(codes.t(), bits), bits, 70), codes.t())


def test_four_bit_words_hold_eight_codes_lowest_first():
    codes = torch.arange(8).view(8, 1)
    assert int(pack_rows(codes, 4)[0, 0]) == 0x76543210


def test_three_bit_layout_splits_the_eleventh_code_across_words():
    """AutoGPTQ's 3-bit packing: codes 0-9 in bits 0-29, code 10's low two bits at 30-31, its high bit in word 1."""
    codes = torch.zeros(32, 1, dtype=torch.int64)
    codes[10, 0] = 0b101
    words = pack_rows(codes, 3).to(torch.int64) & 0xFFFFFFFF
    assert int(words[0, 0]) >> 30 == 0b01 and int(words[1, 0]) & 1 == 1


def test_awq_interleave_order_and_padding():
    codes = torch.arange(8).view(1, 8)
    assert awq_interleave(codes).tolist() == [[0, 2, 4, 6, 1, 3, 5, 7]]
    ragged = torch.randint(0, 16, (3, 13))
    assert torch.equal(awq_deinterleave(awq_interleave(ragged), 13), ragged)


def test_gptq_dequantize_follows_g_idx_and_zero_offset():
    torch.manual_seed(0)
    codes = torch.randint(0, 16, (6, 64))
    scales = torch.rand(2, 6) + 0.5
    zeros = torch.randint(1, 16, (2, 6))
    g_idx = torch.randperm(64) % 2  # act-order: groups interleaved in storage order
    expected = (codes - zeros[g_idx].t()) * scales.half().float()[g_idx].t()
    for v2 in (False, True):
        packed = gptq_format.pack(codes, scales, zeros, g_idx, 4, v2=v2)
        assert torch.allclose(gptq_format.dequantize(packed, 4, v2=v2), expected)
    v1 = gptq_format.pack(codes, scales, zeros, g_idx, 4)
    assert not torch.allclose(gptq_format.dequantize(v1, 4, v2=True), expected)  # the offset matters


def test_gptq_v1_cannot_store_a_zero_point_of_zero():
    with pytest.raises(ValueError, match="gptq_v2"):
        gptq_format.pack(torch.zeros(2, 32, dtype=torch.int64), torch.ones(1, 2), torch.zeros(1, 2), torch.zeros(32), 4)


def test_awq_dequantize():
    torch.manual_seed(1)
    codes = torch.randint(0, 16, (16, 64))
    scales = torch.rand(2, 16) + 0.5
    zeros = torch.randint(0, 16, (2, 16))
    groups = torch.arange(64) // 32
    expected = (codes - zeros[groups].t()) * scales.half().float()[groups].t()
    assert torch.allclose(awq_format.dequantize(awq_format.pack(codes, scales, zeros), 32), expected)
