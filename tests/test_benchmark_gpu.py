"""`python -m benchmarks.gpu` runs unchanged on a CPU, scaled down: the same code as on a GPU, tiny shapes."""

from __future__ import annotations

import torch

from benchmarks.gpu import LLAMA3_8B, bench_suite, measure
from doctor.spec.suites import load_suite


def test_gpu_benchmark_scaled_down_on_cpu():
    shapes = {**LLAMA3_8B, "vocab_size": 512, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2}
    suite = bench_suite(load_suite("quick")[0], windows=2, seq_len=64, batch=2, samples=2,
                        keep=["rtn-w4-g32", "magnitude-50"])
    lines: list[str] = []
    result = measure(shapes, suite, device="cpu", dtype=torch.float32, rounds=1, name="tiny", out=lines.append)
    assert result["plain_tokens_s"] > 0
    assert len(result["passes"]) == 3 and all(t > 0 and r > 0 for t, r in result["passes"].values())
    assert [(c[0], c[1]) for c in result["checkups"]] == [("rtn-w4-g32", "ok"), ("magnitude-50", "ok")]
    assert all(c[3] > 0 for c in result["checkups"]) and result["pass_s"] > 0
    assert any("goal <= 1.1" in line for line in lines) and any(line.startswith("suite quick") for line in lines)
