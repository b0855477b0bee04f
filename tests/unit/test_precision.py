"""`--dtype auto`: bf16 only where the hardware has it and the first window agrees with float32."""

from __future__ import annotations

import torch

from doctor.precision import BF16_BOUND, bf16_is_fast, choose_dtype, cpu_flags


def test_cpu_without_bf16_flags_stays_float32(tiny_llama):
    fast, reason = bf16_is_fast("cpu", {"avx2", "fma"})
    assert not fast and "neither AMX-BF16 nor AVX512-BF16" in reason
    record = choose_dtype(tiny_llama, torch.randint(3, 128, (1, 64)), "cpu", flags={"avx2"})
    assert record["chosen"] == "float32" and "fp32_ppl" not in record
    assert next(tiny_llama.model.parameters()).dtype == torch.float32


def test_bf16_kept_within_the_bound_and_recorded():
    from doctor.patient import load_patient

    demo_patient_copy = load_patient(None)  # its own copy: the session's demo patient stays float32
    window = torch.randint(3, 512, (1, 128), generator=torch.Generator().manual_seed(0))
    record = choose_dtype(demo_patient_copy, window, "cpu", flags={"avx512_bf16"})
    assert record["bound"] == BF16_BOUND and record["window_tokens"] == 128
    assert abs(record["relative_change"]) == abs(record["bf16_ppl"] / record["fp32_ppl"] - 1)
    chosen = torch.bfloat16 if abs(record["relative_change"]) <= BF16_BOUND else torch.float32
    assert next(demo_patient_copy.model.parameters()).dtype == chosen
    assert demo_patient_copy.facts.dtype == str(chosen).removeprefix("torch.")


def test_bf16_refused_when_it_moves_perplexity(tiny_llama, monkeypatch):
    import doctor.precision as precision

    monkeypatch.setattr(precision, "BF16_BOUND", 0.0)  # any rounding difference exceeds a zero bound
    record = choose_dtype(tiny_llama, torch.randint(3, 128, (1, 64)), "cpu", flags={"amx_bf16"})
    assert record["chosen"] == "float32" and "moved the first-window perplexity" in record["reason"]
    assert next(tiny_llama.model.parameters()).dtype == torch.float32


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16\n")
    assert {"avx512_bf16", "amx_bf16"} <= cpu_flags(info)
    assert cpu_flags(tmp_path / "missing") == set()


def test_examine_dtype_auto_records_the_decision_in_results_and_report(tmp_path):
    import json

    from click.testing import CliRunner

    from doctor.cli import main

    suite = tmp_path / "s.yaml"
    suite.write_text("name: t\neval: {corpus: auto, max_windows: 2, seq_len: 128, bootstrap: 50}\ncheckups:\n"
                     "  - id: rtn-w8\n    modification: {kind: quantize, method: rtn, bits: 8}\n")
    out = tmp_path / "r"
    result = CliRunner().invoke(main, ["examine", "--suite", str(suite), "--dtype", "auto", "--out", str(out),
                                       "--no-predictor"])
    assert result.exit_code in (0, 1), result.output
    precision = json.loads((out / "results.json").read_text())["baseline"]["precision"]
    assert precision["requested"] == "auto" and precision["chosen"] in ("float32", "bfloat16")
    assert precision["reason"] in (out / "report.md").read_text()
