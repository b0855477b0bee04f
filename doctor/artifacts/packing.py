"""Integer codes packed into int32 words, as GPTQ and AWQ checkpoints store them.

Codes of `bits` bits form one little-endian bit stream along the packed dimension: code j occupies bits
[j*bits, (j+1)*bits) of the stream and word w holds stream bits [32w, 32w+32). For 2, 4 and 8 bits this is
the familiar "value j sits in word j // (32/bits) at shift bits * (j % (32/bits))"; for 3 bits it is the
layout AutoGPTQ and GPTQModel write (ten codes per word, the eleventh split across the word boundary).
AWQ additionally interleaves the eight 4-bit codes of each word in the order 0, 2, 4, 6, 1, 3, 5, 7.
"""

from __future__ import annotations

import torch

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def _bit_matrix(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """(n, m) codes -> (n * bits, m) bits, code-major and least significant bit first."""
    shifts = torch.arange(bits, dtype=torch.int64)
    return ((codes.to(torch.int64).unsqueeze(1) >> shifts.view(1, -1, 1)) & 1).reshape(-1, codes.shape[1])


def pack_rows(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack (n, m) codes in [0, 2**bits) along dim 0 into (ceil(n * bits / 32), m) int32 words."""
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 2**bits):
        raise ValueError(f"codes must lie in [0, {2**bits}) for {bits} bits")
    stream = _bit_matrix(codes, bits)
    words = -(-stream.shape[0] // 32)
    stream = torch.cat([stream, stream.new_zeros(words * 32 - stream.shape[0], stream.shape[1])])
    weights = (torch.ones(32, dtype=torch.int64) << torch.arange(32)).view(1, 32, 1)
    packed = (stream.view(words, 32, -1) * weights).sum(1)
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def unpack_rows(words: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of `pack_rows`: (w, m) int32 words -> the first `n` codes along dim 0, as int64 (n, m)."""
    unsigned = words.to(torch.int64) & 0xFFFFFFFF
    stream = ((unsigned.unsqueeze(1) >> torch.arange(32).view(1, 32, 1)) & 1).reshape(-1, words.shape[1])
    if stream.shape[0] < n * bits:
        raise ValueError(f"{words.shape[0]} words hold fewer than {n} codes of {bits} bits")
    place = (torch.ones(bits, dtype=torch.int64) << torch.arange(bits)).view(1, bits, 1)
    return (stream[: n * bits].view(n, bits, -1) * place).sum(1)


def pack_columns(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack (n, m) codes along dim 1 into (n, ceil(m * bits / 32)) int32 words."""
    return pack_rows(codes.t(), bits).t().contiguous()


def unpack_columns(words: torch.Tensor, bits: int, m: int) -> torch.Tensor:
    return unpack_rows(words.t(), bits, m).t().contiguous()


def awq_interleave(codes: torch.Tensor) -> torch.Tensor:
    """Reorder each run of eight columns into AWQ's storage order (before packing 4-bit codes). A width that is
    not a multiple of eight is padded with zero codes (the reader drops them again)."""
    n, m = codes.shape
    padded = torch.cat([codes, codes.new_zeros(n, -m % 8)], dim=1)
    return padded.view(n, -1, 8)[:, :, list(AWQ_ORDER)].reshape(n, -1)


def awq_deinterleave(codes: torch.Tensor, m: int) -> torch.Tensor:
    """Inverse of `awq_interleave`: the first `m` columns in natural order."""
    n = codes.shape[0]
    inverse = [AWQ_ORDER.index(i) for i in range(8)]
    return codes.view(n, -1, 8)[:, :, inverse].reshape(n, -1)[:, :m]
