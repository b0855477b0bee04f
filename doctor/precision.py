"""`--dtype auto`: bfloat16 where the hardware computes it fast and the first window shows it changes nothing.

bf16 halves memory traffic and, with AMX or AVX512-BF16 on a CPU or bf16 tensor cores on a GPU, runs its
matrix products several times faster than float32. Its 8-bit mantissa can still move a model's perplexity,
so the choice is checked: the first evaluation window in float32 and in bf16 must agree within `BF16_BOUND`
(relative perplexity), or the examination stays in float32. The decision and its numbers go in the report.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import torch

log = logging.getLogger(__name__)
BF16_BOUND = 0.01  # |PPL_bf16 / PPL_fp32 - 1| on the first window; bf16 rounding typically moves it ~0.1%
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        text = path.read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def bf16_is_fast(device: str, flags: set[str] | None = None) -> tuple[bool, str]:
    """Whether bf16 matrix products run natively on `device`, with the reason in words."""
    if device.startswith("cuda"):
        major, minor = torch.cuda.get_device_capability()
        if major >= 8:
            return True, f"GPU compute capability {major}.{minor} has bf16 tensor cores"
        return False, f"GPU compute capability {major}.{minor} has no bf16 tensor cores"
    found = [f for f in CPU_BF16_FLAGS if f in (flags if flags is not None else cpu_flags())]
    if found:
        return True, f"CPU supports {' and '.join(found)}"
    return False, "CPU has neither AMX-BF16 nor AVX512-BF16 (bf16 would be emulated, slower than float32)"


def _window_ppl(model: torch.nn.Module, window: torch.Tensor) -> float:
    from doctor.backends.torch_backend import TorchBackend
    from doctor.evaluation import baseline_pass

    result, _ = baseline_pass(TorchBackend(model), window, model.config.vocab_size, batch_size=1)
    return math.exp(float(result.nll.mean()))


def choose_dtype(patient, window: torch.Tensor, device: str, flags: set[str] | None = None) -> dict:
    """Switch `patient` to bf16 when fast and within the bound on `window` (1 x seq_len); return the record."""
    fast, reason = bf16_is_fast(device, flags)
    record = {"requested": "auto", "chosen": "float32", "reason": reason, "bound": BF16_BOUND}
    if not fast:
        return record
    current = next(patient.model.parameters()).dtype
    if current != torch.float32:
        record.update(chosen=str(current).removeprefix("torch."), reason=f"model already loaded in {current}")
        return record
    ppl32 = _window_ppl(patient.model, window)
    candidate = copy.deepcopy(patient.model).to(torch.bfloat16)
    ppl16 = _window_ppl(candidate, window)
    change = ppl16 / ppl32 - 1.0
    record.update(fp32_ppl=ppl32, bf16_ppl=ppl16, relative_change=change, window_tokens=int(window.shape[1]))
    if abs(change) <= BF16_BOUND:
        patient.model = candidate
        patient.facts.dtype = "bfloat16"
        record.update(chosen="bfloat16", reason=f"{reason}; first-window perplexity within {BF16_BOUND:.0%} of float32")
    else:
        record["reason"] = f"{reason}, but bf16 moved the first-window perplexity by {change:+.2%} (bound {BF16_BOUND:.0%})"
        del candidate
    log.info("dtype auto: %s (%s)", record["chosen"], record["reason"])
    return record
